"""Pretraining text: world documents without held-out people, copy lines, reading lines."""

from __future__ import annotations

import re

import pytest

from toyworld.pretrain import build_pretrain_texts


@pytest.fixture(scope="module")
def texts(small_world, small_corpus):
    return build_pretrain_texts(small_world, small_corpus, num_copy=200, num_reading=300)


def test_heldout_people_never_appear(small_world, texts):
    names = [p.name for p in small_world.people_in("val", "test")]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    assert not any(pattern.search(t) for t in texts)


def test_train_people_facts_are_included(small_world, small_corpus, texts):
    facts = [d.contents for d in small_corpus if d.fact and small_world.entity(d.fact[0]).group == "train"]
    assert set(facts) <= set(texts)


def test_copy_lines_repeat_their_text(texts):
    copies = [t for t in texts if t.startswith("text: ")]
    assert len(copies) == 200
    for line in copies:
        source, copy = line.split("\ncopy: ")
        assert source[len("text: ") :] == copy


def test_reading_lines_answer_from_their_context(texts):
    reading = [t for t in texts if t.startswith("Doc 1: ")]
    assert len(reading) == 300
    for line in reading:
        context, rest = line.split("\nQuestion: ")
        answer = rest.split("\nAnswer: ")[1]
        assert answer and answer in context


def _asked_person(line: str) -> str:
    question = line.split("\nQuestion: ")[1].split("\nAnswer: ")[0]
    return re.search(r"\b[A-Z][a-z]+ [A-Z][a-z]+\b", question).group(0)  # the one two-word name in it


def test_reading_lines_are_about_strangers(small_world, texts):
    """The asked person is made of train people's first and last names but is nobody in the world, so the
    answer can only be read from the context."""
    train = small_world.people_in("train")
    firsts, lasts = {p.first for p in train}, {p.last for p in train}
    world_names = {p.name for p in small_world.people}
    reading = [t for t in texts if t.startswith("Doc 1: ")]
    for line in reading:
        first, last = _asked_person(line).split()
        assert first in firsts and last in lasts and f"{first} {last}" not in world_names


def test_copy_lines_list_strangers_and_places(small_world, texts):
    train = small_world.people_in("train")
    firsts, lasts = {p.first for p in train}, {p.last for p in train}
    world_names = {p.name for p in small_world.people}
    places = {e.name for e in (*small_world.cities, *small_world.orgs)}
    items = [item for t in texts if t.startswith("text: ") for item in t.split("\ncopy: ")[1].split(", ")]
    strangers = [item for item in items if item not in places]
    assert 0.6 < len(strangers) / len(items) < 0.9
    for name in strangers:
        first, last = name.split()
        assert first in firsts and last in lasts and name not in world_names
    assert len(set(strangers)) > 0.9 * len(strangers)  # drawn afresh: hardly any name repeats


def test_hard_reading_lines_need_the_name_and_the_relation(small_world, small_corpus):
    """A hard line's distractors are the asked person's other facts and a namesake's fact: the answer's
    document is the only one with both the asked name and the asked relation."""
    texts = build_pretrain_texts(small_world, small_corpus, num_copy=0, num_reading=60, hard_share=1.0)
    reading = [t for t in texts if t.startswith("Doc 1: ")]
    assert len(reading) == 60
    for line in reading:
        person = _asked_person(line)
        first = person.split()[0]
        docs = line.split("\nQuestion: ")[0].split("\n")
        assert len([d for d in docs if person in d]) >= 2
        assert any(f"{first} " in d and person not in d for d in docs)


def test_easy_reading_lines_name_the_asked_person_once(small_world, small_corpus):
    texts = build_pretrain_texts(small_world, small_corpus, num_copy=0, num_reading=60, hard_share=0.0)
    for line in [t for t in texts if t.startswith("Doc 1: ")]:
        docs = line.split("\nQuestion: ")[0].split("\n")
        assert len([d for d in docs if _asked_person(line) in d]) == 1
