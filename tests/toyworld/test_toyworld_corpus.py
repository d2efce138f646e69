"""The corpus: one document per fact, distractors, held-out filtering, and what BM25 finds in it."""

from __future__ import annotations

import json
import random

from toyworld.corpus import RELATIONS, build_corpus, visible_documents, write_corpus
from toyworld.engine import ToyWorld
from zerosearch.retrieval.index import load_corpus


def test_one_document_per_fact_naming_subject_and_object(small_world, small_corpus):
    facts = {doc.fact: doc for doc in small_corpus if doc.fact}
    expected = {(p.id, r) for p in small_world.people for r in RELATIONS if getattr(p, r) is not None}
    assert set(facts) == expected
    assert len(facts) == sum(1 for doc in small_corpus if doc.kind == "fact")
    for (person_id, relation), doc in facts.items():
        person = small_world.entity(person_id)
        assert person.name in doc.contents
        assert small_world.answers(getattr(person, relation))[0] in doc.contents


def test_fact_documents_state_no_other_fact(small_world, small_corpus):
    """A birthplace document must not also name the employer: one fact per document."""
    for doc in small_corpus:
        if doc.fact is None:
            continue
        person = small_world.entity(doc.fact[0])
        for relation in RELATIONS:
            other = getattr(person, relation)
            if relation != doc.fact[1] and other is not None:
                assert small_world.answers(other)[0] not in doc.contents


def test_corpus_has_distractors(small_corpus):
    kinds = {doc.kind for doc in small_corpus}
    assert {"hobby", "namesake", "filler", "city", "country", "org"} <= kinds


def test_same_world_same_corpus(small_world, small_corpus):
    assert build_corpus(small_world) == small_corpus


def test_visible_documents_name_no_heldout_person(small_world, small_corpus):
    heldout = small_world.people_in("val", "test")
    text = "\n".join(doc.contents for doc in visible_documents(small_world, small_corpus))
    assert heldout and not any(p.name in text for p in heldout)
    train_person = small_world.people_in("train")[0]
    assert train_person.name in text


def test_written_corpus_loads_in_search_r1_format(small_corpus, tmp_path):
    path = write_corpus(small_corpus, tmp_path / "corpus.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"id": small_corpus[0].id, "contents": small_corpus[0].contents}
    assert load_corpus(path) == [doc.contents for doc in small_corpus]


def _recall(world, corpus, query_of, people) -> float:
    """Share of (person, relation) facts whose document BM25 puts in the top 5 for the query.

    For a spouse, the spouse's own marriage document states the same fact and counts too.
    """
    engine = ToyWorld(world, [doc.contents for doc in corpus])
    facts = {doc.fact: doc.contents for doc in corpus if doc.fact}
    sample = [(p, r) for p in people for r in RELATIONS if getattr(p, r)]
    results = engine.search_many([query_of(p, r) for p, r in sample], topk=5)
    found = 0
    for (person, relation), docs in zip(sample, results, strict=True):
        targets = {facts[(person.id, relation)]}
        if relation == "spouse":
            targets.add(facts[(person.spouse, "spouse")])
        found += bool(targets & set(docs))
    return found / len(sample)


RELATION_WORDS = {
    "birthplace": "born",
    "employer": "works for",
    "alma_mater": "studied at",
    "spouse": "married to",
}


def test_bm25_finds_the_fact_for_full_name_queries(small_world, small_corpus):
    """docs/design.md §8 measured 100% for full name + relation (99.7% at the default 5000 people)."""
    people = random.Random(0).sample(small_world.people, 150)
    assert _recall(small_world, small_corpus, lambda p, r: f"{p.name} {RELATION_WORDS[r]}", people) >= 0.95


def test_bm25_finds_the_fact_less_often_for_weak_queries(small_world, small_corpus):
    """Query quality matters: a last name alone is ambiguous, a bare relation word nearly always misses."""
    people = random.Random(0).sample(small_world.people, 150)
    last_name = _recall(small_world, small_corpus, lambda p, r: f"{p.last} {RELATION_WORDS[r]}", people)
    relation_only = _recall(small_world, small_corpus, lambda p, r: RELATION_WORDS[r], people)
    assert last_name <= 0.9
    assert relation_only <= 0.05


def test_engine_search_returns_ranked_texts_and_loads_from_a_folder(small_world, small_corpus, tmp_path):
    small_world.save(tmp_path / "world.json")
    write_corpus(small_corpus, tmp_path / "corpus.jsonl")
    engine = ToyWorld.load(tmp_path)
    person = small_world.people[0]
    docs = engine.search(f"{person.name} born", topk=3)
    assert len(docs) == 3
    assert f"{person.name} was born" in docs[0] or f"birthplace of {person.name}" in docs[0]
