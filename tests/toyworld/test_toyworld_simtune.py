"""Simulation-tuning pairs: real-engine documents, honest labels, balance, no held-out people."""

from __future__ import annotations

import random
import re

import pytest

from toyworld.simtune import build_simtune_pairs, misspell
from zerosearch.reward import normalize_answer
from zerosearch.templates import simulation_messages


@pytest.fixture(scope="module")
def pairs(small_world, small_corpus, small_splits):
    return build_simtune_pairs(small_world, small_corpus, small_splits.train, num_questions=400)


def _carries(docs, phrase) -> bool:
    return f" {normalize_answer(phrase)} " in f" {normalize_answer(' '.join(docs))} "


def test_classes_are_balanced_after_downsampling(pairs):
    rows, stats = pairs
    useful = sum(r["label"] == "useful" for r in rows)
    assert useful == len(rows) - useful == stats.kept_per_label == min(stats.useful, stats.noisy)
    assert stats.kept_per_label >= 50


def test_useful_documents_carry_an_answer_and_noisy_ones_do_not(pairs):
    rows, _ = pairs
    for row in rows:
        carries = any(_carries(row["documents"], a) for a in row["golden_answers"])
        assert carries == (row["label"] == "useful")


def test_noisy_documents_do_not_name_the_asked_person(small_world, small_splits, pairs):
    """Noisy targets holding the asked person's other facts teach the simulator to copy answers (docs/design.md §8)."""
    subject = {q.text: small_world.entity(q.subject).name for q in small_splits.train}
    noisy = [r for r in pairs[0] if r["label"] == "noisy"]
    assert noisy
    for row in noisy:
        assert not _carries(row["documents"], subject[row["question"]])


def test_noisy_pairs_come_from_weak_queries(pairs):
    rows, stats = pairs
    assert {r["query_kind"] for r in rows if r["label"] == "noisy"}.isdisjoint(
        {"full", "question", "bridge_full"}
    )
    assert stats.dropped_noisy_naming_subject > 0


def test_documents_are_the_real_engine_results(small_world, small_corpus, pairs):
    from toyworld.corpus import visible_documents
    from toyworld.engine import ToyWorld

    engine = ToyWorld(small_world, [d.contents for d in visible_documents(small_world, small_corpus)])
    for row in pairs[0][:20]:
        assert row["documents"] == engine.search(row["query"], topk=5)


def test_no_heldout_person_appears_anywhere(small_world, pairs):
    names = [p.name for p in small_world.people_in("val", "test")]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    for row in pairs[0]:
        text = " ".join([row["question"], row["query"], row["response"], *row["documents"]])
        assert pattern.search(text) is None


def test_sft_view_is_the_simulation_prompt_and_numbered_documents(pairs):
    row = next(r for r in pairs[0] if r["label"] == "noisy")
    assert row["prompt"] == simulation_messages(
        row["query"], row["question"], row["golden_answers"], useful=False, mode="sft", template="project"
    )
    assert row["prompt"][-1]["content"].rstrip().endswith("Noisy Output:")
    # The same "Doc i: ..." lines the agent loop writes into observations.
    assert row["response"] == "".join(f"Doc {i}: {d}\n" for i, d in enumerate(row["documents"], 1))
    assert len(row["documents"]) == 5


def test_one_result_list_serves_few_pairs(pairs):
    rows, stats = pairs
    counts = {}
    for row in rows:
        counts[row["response"]] = counts.get(row["response"], 0) + 1
    assert max(counts.values()) <= 3
    assert stats.dropped_repeated_response > 0


def test_heldout_questions_are_refused(small_world, small_corpus, small_splits):
    with pytest.raises(ValueError, match="train people"):
        build_simtune_pairs(small_world, small_corpus, small_splits.test, num_questions=5)


def test_same_inputs_same_pairs(small_world, small_corpus, small_splits, pairs):
    again = build_simtune_pairs(small_world, small_corpus, small_splits.train, num_questions=400)
    assert again[0] == pairs[0]


@pytest.mark.parametrize("name", ["Lorin Vasquel", "Dremontville", "Tavel of the Vale"])
def test_misspell_changes_one_long_word(name):
    rng = random.Random(0)
    for _ in range(50):
        typo = misspell(rng, name)
        changed = [(a, b) for a, b in zip(name.split(), typo.split(), strict=True) if a != b]
        assert len(changed) == 1 and len(changed[0][0]) >= 4


def test_miss_share_adds_answerless_useful_targets(small_world, small_corpus, small_splits):
    """With misses, a useful request for a weak query may get what the engine found: no answer."""
    rows, stats = build_simtune_pairs(
        small_world, small_corpus, small_splits.train, num_questions=400, miss_share=0.5
    )
    useful = [r for r in rows if r["label"] == "useful"]
    misses = [r for r in useful if not any(_carries(r["documents"], a) for a in r["golden_answers"])]
    assert stats.useful_misses > 0 and misses
    assert len(misses) < len(useful)
    assert all(
        not any(_carries(r["documents"], a) for a in r["golden_answers"])
        for r in rows
        if r["label"] == "noisy"
    )


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_miss_share_outside_range_is_refused(small_world, small_corpus, small_splits, share):
    with pytest.raises(ValueError, match="miss_share"):
        build_simtune_pairs(small_world, small_corpus, small_splits.train, num_questions=10, miss_share=share)


def test_engine_labelling_makes_what_the_query_found_its_useful_target(
    small_world, small_corpus, small_splits
):
    """Under the engine's labelling a weak query's useful target is what the engine found for it (often no
    answer), and those answer-less results are noisy targets as well; noisy targets still never hold it."""
    rows, _ = build_simtune_pairs(
        small_world, small_corpus, small_splits.train, num_questions=400, labelling="engine"
    )

    def carries(r):
        return any(_carries(r["documents"], a) for a in r["golden_answers"])

    useful = [r for r in rows if r["label"] == "useful"]
    assert sum(not carries(r) for r in useful) > 0.2 * len(useful)
    assert not any(carries(r) for r in rows if r["label"] == "noisy")
    both = {(r["query"], tuple(r["documents"])) for r in useful} & {
        (r["query"], tuple(r["documents"])) for r in rows if r["label"] == "noisy"
    }
    assert both  # one search, both modes' target
    paper, _ = build_simtune_pairs(small_world, small_corpus, small_splits.train, num_questions=400)
    assert all(carries(r) for r in paper if r["label"] == "useful")
    with pytest.raises(ValueError, match="labelling must be one of paper, engine"):
        build_simtune_pairs(small_world, small_corpus, small_splits.train, num_questions=5, labelling="judge")
