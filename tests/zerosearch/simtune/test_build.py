"""zerosearch.simtune build and convert: the exact prompt the trainer sends, balance, the split by question,
deduplication, the cap on a repeated result list; rows another layout holds, with errors naming the row."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from llm_agent.observation import format_documents
from zerosearch.simtune.__main__ import main
from zerosearch.simtune.build import build_rows, convert_rows
from zerosearch.simtune.label import write_jsonl
from zerosearch.templates import simulation_messages


def _item(n: int, label: str, query: str | None = None, documents: list[str] | None = None) -> dict:
    return {
        "data_source": "toy",
        "question": f"Where does person {n % 40} live?",
        "golden_answers": [f"City {n % 40}"],
        "query": query or f"person {n} home",
        "documents": documents or [f"Document {n} a", f"Document {n} b"],
        "label": label,
    }


def test_rows_are_balanced_split_by_question_and_in_the_trainers_prompt():
    items = [_item(n, "useful" if n % 3 else "noisy") for n in range(120)]  # 80 useful, 40 noisy
    rows, stats = build_rows(items, val_fraction=0.25, seed=1)
    for split in ("train", "val"):
        labels = [r["label"] for r in rows[split]]
        assert labels.count("useful") == labels.count("noisy") > 0
    assert not {r["question"] for r in rows["train"]} & {r["question"] for r in rows["val"]}
    assert stats.per_split["train"]["kept"] + stats.per_split["val"]["kept"] == 2 * (
        min(stats.per_split["train"]["useful"], stats.per_split["train"]["noisy"])
        + min(stats.per_split["val"]["useful"], stats.per_split["val"]["noisy"])
    )
    row = rows["train"][0]
    source = next(x for x in items if x["query"] == row["query"])
    assert row["prompt"] == simulation_messages(
        source["query"], source["question"], source["golden_answers"], useful=row["label"] == "useful"
    )  # the reference template, sft mode, first answer: what simulate_sft sends
    assert row["response"] == format_documents(source["documents"])


def test_duplicates_and_a_repeated_result_list_are_dropped():
    same = ["The same five documents for every query"]
    items = [_item(0, "useful"), _item(0, "useful")]  # an exact duplicate
    items += [_item(n, "noisy", query=f"vague {n}", documents=same) for n in range(1, 6)]
    rows, stats = build_rows(items, val_fraction=0.0, max_same_response=3)
    assert stats.duplicates == 1 and stats.repeated_response == 2
    assert stats.per_split["train"] == {"useful": 1, "noisy": 3, "kept": 2}
    assert len(rows["train"]) == 2 and rows["val"] == []


def test_the_build_files_and_the_command_line(tmp_path, capsys):
    labelled = write_jsonl(
        [_item(n, "useful" if n % 2 else "noisy") for n in range(40)], tmp_path / "l.jsonl"
    )
    assert (
        main(["build", "--labelled", str(labelled), "--out", str(tmp_path / "sft"), "--val-fraction", "0.2"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("train: ") and "dropped: 0 duplicates" in out
    train = pq.read_table(tmp_path / "sft" / "train.parquet").to_pylist()
    assert {"prompt", "response", "label"} <= set(train[0]) and (
        tmp_path / "sft" / "build_stats.json"
    ).is_file()
    only_useful = write_jsonl([_item(n, "useful") for n in range(4)], tmp_path / "u.jsonl")
    assert main(["build", "--labelled", str(only_useful), "--out", str(tmp_path / "x")]) == 2
    assert "need both useful and noisy" in capsys.readouterr().err


def test_rows_of_another_layout_convert_and_errors_name_the_row(tmp_path):
    rows = convert_rows(
        [{"input": "You are the Google search engine. Query: x", "output": "Doc 1: y\n"}], "input", "output"
    )
    assert rows == [
        {
            "prompt": [
                {"role": "system", "content": ""},
                {"role": "user", "content": "You are the Google search engine. Query: x"},
            ],
            "response": "Doc 1: y\n",
        }
    ]
    with pytest.raises(ValueError, match=r"f.jsonl: row 1 has no field 'output'"):
        convert_rows([{"input": "a", "output": "b"}, {"input": "a"}], "input", "output", "f.jsonl")
    with pytest.raises(ValueError, match=r"row 0 field 'output' must be a non-empty string"):
        convert_rows([{"input": "a", "output": " "}], "input", "output")
