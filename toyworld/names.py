"""Invented names built from syllables: novel (no model has seen these facts), pronounceable, tokenizable.

Every word a `NameMaker` returns is new to that maker, across all kinds (first names, last names, city
stems, company stems, formal names, ...), so a last name never doubles as a city and a search for one
cannot match the other by accident. No name is built from a word another name also has (no "Port X",
"X University"): word-level F1 would pay an answer for a shared word, and a policy learns to answer it.
"""

from __future__ import annotations

import random

ONSETS = (
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "j",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "w",
    "z",
    "th",
    "sh",
    "qu",
)
# Plain vowels are repeated so most syllables stay short: a 0.7M-parameter model copies short names better.
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ou")
CODAS = ("", "", "", "n", "r", "l", "s", "m", "nd", "rk", "x")
# Endings that make a stem read like a place; names stay invented.
CITY_ENDINGS = ("", "", "ton", "ford", "mont", "burg", "ville", "haven", "wick")
COUNTRY_ENDINGS = ("ia", "land", "ora", "istan", "any", "ovia")
# Glued onto a short name to make an entity's formal name: one new word, so the two share no word.
FORMAL_CITY_ENDINGS = tuple(ending for ending in CITY_ENDINGS if ending)
COMPANY_ENDINGS = ("corp", "tek", "tron", "dyne", "soft", "lux", "gen")
UNIVERSITY_ENDINGS = ("demy", "versa", "scola", "lyceum")
# Words a name must not be: words the questions and documents use, and the English stop words BM25 drops
# (a person called "Then" could never be found).
RESERVED = frozenset(
    {
        "born",
        "city",
        "port",
        "where",
        "which",
        "what",
        "company",
        "works",
        "work",
        "married",
        "spouse",
        "university",
        "country",
        "headquarters",
        "studied",
        "into",
        "such",
        "that",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "will",
        "with",
    }
)


class NameMaker:
    """Draws unique invented words from an explicit `random.Random` (never the global random state)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def _syllable(self, coda: bool) -> str:
        rng = self.rng
        return rng.choice(ONSETS) + rng.choice(VOWELS) + (rng.choice(CODAS) if coda else "")

    def _unique(self, build) -> str:
        # Bounded: the syllable space is far larger than any world, so a few draws find a new word.
        for _ in range(10_000):
            word = build()
            key = word.lower()
            if len(word) >= 4 and key not in self.used and key not in RESERVED:
                self.used.add(key)
                return word
        raise RuntimeError("NameMaker: ran out of new names; the name space is too small for this world")

    def word(self, min_syllables: int = 2, max_syllables: int = 2, ending: str = "") -> str:
        """A new capitalised word of `min_syllables`..`max_syllables` syllables plus `ending`."""

        def build() -> str:
            n = self.rng.randint(min_syllables, max_syllables)
            parts = [self._syllable(coda=(i == n - 1)) for i in range(n)]
            return ("".join(parts) + ending).capitalize()

        return self._unique(build)

    def first_name(self) -> str:
        return self.word(2, 2)

    def last_name(self) -> str:
        return self.word(2, 2)

    def city_stem(self) -> str:
        return self.word(1, 2, ending=self.rng.choice(CITY_ENDINGS))

    def country(self) -> str:
        return self.word(1, 2, ending=self.rng.choice(COUNTRY_ENDINGS))

    def org_stem(self) -> str:
        return self.word(2, 2)

    def formal(self, short: str, endings: tuple[str, ...]) -> str:
        """A new word: `short` with one of `endings` glued on (the formal name of what `short` names)."""
        for ending in self.rng.sample(endings, len(endings)):
            word = short + ending
            if word.lower() not in self.used and word.lower() not in RESERVED:
                self.used.add(word.lower())
                return word
        raise RuntimeError(f"NameMaker: every formal name of {short!r} is taken")
