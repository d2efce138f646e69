"""The toy world's document corpus: one short document per fact, plus distractors.

One fact per document (not one biography per person) so that which document a query finds decides what
the searcher learns: a query for someone's birthplace should surface the birthplace document, and a weak
query surfaces documents that do not carry the answer. Distractors make weak queries fail the way they
fail on a real engine: documents about namesakes (same first name, another person), hobby documents that
name a person but state no fact, and filler about cities.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from toyworld.names import NameMaker
from toyworld.world import World, stream

RELATIONS = ("birthplace", "employer", "alma_mater", "spouse")

# {p}: the person's full name, {x}: the fact's object, {first}: first name, {n}: a small number.
FACT_SENTENCES = {
    "birthplace": (
        "{p} was born in {x}.",
        "{p} was born in the city of {x}.",
        "The birthplace of {p} is {x}.",
    ),
    "employer": ("{p} works for {x}.", "{p} is employed by {x}.", "{p} has worked at {x} for {n} years."),
    "alma_mater": ("{p} studied at {x}.", "{p} graduated from {x}.", "{p} is a graduate of {x}."),
    "spouse": ("{p} is married to {x}.", "{p} and {x} are married.", "The spouse of {p} is {x}."),
}
# A second sentence that adds texture but no other fact (other facts would leak into the wrong results).
FACT_TAILS = {
    "birthplace": ("{first} spent a happy childhood there.", "{first} moved away as a young adult.", ""),
    "employer": ("{first} joined {n} years ago.", "{first} leads a small team there.", ""),
    "alma_mater": (
        "{first} finished the degree in {n} years.",
        "{first} keeps in touch with old classmates.",
        "",
    ),
    "spouse": ("The couple met {n} years ago.", "They share a love of long walks.", ""),
}
HOBBIES = (
    "painting",
    "chess",
    "sailing",
    "gardening",
    "birdwatching",
    "cycling",
    "pottery",
    "astronomy",
    "baking",
    "climbing",
    "photography",
    "poetry",
    "fishing",
    "running",
    "woodwork",
    "the violin",
)
OCCUPATIONS = (
    "painter",
    "baker",
    "teacher",
    "nurse",
    "pilot",
    "carpenter",
    "chemist",
    "librarian",
    "farmer",
    "journalist",
    "musician",
    "tailor",
)
EVENTS = ("spring market", "harbour festival", "winter fair", "music week", "book fair", "lantern parade")


@dataclass(frozen=True)
class Document:
    """One corpus document. `people` lists every world person it names (for keeping held-out people out
    of training text); `fact` is `(person id, relation)` for a fact document, else None."""

    id: str
    contents: str
    kind: str  # fact | city | country | org | hobby | namesake | filler
    people: tuple[str, ...] = ()
    fact: tuple[str, str] | None = None


def fact_object(world: World, person_id: str, relation: str) -> str | None:
    """The entity id a person's relation points to (None for an unmarried person's spouse)."""
    return getattr(world.entity(person_id), relation)


def fact_sentence(rng: random.Random, relation: str, person_name: str, first: str, obj_name: str) -> str:
    """Render one fact document's text; also used for invented people in the pretraining text."""
    values = {"p": person_name, "x": obj_name, "first": first, "n": str(rng.randint(2, 12))}
    head = rng.choice(FACT_SENTENCES[relation]).format(**values)
    tail = rng.choice(FACT_TAILS[relation]).format(**values)
    return f"{head} {tail}".strip()


def _fact_documents(world: World, rng: random.Random) -> list[tuple[str, str, tuple, tuple | None]]:
    docs = []
    for person in world.people:
        for relation in RELATIONS:
            obj = fact_object(world, person.id, relation)
            if obj is None:
                continue
            text = fact_sentence(rng, relation, person.name, person.first, world.answers(obj)[0])
            named = (person.id, obj) if relation == "spouse" else (person.id,)
            docs.append(("fact", text, named, (person.id, relation)))
    return docs


def _place_and_org_documents(world: World, rng: random.Random) -> list[tuple[str, str, tuple, None]]:
    docs = []
    for city in world.cities:
        country = world.entity(city.country).name
        text = f"{city.name} is a city in {country}."
        if city.aliases:
            text += f" Locals simply call it {city.aliases[0]}."
        docs.append(("city", f"{text} It has about {rng.randint(20, 900)} thousand inhabitants.", (), None))
    for country in world.countries:
        cities = sorted(c.name for c in world.cities if c.country == country.id)
        listed = ", ".join(rng.sample(cities, min(3, len(cities))))
        docs.append(("country", f"{country.name} is a country. Its cities include {listed}.", (), None))
    for org in world.orgs:
        city = world.entity(org.headquarters).name
        if org.kind == "company":
            text = f"{org.name} is a company headquartered in {city}. It is often called {org.aliases[0]}."
        else:
            text = f"{org.name} is a university located in {city}."
            if org.aliases:
                text += f" Students call it {org.aliases[0]}."
        docs.append(("org", text, (), None))
    return docs


def _distractor_documents(world: World, rng: random.Random) -> list[tuple[str, str, tuple, None]]:
    docs = []
    for person in world.people:
        if rng.random() < 0.4:
            a, b = rng.sample(HOBBIES, 2)
            docs.append(("hobby", f"{person.name} enjoys {a} and {b}.", (person.id,), None))
    # Namesakes: someone outside the world who shares a first name with world people, under a new last
    # name, so a first-name query finds them instead of the person asked about.
    names = NameMaker(rng)
    names.used.update(w.lower() for p in world.people for w in (p.first, p.last))
    names.used.update(
        w.lower()
        for e in (*world.cities, *world.countries, *world.orgs)
        for n in (e.name, *e.aliases)
        for w in n.split()
    )
    firsts = sorted({p.first for p in world.people})
    for _ in range(max(1, len(world.people) * 3 // 10)):
        first = rng.choice(firsts)
        text = f"{first} {names.last_name()} is a {rng.choice(OCCUPATIONS)}. {first} enjoys {rng.choice(HOBBIES)}."
        docs.append(("namesake", text, (), None))
    for city in world.cities:
        event = rng.choice(EVENTS)
        docs.append(("filler", f"The {event} in {city.name} drew large crowds this year.", (), None))
    return docs


def visible_documents(world: World, documents: list[Document]) -> list[Document]:
    """The documents training may see: those that name no held-out person."""
    heldout = {p.id for p in world.people_in("val", "test")}
    return [doc for doc in documents if not heldout.intersection(doc.people)]


def build_corpus(world: World) -> list[Document]:
    """All documents of the world, shuffled (so ids carry no hint), with ids `doc-000000`, ..."""
    rng = stream(world.seed, "corpus")
    raw = (
        _fact_documents(world, rng) + _place_and_org_documents(world, rng) + _distractor_documents(world, rng)
    )
    rng.shuffle(raw)
    return [
        Document(f"doc-{i:06d}", text, kind, tuple(people), fact)
        for i, (kind, text, people, fact) in enumerate(raw)
    ]


def write_corpus(documents: list[Document], path: str | Path) -> Path:
    """JSON lines with `id` and `contents` (Search-R1's corpus format, read by `load_corpus`)."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for doc in documents:
            f.write(json.dumps({"id": doc.id, "contents": doc.contents}, ensure_ascii=False) + "\n")
    return path
