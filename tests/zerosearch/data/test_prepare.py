"""Data preparation from a local folder in the FlashRAG layout (seven datasets, splits as on the hub): the
test and training sets, their rows, sampling, errors, and that the trainer loads them and the public release's
layout unchanged."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from tests.zerosearch.data.flashrag import SPLITS, record, write_flashrag
from verl.utils.dataset import RLHFDataset
from zerosearch.data.prepare import PrepareError, main, prepare, question_text
from zerosearch.data.schema import read_dataset, row_problem

# Rows per split (500+ where the paper samples 500), in the splits each dataset has on the hub.
LAYOUT = {
    "nq": {"train": 30, "dev": 10, "test": 600},
    "triviaqa": {"train": 10, "dev": 10, "test": 520},
    "popqa": {"test": 510},
    "hotpotqa": {"train": 40, "dev": 505},
    "2wikimultihopqa": {"train": 10, "dev": 501},
    "musique": {"train": 10, "dev": 502},
    "bamboogle": {"test": 125},
}
TEST_SPLIT = {"nq": "test", "triviaqa": "test", "popqa": "test", "bamboogle": "test"}  # else dev


@pytest.fixture(scope="module")
def flashrag(tmp_path_factory):
    assert {name: tuple(splits) for name, splits in LAYOUT.items()} == SPLITS
    return write_flashrag(tmp_path_factory.mktemp("flashrag"), LAYOUT)


@pytest.fixture(scope="module")
def test_set(flashrag, tmp_path_factory):
    return prepare("test", tmp_path_factory.mktemp("test-set"), str(flashrag), per_dataset=500, seed=0)


def test_the_test_set_takes_500_per_dataset_from_test_else_dev_and_bamboogle_whole(test_set):
    rows = read_dataset(test_set)
    counts = Counter(r["data_source"] for r in rows)
    assert counts == {name: 125 if name == "bamboogle" else 500 for name in LAYOUT}
    splits = {(r["data_source"], r["extra_info"]["split"]) for r in rows}
    assert splits == {(name, TEST_SPLIT.get(name, "dev")) for name in LAYOUT}
    keys = [(r["data_source"], r["extra_info"]["index"]) for r in rows]
    assert len(set(keys)) == len(keys)


def test_rows_keep_the_source_record_and_follow_the_question_rule(test_set):
    for row in read_dataset(test_set):
        name, split, index = row["data_source"], row["extra_info"]["split"], row["extra_info"]["index"]
        source = record(name, split, index)
        assert row["question"] == source["question"].strip() + ("" if index % 3 else "?")
        assert row["question"].endswith("?") and not row["question"].endswith("??")
        assert (
            row["golden_answers"] == source["golden_answers"] == row["reward_model"]["ground_truth"]["target"]
        )
        assert row["extra_info"]["id"] == source["id"]
        assert json.loads(row["extra_info"]["metadata"]) == source["metadata"]
        assert row["question"] in row["prompt"][0]["content"] and row_problem(row) is None


def test_the_draw_is_seeded_and_without_replacement(flashrag, tmp_path, test_set):
    def indices(path):
        return sorted(r["extra_info"]["index"] for r in read_dataset(path) if r["data_source"] == "nq")

    again = prepare("test", tmp_path / "a", str(flashrag), ["nq"], per_dataset=500, seed=0)
    other = prepare("test", tmp_path / "b", str(flashrag), ["nq"], per_dataset=500, seed=1)
    assert indices(again) == indices(test_set) != indices(other)
    assert len(set(indices(other))) == 500 and max(indices(other)) < 600


def test_the_training_set_merges_the_train_splits(flashrag, tmp_path):
    rows = read_dataset(prepare("train", tmp_path, str(flashrag)))
    assert Counter(r["data_source"] for r in rows) == {"nq": 30, "hotpotqa": 40}
    assert {r["extra_info"]["split"] for r in rows} == {"train"}


def test_both_sets_load_in_the_trainer(flashrag, tmp_path, test_set, tiny_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    train = prepare("train", tmp_path, str(flashrag))
    for path, size in ((train, 70), (test_set, 3125)):
        dataset = RLHFDataset(path, tokenizer, max_prompt_length=4096, row_check=row_problem)
        assert len(dataset) == size
    item = RLHFDataset(train, tokenizer, max_prompt_length=4096, row_check=row_problem)[0]
    assert item.golden_answers == ["answer 0", "alias 0"] and item.question.endswith("?")


def test_the_public_release_layout_loads_in_the_trainer_unchanged(tmp_path, tiny_tokenizer_dir):
    """The columns and nesting of the public ZeroSearch / Search-R1 training parquet (no prepare step)."""
    rows = [
        {
            "id": f"train_{i}",
            "question": f"who wrote book {i}?",
            "golden_answers": [f"author {i}"],
            "data_source": "nq",
            "prompt": [
                {"content": f"Answer the given question. Question: who wrote book {i}?\n", "role": "user"}
            ],
            "ability": "fact-reasoning",
            "reward_model": {"ground_truth": {"target": [f"author {i}"]}, "style": "rule"},
            "extra_info": {"index": i, "split": "train"},
        }
        for i in range(4)
    ]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    dataset = RLHFDataset(path, AutoTokenizer.from_pretrained(tiny_tokenizer_dir), 512, row_check=row_problem)
    assert len(dataset) == 4 and dataset[3].golden_answers == ["author 3"] and dataset[3].index == 3


def test_a_dataset_without_a_test_split_or_folder_is_a_clear_error(flashrag, tmp_path, capsys):
    with pytest.raises(PrepareError, match=r"popqa in .*: no train split \(it has test\)"):
        prepare("train", tmp_path, str(flashrag), ["popqa"])
    assert main(["test", "--out", str(tmp_path), "--source", str(flashrag), "--datasets", "nq,webqa"]) == 2
    assert "webqa" in capsys.readouterr().err and not (tmp_path / "test.parquet").exists()


def test_an_unreachable_hub_says_how_to_pass_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(PrepareError, match=r"cannot read 'nq' of RUC-NLPIR/FlashRAG_datasets .*--source DIR"):
        prepare("test", tmp_path, None, ["nq"])


def test_the_command_line_writes_the_set(flashrag, tmp_path):
    args = [
        "test",
        "--out",
        str(tmp_path),
        "--source",
        str(flashrag),
        "--datasets",
        "bamboogle,nq",
        "--per-dataset",
        "3",
    ]
    assert main(args) == 0
    rows = read_dataset(tmp_path / "test.parquet")
    assert Counter(r["data_source"] for r in rows) == {"bamboogle": 3, "nq": 3}


@pytest.mark.parametrize(("raw", "text"), [(" who? ", "who?"), ("who", "who?"), ("who ?", "who ?")])
def test_question_rule(raw, text):
    assert question_text(raw) == text
