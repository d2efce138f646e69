"""The toy world's entities and facts, generated from a seed.

People have a birthplace (city), an employer (company), an alma mater (university) and, for about half of
them, a spouse (another person). Organisations have a headquarters (city); cities lie in a country. Those
six relations give single-hop questions (one fact) and two-hop questions (a fact about the entity a first
fact names).

People are split into groups once, here: "train" people may appear in any training data; "val" and
"test" people (the held-out people) appear only in evaluation questions. Spouses are paired within a
group, so no training document ever names a held-out person.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toyworld.names import (
    COMPANY_ENDINGS,
    FORMAL_CITY_ENDINGS,
    UNIVERSITY_ENDINGS,
    NameMaker,
)

GROUPS = ("train", "val", "test")


def stream(seed: int, name: str) -> random.Random:
    """An independent, explicitly seeded random stream per build stage.

    Each stage gets its own stream so that changing one stage (say, more distractors) leaves the others'
    draws unchanged. String seeds are hashed with SHA-512 by `random`, not by the salted `hash()`.
    """
    return random.Random(f"zerosearch-toyworld:{seed}:{name}")


@dataclass(frozen=True)
class WorldConfig:
    """Sizes of a world. The people pool is large on purpose: a run must see few of them (docs/design.md §8)."""

    num_people: int = 5000
    num_countries: int = 12
    num_cities: int = 120
    num_companies: int = 150
    num_universities: int = 40
    heldout_fraction: float = 0.15
    married_fraction: float = 0.5

    def check(self) -> None:
        for name in ("num_people", "num_countries", "num_cities", "num_companies", "num_universities"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_people < 10:
            raise ValueError(
                f"num_people must be >= 10 (train, val and test all need people), got {self.num_people}"
            )
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if not 0.0 <= self.married_fraction <= 1.0:
            raise ValueError(f"married_fraction must be in [0, 1], got {self.married_fraction}")


@dataclass
class Country:
    id: str
    name: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class City:
    id: str
    name: str
    country: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class Org:
    id: str
    kind: str  # "company" or "university"
    name: str
    headquarters: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class Person:
    id: str
    first: str
    last: str
    birthplace: str
    employer: str
    alma_mater: str
    group: str
    spouse: str | None = None

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass
class World:
    """All entities; `entity(id)` looks any of them up."""

    seed: int
    config: WorldConfig
    countries: list[Country]
    cities: list[City]
    orgs: list[Org]
    people: list[Person]

    def __post_init__(self) -> None:
        self._by_id = {
            e.id: e for group in (self.countries, self.cities, self.orgs, self.people) for e in group
        }

    def entity(self, entity_id: str) -> Country | City | Org | Person:
        return self._by_id[entity_id]

    def answers(self, entity_id: str) -> list[str]:
        """The golden answers naming an entity: its name, then its aliases."""
        entity = self.entity(entity_id)
        if isinstance(entity, Person):
            return [entity.name]
        return [entity.name, *entity.aliases]

    def people_in(self, *groups: str) -> list[Person]:
        return [p for p in self.people if p.group in groups]

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "config": asdict(self.config),
            **{
                key: [asdict(e) for e in getattr(self, key)]
                for key in ("countries", "cities", "orgs", "people")
            },
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> World:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            seed=data["seed"],
            config=WorldConfig(**data["config"]),
            countries=[Country(**c) for c in data["countries"]],
            cities=[City(**c) for c in data["cities"]],
            orgs=[Org(**o) for o in data["orgs"]],
            people=[Person(**p) for p in data["people"]],
        )


def _places(names: NameMaker, rng: random.Random, config: WorldConfig) -> tuple[list[Country], list[City]]:
    countries = [Country(f"country:{i:03d}", names.country()) for i in range(config.num_countries)]
    # Every country gets at least one city; the rest are spread at random.
    homes = [countries[i % len(countries)].id for i in range(config.num_cities)]
    rng.shuffle(homes)
    cities = []
    for i, home in enumerate(homes):
        # Some cities have a formal name and a short one people use; both are correct answers.
        if rng.random() < 0.2:
            short = names.word(1, 2)
            formal = names.formal(short, FORMAL_CITY_ENDINGS)
            cities.append(City(f"city:{i:04d}", formal, home, aliases=[short]))
        else:
            cities.append(City(f"city:{i:04d}", names.city_stem(), home))
    return countries, cities


def _orgs(names: NameMaker, rng: random.Random, config: WorldConfig, cities: list[City]) -> list[Org]:
    orgs = []
    for i in range(config.num_companies):
        short = names.org_stem()
        formal = names.formal(short, COMPANY_ENDINGS)
        orgs.append(Org(f"org:{i:04d}", "company", formal, rng.choice(cities).id, aliases=[short]))
    for i in range(config.num_companies, config.num_companies + config.num_universities):
        short = names.org_stem()
        formal = names.formal(short, UNIVERSITY_ENDINGS)
        aliases = [short] if rng.random() < 0.4 else []
        orgs.append(Org(f"org:{i:04d}", "university", formal, rng.choice(cities).id, aliases=aliases))
    return orgs


def _people(
    names: NameMaker, rng: random.Random, config: WorldConfig, cities: list[City], orgs: list[Org]
) -> list[Person]:
    n = config.num_people
    # Name pools smaller than the population: people share first and last names, so a partial name is an
    # ambiguous query (what makes query quality matter), while full names stay unique.
    firsts = [names.first_name() for _ in range(max(8, n // 6))]
    lasts = [names.last_name() for _ in range(max(8, n // 3))]
    full: set[tuple[str, str]] = set()
    while len(full) < n:
        full.add((rng.choice(firsts), rng.choice(lasts)))
    pairs = sorted(full)
    rng.shuffle(pairs)
    companies = [o for o in orgs if o.kind == "company"]
    universities = [o for o in orgs if o.kind == "university"]
    heldout = max(2, round(n * config.heldout_fraction))
    groups = ["val"] * (heldout // 2) + ["test"] * (heldout - heldout // 2) + ["train"] * (n - heldout)
    rng.shuffle(groups)
    people = [
        Person(
            f"person:{i:05d}",
            first,
            last,
            rng.choice(cities).id,
            rng.choice(companies).id,
            rng.choice(universities).id,
            group,
        )
        for i, ((first, last), group) in enumerate(zip(pairs, groups, strict=True))
    ]
    for group in GROUPS:
        members = [p for p in people if p.group == group]
        rng.shuffle(members)
        married = members[: int(len(members) * config.married_fraction) // 2 * 2]
        for a, b in zip(married[::2], married[1::2], strict=True):
            a.spouse, b.spouse = b.id, a.id
    return people


def generate_world(seed: int, config: WorldConfig | None = None) -> World:
    """Generate a world; the same seed and config always give the same world."""
    config = config or WorldConfig()
    config.check()
    rng = stream(seed, "world")
    names = NameMaker(rng)
    countries, cities = _places(names, rng, config)
    orgs = _orgs(names, rng, config, cities)
    people = _people(names, rng, config, cities, orgs)
    return World(seed, config, countries, cities, orgs, people)
