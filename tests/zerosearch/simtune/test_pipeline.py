"""The whole simulation-tuning pipeline on a toy world, each stage through its command line: the tiny policy
that searches collects trajectories against BM25, the searches are labelled, balanced SFT rows are built, a
tiny simulator is fine-tuned on them (2 steps), served by the built-in server, and audited."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from zerosearch.data.schema import make_row, write_dataset
from zerosearch.simtune.__main__ import main
from zerosearch.utils.serving import ServerProcess, find_free_port

# The policy was fitted on the first two; on the others it searches a name it knows, and BM25's top document
# then lacks the answer: noisy interactions beside the useful ones.
QUESTIONS = [
    ("Where was Alice Smith born?", "Paris"),
    ("Where does Bob Jones live?", "Rome"),
    ("Where was Carol White born?", "Oslo"),
    ("What does Acme Corporation make?", "bricks"),
]


@pytest.mark.slow
def test_collect_label_build_tune_serve_and_audit(
    agent_model_dir, agent_corpus, tiny_model_dir, tmp_path, capsys
):
    rows = [
        make_row(question=q, golden_answers=[a], prompt=[{"role": "user", "content": f"Question: {q}"}],
                 data_source="toy", split="train", index=i)
        for i, (q, a) in enumerate(QUESTIONS)
    ]  # fmt: skip
    data = str(write_dataset(rows, tmp_path / "train.parquet"))
    collect = [
        "collect", "--model", str(agent_model_dir), "--data", data, "--out", str(tmp_path / "collect"),
        "--engine", "local", "--corpus", str(agent_corpus), "--topk", "1", "--max-turns", "2",
        "--max-tokens-per-turn", "24", "--max-obs-length", "64", "--max-response-length", "200",
        "--samples", "3", "--temperature", "1", "--device", "cpu",
    ]  # fmt: skip
    assert main(collect) == 0
    records = [json.loads(x) for x in (tmp_path / "collect" / "trajectories.jsonl").read_text().splitlines()]
    assert len(records) == 12 and sum(len(r["search_calls"]) for r in records) >= 12

    labelled = tmp_path / "labelled.jsonl"
    assert (
        main(
            [
                "label",
                "--trajectories",
                str(tmp_path / "collect" / "trajectories.jsonl"),
                "--out",
                str(labelled),
            ]
        )
        == 0
    )
    summary = capsys.readouterr().out
    assert "containment" in summary and "agreement containment / outcome" in summary

    sft = tmp_path / "sft"
    assert main(["build", "--labelled", str(labelled), "--out", str(sft), "--val-fraction", "0",
                 "--max-same-response", "100"]) == 0  # fmt: skip
    train = pq.read_table(sft / "train.parquet").to_pylist()
    assert len(train) >= 2 and {r["label"] for r in train} == {"useful", "noisy"}

    simulator = tmp_path / "simulator"
    overrides = [
        f"model.path={tiny_model_dir}", f"data.train_files={sft / 'train.parquet'}", "data.train_batch_size=2",
        "data.micro_batch_size_per_gpu=2", "data.max_length=512", "trainer.total_training_steps=2",
        f"trainer.default_local_dir={tmp_path / 'sft_run'}", f"trainer.output_dir={simulator}", "trainer.logger=[jsonl]",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "verl.trainer.sft_trainer", *overrides], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    args = ["--model", str(simulator), "--device", "cpu", "--num-threads", "1"]
    with ServerProcess("zerosearch.simulation.server", args, find_free_port()) as server:
        audit = ["audit", "--url", server.url, "--name", "tuned", "--data", data, "--out", str(tmp_path / "audit"),
                 "--questions", "4", "--samples", "2"]  # fmt: skip
        assert main(audit) == 0
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())["simulators"]["tuned"]
    assert report["requests"] == 4 * 3 * 2 and report["failed"] == 0
    assert 0.0 <= report["useful_answer_rate"] <= 1.0 and report["query_sensitivity_gap"] is not None
    assert "tuned: useful" in capsys.readouterr().out
