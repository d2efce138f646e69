"""Pretraining text for the toy world's tiny base model.

Both the simulator and the policy start from this base model, as both start from a pretrained LLM in the
paper. A tiny model trained from scratch needs hundreds of steps before it copies names from its context,
and a policy that cannot copy never learns to answer from search results (docs/design.md §8), so besides the
world's documents the text is heavy on copying:

- `text: ... copy: ...` lines that repeat a list of names;
- reading-comprehension lines (documents, a question, the answer copied from one document) about
  invented people who exist nowhere else, so the answer can only come from the context.

The people in both are *strangers*: a train person's first name with another train person's last name,
drawn afresh for every line and never the full name of anyone in the world. A name seen once cannot be
memorised, so the model has to copy it; and held-out people are built the same way (words training sees,
in a combination it never sees), so copying strangers is the skill they need. Held-out people never
appear: only documents that name no held-out person are used, and a stranger is nobody's full name.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from llm_agent.observation import format_documents
from toyworld.corpus import RELATIONS, Document, fact_sentence, visible_documents
from toyworld.questions import TYPES_BY_NAME
from toyworld.world import World, stream

# Share of copy-line items that are strangers; the rest are city and organisation names, which answers copy.
STRANGER_SHARE = 0.75


class Strangers:
    """Full names made of train people's first and last names that belong to nobody in the world."""

    def __init__(self, world: World, rng: random.Random):
        train = world.people_in("train")
        self.firsts = sorted({p.first for p in train})
        self.lasts = sorted({p.last for p in train})
        self.taken = {p.name for p in world.people}
        self.rng = rng

    def name(self, first: str | None = None) -> str:
        """A stranger; with `first`, a stranger of that first name (a namesake)."""
        while True:
            name = f"{first or self.rng.choice(self.firsts)} {self.rng.choice(self.lasts)}"
            if name not in self.taken:
                return name


def _copy_line(rng: random.Random, strangers: Strangers, places: list[str]) -> str:
    """A list of 2 to 6 names, mostly strangers, some cities and organisations, and its copy."""
    items = ", ".join(
        strangers.name() if rng.random() < STRANGER_SHARE else rng.choice(places)
        for _ in range(rng.randint(2, 6))
    )
    return f"text: {items}\ncopy: {items}"


def reading_prefix(documents: list[str], question: str) -> str:
    """A reading line up to its answer: the layout in which the base model learns to read (and in which the
    warm-start demonstrations take its answers, demos.py)."""
    return f"{format_documents(documents)}Question: {question}\nAnswer:"


def _random_object(world: World, rng: random.Random, strangers: Strangers, relation: str):
    """A fact object for an invented person: (name, entity or None for a spouse)."""
    if relation == "spouse":
        return strangers.name(), None
    if relation == "birthplace":
        pool = world.cities
    else:
        kind = "company" if relation == "employer" else "university"
        pool = [o for o in world.orgs if o.kind == kind]
    obj = rng.choice(pool)
    return obj.name, obj


def _reading_line(
    world: World, rng: random.Random, strangers: Strangers, visible: list[Document], hard: bool
) -> str:
    """Documents about a stranger among distractors, a question, and the answer from the context.

    A *hard* line's distractors are the stranger's other facts and a namesake's fact of the asked
    relation, as the documents a full-name query finds: answering it takes matching both the name and
    the relation, not the name alone (dev/LOG.md: easy lines alone teach name matching only).
    """
    person = strangers.name()
    first = person.split()[0]
    relation = rng.choice(RELATIONS)
    obj_name, obj = _random_object(world, rng, strangers, relation)
    context = [fact_sentence(rng, relation, person, first, obj_name)]
    qtype = TYPES_BY_NAME[relation]
    answer = obj_name
    # Sometimes a two-hop question whose second fact is also in the context.
    if relation == "birthplace" and rng.random() < 0.3:
        qtype = TYPES_BY_NAME["birth_country"]
        answer = world.entity(obj.country).name
        context.append(f"{obj.name} is a city in {answer}.")
    if hard:
        others = [r for r in RELATIONS if r != relation]
        for other in rng.sample(others, rng.randint(1, len(others))):
            context.append(
                fact_sentence(rng, other, person, first, _random_object(world, rng, strangers, other)[0])
            )
        namesake = person
        while namesake == person:
            namesake = strangers.name(first)
        namesake_obj = _random_object(world, rng, strangers, relation)[0]
        context.append(fact_sentence(rng, relation, namesake, first, namesake_obj))
        context += [doc.contents for doc in rng.sample(visible, rng.randint(0, 1))]
    else:
        context += [doc.contents for doc in rng.sample(visible, rng.randint(1, 3))]
    rng.shuffle(context)
    question = rng.choice(qtype.phrasings).format(p=person)
    return f"{reading_prefix(context, question)} {answer}"


def build_pretrain_texts(
    world: World,
    documents: list[Document],
    num_copy: int = 4000,
    num_reading: int = 6000,
    hard_share: float = 0.5,
) -> list[str]:
    """The pretraining texts, shuffled: visible world documents, copy lines and reading lines, of which
    `hard_share` are hard (see `_reading_line`)."""
    rng = stream(world.seed, "pretrain")
    strangers = Strangers(world, rng)
    visible = visible_documents(world, documents)
    places = [c.name for c in world.cities] + [o.name for o in world.orgs]
    texts = [doc.contents for doc in visible]
    texts += [_copy_line(rng, strangers, places) for _ in range(num_copy)]
    texts += [
        _reading_line(world, rng, strangers, visible, hard=rng.random() < hard_share)
        for _ in range(num_reading)
    ]
    rng.shuffle(texts)
    return texts


def write_pretrain(texts: list[str], path: str | Path) -> Path:
    """JSON lines `{"text": ...}`."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return path
