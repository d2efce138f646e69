"""Questions: answers match the world's facts, two-hop chains hold, splits keep held-out people apart."""

from __future__ import annotations

from toyworld.questions import QUESTION_TYPES, build_questions, dataset_rows
from zerosearch.data.schema import read_dataset, write_dataset
from zerosearch.templates import render_policy_prompt


def _all(splits):
    return splits.train + splits.val + splits.test


SINGLE_HOP = {
    "birthplace": "birthplace",
    "employer": "employer",
    "alma_mater": "alma_mater",
    "spouse": "spouse",
}


def test_single_hop_answers_are_the_facts(small_world, small_splits):
    checked = 0
    for q in _all(small_splits):
        if q.qtype in SINGLE_HOP:
            person = small_world.entity(q.subject)
            assert list(q.answers) == small_world.answers(getattr(person, SINGLE_HOP[q.qtype]))
            assert person.name in q.text
            checked += 1
    assert checked > 100


def test_two_hop_answers_follow_the_bridge(small_world, small_splits):
    second_hop = {
        "birth_country": ("birthplace", "country"),
        "employer_city": ("employer", "headquarters"),
        "alma_mater_city": ("alma_mater", "headquarters"),
        "spouse_birthplace": ("spouse", "birthplace"),
    }
    seen = set()
    for q in _all(small_splits):
        if q.hops != 2:
            continue
        first, second = second_hop[q.qtype]
        person = small_world.entity(q.subject)
        assert q.bridge == getattr(person, first)
        assert q.answer_entity == getattr(small_world.entity(q.bridge), second)
        assert list(q.answers) == small_world.answers(q.answer_entity)
        seen.add(q.qtype)
    assert seen == set(second_hop)


def test_every_question_type_is_asked(small_splits):
    assert {q.qtype for q in small_splits.train} == {t.name for t in QUESTION_TYPES}


def test_splits_follow_the_people_groups(small_world, small_splits):
    for split in ("train", "val", "test"):
        groups = {small_world.entity(q.subject).group for q in getattr(small_splits, split)}
        assert groups == {split}


def test_heldout_names_never_appear_in_train_questions(small_world, small_splits):
    text = "\n".join(q.text for q in small_splits.train)
    assert not any(p.name in text for p in small_world.people_in("val", "test"))


def test_train_pool_is_large_and_eval_splits_are_capped(small_world, small_splits):
    assert len(small_splits.train) > 5 * len(small_world.people_in("train"))
    assert len(small_splits.val) == 60 and len(small_splits.test) == 80
    assert len(small_splits.train_entity_eval) == 40
    assert set(small_splits.train_entity_eval) <= set(small_splits.train)


def test_same_world_same_splits(small_world, small_splits):
    assert build_questions(small_world, 60, 80, 40) == small_splits


def test_dataset_rows_are_valid_and_carry_the_policy_prompt(small_splits, tmp_path):
    rows = dataset_rows(small_splits.val, "val")
    path = write_dataset(rows, tmp_path / "val.parquet")
    back = read_dataset(path)
    assert back.skipped == 0 and len(back) == len(small_splits.val)
    first, q = back[0], small_splits.val[0]
    assert first["prompt"] == [{"role": "user", "content": render_policy_prompt(q.text)}]
    assert first["golden_answers"] == list(q.answers) == first["reward_model"]["ground_truth"]["target"]
    assert first["data_source"] == ("toyworld_single_hop" if q.hops == 1 else "toyworld_two_hop")
    assert first["extra_info"] == {"split": "val", "index": 0, "qtype": q.qtype, "subject": q.subject}
