"""Questions about the toy world's people, their answers, and the train / val / test splits.

Every question is about one person (its `subject`). Single-hop questions ask one fact; two-hop questions
ask a fact about the entity a first fact names (the `bridge`): "In which country was X born?" is the
country of X's birthplace. Golden answers are the answer entity's name followed by its aliases
("Dremontville", "Dremont").

Splits follow the people's groups (see `world.py`): train questions are about train people only, val
about the "val" half of the held-out people, test about the "test" half, so model selection on val never
touches a test person. The train-entity eval split is a sample of train questions, kept to report
train-entity EM beside held-out EM (docs/design.md §8: memorisation hides failure).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from toyworld.world import Person, World, stream
from zerosearch.data.schema import make_row


@dataclass(frozen=True)
class QuestionType:
    """How to phrase a question and walk the facts to its answer.

    `path` is the chain of attributes from the person: ("birthplace",) or ("birthplace", "country").
    `words` are the relation words a good search query adds to the name of the entity it is about, one
    tuple per hop.
    """

    name: str
    phrasings: tuple[str, ...]
    path: tuple[str, ...]
    words: tuple[tuple[str, ...], ...]

    @property
    def hops(self) -> int:
        return len(self.path)


QUESTION_TYPES = (
    QuestionType(
        "birthplace",
        ("Where was {p} born?", "In which city was {p} born?", "What is the birthplace of {p}?"),
        ("birthplace",),
        (("born", "birthplace"),),
    ),
    QuestionType(
        "employer",
        ("Which company does {p} work for?", "Who is the employer of {p}?", "Where does {p} work?"),
        ("employer",),
        (("works for", "employer", "company"),),
    ),
    QuestionType(
        "alma_mater",
        (
            "Which university did {p} attend?",
            "Where did {p} study?",
            "From which university did {p} graduate?",
        ),
        ("alma_mater",),
        (("studied at", "graduated from", "university"),),
    ),
    QuestionType(
        "spouse",
        ("Who is {p} married to?", "Who is the spouse of {p}?"),
        ("spouse",),
        (("married to", "spouse"),),
    ),
    QuestionType(
        "birth_country",
        ("In which country was {p} born?", "Which country was {p} born in?"),
        ("birthplace", "country"),
        (("born", "birthplace"), ("country",)),
    ),
    QuestionType(
        "employer_city",
        (
            "In which city is the company that {p} works for headquartered?",
            "Where is the headquarters of the company {p} works for?",
        ),
        ("employer", "headquarters"),
        (("works for", "employer"), ("headquartered", "headquarters")),
    ),
    QuestionType(
        "alma_mater_city",
        (
            "In which city is the university that {p} attended located?",
            "Where is the university {p} graduated from located?",
        ),
        ("alma_mater", "headquarters"),
        (("studied at", "university"), ("located", "city")),
    ),
    QuestionType(
        "spouse_birthplace",
        ("Where was the spouse of {p} born?", "In which city was the person {p} is married to born?"),
        ("spouse", "birthplace"),
        (("married to", "spouse"), ("born", "birthplace")),
    ),
)
TYPES_BY_NAME = {t.name: t for t in QUESTION_TYPES}
DATA_SOURCES = {1: "toyworld_single_hop", 2: "toyworld_two_hop"}


@dataclass(frozen=True)
class Question:
    text: str
    answers: tuple[str, ...]
    qtype: str
    subject: str  # person id
    answer_entity: str
    bridge: str | None  # two-hop: the entity the first fact names

    @property
    def hops(self) -> int:
        return TYPES_BY_NAME[self.qtype].hops


def resolve(world: World, person: Person, path: tuple[str, ...]) -> list[str] | None:
    """The entity ids along `path` from `person`, or None where a fact is missing (no spouse)."""
    ids = []
    entity = person
    for attribute in path:
        target = getattr(entity, attribute)
        if target is None:
            return None
        ids.append(target)
        entity = world.entity(target)
    return ids


def questions_for_person(world: World, person: Person, rng: random.Random) -> list[Question]:
    """Every question type that applies to `person`, each in a phrasing drawn from `rng`."""
    out = []
    for qtype in QUESTION_TYPES:
        chain = resolve(world, person, qtype.path)
        if chain is None:
            continue
        text = rng.choice(qtype.phrasings).format(p=person.name)
        out.append(
            Question(
                text,
                tuple(world.answers(chain[-1])),
                qtype.name,
                person.id,
                chain[-1],
                chain[0] if qtype.hops == 2 else None,
            )
        )
    return out


@dataclass
class QuestionSplits:
    """The question pools. `train` is the whole pool of questions about train people (thousands: a run
    sees a fraction); the others are samples of at most the requested size."""

    train: list[Question]
    val: list[Question]
    test: list[Question]
    train_entity_eval: list[Question]


def build_questions(
    world: World, val_size: int, test_size: int, train_entity_eval_size: int
) -> QuestionSplits:
    """All questions, split by the subject's group and shuffled; the same world gives the same splits."""
    rng = stream(world.seed, "questions")
    pools: dict[str, list[Question]] = {"train": [], "val": [], "test": []}
    for person in world.people:
        pools[person.group].extend(questions_for_person(world, person, rng))
    for pool in pools.values():
        rng.shuffle(pool)
    return QuestionSplits(
        train=pools["train"],
        val=pools["val"][:val_size],
        test=pools["test"][:test_size],
        train_entity_eval=rng.sample(pools["train"], min(train_entity_eval_size, len(pools["train"]))),
    )


def dataset_rows(questions: list[Question], split: str, template: str = "policy_default") -> list[dict]:
    """Questions as dataset rows (`zerosearch.data.schema`), the policy prompt filled in from `template`."""
    from zerosearch.templates import policy_messages

    return [
        make_row(
            question=q.text,
            golden_answers=list(q.answers),
            prompt=policy_messages(q.text, template),
            data_source=DATA_SOURCES[q.hops],
            split=split,
            index=i,
            extra_info={"qtype": q.qtype, "subject": q.subject},
        )
        for i, q in enumerate(questions)
    ]
