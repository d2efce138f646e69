"""zerosearch.eval end to end on toy files with the local engine: every row, the table against a hand count, a
kill part-way then a resume equal to an uninterrupted run, and the figures."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.agent_model import eval_case, read_trajectories
from zerosearch.data.schema import make_row, write_dataset
from zerosearch.eval import (
    add_engine_arguments,
    aggregate,
    em_figure,
    evaluate,
    main,
    paper_results,
    results_table,
    searches_figure,
)
from zerosearch.templates import policy_messages

CORPUS = ["Alice Smith was born in Paris.", "Bob Jones works for Acme.", "Carol Diaz lives in Rome."]


@pytest.fixture
def files(tmp_path):
    rows = [
        make_row(
            question=f"Where does person {i} live?",
            golden_answers=[f"city {i}"],
            prompt=policy_messages(f"Where does person {i} live?"),
            data_source=source,
            split="test",
            index=i,
        )
        for source, count in (("nq", 5), ("bamboogle", 3))
        for i in range(count)
    ]
    data = write_dataset(rows, tmp_path / "test.parquet")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "contents": d}) + "\n" for i, d in enumerate(CORPUS)))
    return data, corpus


def parser_args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    return parser.parse_args(flags)


def _record(source: str, em: float, searches: int, answer: str | None = "x") -> dict:
    return {
        "data_source": source,
        "em": em,
        "cover_em": em,
        "f1": em,
        "has_answer": float(answer is not None),
        "answer": answer,
        "answer_words": len(answer.split()) if answer else 0,
        "turns": searches + 1,
        "searches": searches,
    }


def test_the_table_matches_a_hand_count():
    records = [
        _record("nq", 1, 1),
        _record("nq", 0, 2),
        _record("nq", 0, 0, None),
        _record("bamboogle", 1, 1, "a b"),
    ]
    results = aggregate(records)
    # nq: EM 1/3; bamboogle 1/1; the paper's Avg (1/3 + 1) / 2; pooled 2/4
    assert (
        results["sources"]["nq"]["em"] == pytest.approx(1 / 3)
        and results["sources"]["bamboogle"]["em"] == 1.0
    )
    assert results["avg_over_datasets"]["em"] == pytest.approx(2 / 3) and results["pooled"]["em"] == 0.5
    assert (
        results["sources"]["nq"]["has_answer"] == pytest.approx(2 / 3)
        and results["sources"]["nq"]["searches"] == 1.0
    )
    assert results["sources"]["nq"]["answer_words"] == 1.0  # over the answered rows only
    table = results_table(results, paper_results()["qwen2.5-3b-base"])
    assert table[2] == "| nq | 3 | 33.33 | 33.33 | 33.33 | 66.67 | 2.00 | 1.00 | 1.0 | 41.21 |"
    assert (
        table[4]
        == "| **Avg (over datasets)** | 2 datasets | 66.67 | 66.67 | 66.67 | 83.33 | 2.00 | 1.00 | 1.5 | 33.97 |"
    )
    assert table[5].startswith("| all rows (pooled) | 4 | 50.00 |")
    assert len(em_figure(results, paper_results()["qwen2.5-3b-base"]).axes[0].patches) == 4  # 2 datasets x 2
    with_toy = aggregate(records + [_record("toy", 1, 1)])
    toy_figure = em_figure(with_toy, paper_results()["qwen2.5-3b-base"])
    assert len(toy_figure.axes[0].patches) == 5  # the paper has no toy figure: no bar, not a bar at 0
    assert [t.get_text() for t in toy_figure.axes[0].texts][:3] == ["33.3", "100.0", "100.0"]  # values shown
    assert len(searches_figure(records, results).axes[0].patches) == 6  # 2 datasets x 0, 1, 2 searches


def test_every_row_is_evaluated_with_the_training_scoring(files, tmp_path, tiny_model_dir):
    from matplotlib.image import imread

    from zerosearch.reward import answer_metrics

    data, corpus = files
    out = tmp_path / "out"
    search = {"name": "local", "corpus": str(corpus)}
    results = evaluate(
        str(tiny_model_dir),
        [str(data)],
        out,
        search,
        max_turns=1,
        batch_size=3,
        max_tokens_per_turn=12,
        device="cpu",
    )
    records = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert sorted((r["data_source"], r["index"]) for r in records) == sorted(
        [("nq", i) for i in range(5)] + [("bamboogle", i) for i in range(3)]
    )  # the last partial batch too
    for r in records:
        assert {k: r[k] for k in ("em", "cover_em", "f1", "has_answer")} == answer_metrics(
            r["policy_response"], r["golden_answers"]
        )  # scored on the policy's own tokens, as training scores
    assert results["sources"]["nq"]["rows"] == 5 and results["pooled"]["rows"] == 8
    assert json.loads((out / "results.json").read_text())["pooled"]["rows"] == 8
    assert "| **Avg (over datasets)** | 2 datasets |" in (out / "results.md").read_text()
    for name in ("em_vs_paper", "searches"):
        assert imread(out / f"{name}.png").shape[:2] == (350, 700)


def _command(data, corpus, model, out, batch_size: int) -> list[str]:
    return [
        sys.executable, "-m", "zerosearch.eval", "--model", str(model), "--data", str(data), "--out", str(out),
        "--engine", "local", "--corpus", str(corpus), "--max-turns", "1", "--max-tokens-per-turn", "24",
        "--batch-size", str(batch_size), "--device", "cpu",
    ]  # fmt: skip


@pytest.mark.slow
def test_a_killed_evaluation_resumes_to_the_uninterrupted_results(files, tmp_path, tiny_model_dir):
    data, corpus = files
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = tmp_path / "whole"
    assert (
        subprocess.run(_command(data, corpus, tiny_model_dir, whole, 1), env=env, timeout=300).returncode == 0
    )
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _command(data, corpus, tiny_model_dir, killed, 1), env=env, start_new_session=True
    )
    sink = killed / "trajectories.jsonl"
    while not (sink.is_file() and len(sink.read_text().splitlines()) >= 2):
        assert proc.poll() is None, "finished before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(sink.read_text().splitlines())
    assert 2 <= before < 8
    assert (
        subprocess.run(_command(data, corpus, tiny_model_dir, killed, 3), env=env, timeout=300).returncode
        == 0
    )
    lines = [json.loads(line) for line in sink.read_text().splitlines() if line.strip()]
    assert (
        len(lines) == 8 and len({(r["data_source"], r["index"]) for r in lines}) == 8
    )  # no duplicate, none lost
    assert json.loads((killed / "results.json").read_text()) == json.loads(
        (whole / "results.json").read_text()
    )


def test_command_line_errors_name_the_flag(files, tmp_path, capsys):
    data, _ = files
    assert main(["--model", "m", "--data", str(data), "--out", str(tmp_path), "--engine", "local"]) == 2
    assert "--engine local needs --corpus" in capsys.readouterr().err
    assert main(["--model", "m", "--data", str(data), "--out", str(tmp_path), "--engine", "wiki"]) == 2
    assert "--engine wiki needs --url" in capsys.readouterr().err


def test_google_needs_a_budget_and_prints_the_estimate_before_any_request(
    files, tmp_path, tiny_model_dir, monkeypatch, capsys
):
    from verl.utils.config import ConfigError
    from zerosearch.eval import search_options

    monkeypatch.setenv("SERPAPI_API_KEY", "sk-test")
    data, _ = files
    with pytest.raises(ConfigError, match=r"8 rows may send up to 16 SerpAPI requests; no budget set"):
        evaluate(
            str(tiny_model_dir),
            [str(data)],
            tmp_path / "a",
            search_options(parser_args("--engine", "google")),
            max_turns=2,
        )
    assert not (tmp_path / "a" / "trajectories.jsonl").exists()  # nothing was asked of the engine


def test_a_served_policy_scores_as_the_same_policy_in_process(tmp_path, agent_model_dir, agent_corpus):
    """The tiny policy that searches, in this process and behind the built-in server: the same trajectories
    (search, documents, answer) and the same table. (Text goes over the wire: a policy whose outputs do not
    survive decode and encode, e.g. cut UTF-8 bytes, would drift from the second turn on.)"""
    from zerosearch.utils.serving import ServerProcess, find_free_port

    data, search, limits = eval_case(tmp_path, agent_corpus)
    here = evaluate(str(agent_model_dir), [data], tmp_path / "here", search, rollout="hf", **limits)
    args = ["--model", str(agent_model_dir), "--device", "cpu", "--num-threads", "1"]
    with ServerProcess("zerosearch.simulation.server", args, find_free_port()) as server:
        served = evaluate(
            str(agent_model_dir), [data], tmp_path / "served", search, policy_url=server.url, **limits
        )
    assert read_trajectories(tmp_path / "served") == read_trajectories(tmp_path / "here")
    assert [r["searches"] for r in read_trajectories(tmp_path / "here")] == [1, 1]  # it did search
    assert served["sources"] == here["sources"] and here["sources"]["nq"]["em"] == 1.0
    assert "served at http://127.0.0.1" in (tmp_path / "served" / "results.md").read_text()


def test_a_template_asks_each_question_in_the_words_the_policy_was_trained_with(
    tmp_path, agent_model_dir, agent_corpus
):
    from tests.agent_model import CASES

    data, search, limits = eval_case(tmp_path, agent_corpus)
    rows = [
        make_row(
            question=q, golden_answers=[a], prompt=policy_messages(q), data_source="nq", split="test", index=i
        )
        for i, (q, _, a) in enumerate(CASES)
    ]  # the same questions, prompted with the default policy template
    other = write_dataset(rows, tmp_path / "default_prompts.parquet")
    template = tmp_path / "template.txt"
    template.write_text("Question: {question}")  # the words the tiny policy was fitted on
    evaluate(str(agent_model_dir), [data], tmp_path / "file", search, **limits)
    evaluate(str(agent_model_dir), [str(other)], tmp_path / "asked", search, template=str(template), **limits)
    assert read_trajectories(tmp_path / "asked") == read_trajectories(tmp_path / "file")


def test_overlapped_searches_evaluate_to_the_same_trajectories(tmp_path, agent_model_dir, agent_corpus):
    """--overlap-search: each trajectory searches and answers at its own pace; greedy, the records are
    those of lockstep turns."""
    data, search, limits = eval_case(tmp_path, agent_corpus)
    lockstep = evaluate(str(agent_model_dir), [data], tmp_path / "lockstep", search, rollout="hf", **limits)
    overlapped = evaluate(
        str(agent_model_dir),
        [data],
        tmp_path / "overlap",
        search,
        rollout="hf",
        overlap_search=True,
        **limits,
    )
    assert read_trajectories(tmp_path / "overlap") == read_trajectories(tmp_path / "lockstep")
    assert overlapped["sources"] == lockstep["sources"]
    assert [r["searches"] for r in read_trajectories(tmp_path / "overlap")] == [1, 1]
