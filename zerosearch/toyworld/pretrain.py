"""Pretraining text for the toy world's tiny base model.

Both the simulator and the policy start from this base model, as both start from a pretrained LLM in the
paper. A tiny model trained from scratch needs hundreds of steps before it copies names from its context,
and a policy that cannot copy never learns to answer from search results (DESIGN 8), so besides the
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
from zerosearch.toyworld.corpus import RELATIONS, Document, fact_sentence, visible_documents
from zerosearch.toyworld.questions import TYPES_BY_NAME
from zerosearch.toyworld.world import World, stream

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

    def name(self) -> str:
        while True:
            name = f"{self.rng.choice(self.firsts)} {self.rng.choice(self.lasts)}"
            if name not in self.taken:
                return name


def _copy_line(rng: random.Random, strangers: Strangers, places: list[str]) -> str:
    """A list of 2 to 6 names, mostly strangers, some cities and organisations, and its copy."""
    items = ", ".join(
        strangers.name() if rng.random() < STRANGER_SHARE else rng.choice(places)
        for _ in range(rng.randint(2, 6))
    )
    return f"text: {items}\ncopy: {items}"


def _reading_line(world: World, rng: random.Random, strangers: Strangers, visible: list[Document]) -> str:
    """Documents about a stranger among distractors, a question, and the answer from the context."""
    person = strangers.name()
    first = person.split()[0]
    relation = rng.choice(RELATIONS)
    if relation == "spouse":
        obj_name = strangers.name()
        obj = None
    else:
        pool = (
            world.cities
            if relation == "birthplace"
            else [o for o in world.orgs if o.kind == ("company" if relation == "employer" else "university")]
        )
        obj = rng.choice(pool)
        obj_name = obj.name
    context = [fact_sentence(rng, relation, person, first, obj_name)]
    qtype = TYPES_BY_NAME[relation]
    answer = obj_name
    # Sometimes a two-hop question whose second fact is also in the context.
    if relation == "birthplace" and rng.random() < 0.3:
        qtype = TYPES_BY_NAME["birth_country"]
        answer = world.entity(obj.country).name
        context.append(f"{obj.name} is a city in {answer}.")
    context += [doc.contents for doc in rng.sample(visible, rng.randint(1, 3))]
    rng.shuffle(context)
    question = rng.choice(qtype.phrasings).format(p=person)
    return f"{format_documents(context)}Question: {question}\nAnswer: {answer}"


def build_pretrain_texts(
    world: World, documents: list[Document], num_copy: int = 4000, num_reading: int = 6000
) -> list[str]:
    """The pretraining texts, shuffled: visible world documents, copy lines and reading lines."""
    rng = stream(world.seed, "pretrain")
    strangers = Strangers(world, rng)
    visible = visible_documents(world, documents)
    places = [c.name for c in world.cities] + [o.name for o in world.orgs]
    texts = [doc.contents for doc in visible]
    texts += [_copy_line(rng, strangers, places) for _ in range(num_copy)]
    texts += [_reading_line(world, rng, strangers, visible) for _ in range(num_reading)]
    rng.shuffle(texts)
    return texts


def write_pretrain(texts: list[str], path: str | Path) -> Path:
    """JSON lines `{"text": ...}`."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return path
