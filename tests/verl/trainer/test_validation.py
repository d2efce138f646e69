"""A validation's records (one per row, from a real tokenizer and reward manager), the per-source metrics
against a hand count, the table the trackers get, and the jsonl written whole."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from verl.protocol import DataProto
from verl.trainer.validation import generation_records, source_metrics, table_rows, write_records
from verl.workers.reward import RewardManager


def _exact(text: str, golden) -> dict[str, float]:
    return {"em": float(text.strip() in golden), "length": float(len(text.split()))}


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


def test_a_record_holds_the_whole_response_and_scores_the_policy_tokens_only(tokenizer):
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    policy, observation = encode("Paris"), encode(" Doc 1: Rome")
    ids = policy + observation
    width = len(ids) + 2
    responses = torch.full((2, width), tokenizer.pad_token_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    responses[0, : len(ids)] = torch.tensor(ids)
    mask[0, : len(policy)] = 1
    responses[1, : len(observation)] = torch.tensor(observation)  # nothing of the policy's: scores ""
    batch = DataProto.from_dict(
        {"responses": responses, "response_mask": mask},
        {
            "data_source": ["nq", "popqa"],
            "index": [np.int64(7), 3],
            "question": ["Where?", "Who?"],
            "golden_answers": [["Paris"], ["Rome"]],
            "turns": np.array([2, 1], dtype=object),
            "searches": np.array([1, 0], dtype=object),
        },
    )
    reward = RewardManager(tokenizer, score_fn=lambda *a, **k: 0.0, metric="f1", metrics_fn=_exact)
    first, second = generation_records(batch, tokenizer, reward)
    assert first == {
        "data_source": "nq",
        "index": 7,
        "question": "Where?",
        "golden_answers": ["Paris"],
        "response": tokenizer.decode(ids),
        "policy_response": "Paris",
        "reward_text": "Paris",  # no reward_text column: the policy tokens are what is scored
        "em": 1.0,
        "length": 1.0,
        "turns": 2,
        "searches": 1,
    }
    assert second["em"] == 0.0 and second["policy_response"] == "" and "Rome" in second["response"]
    json.dumps(first)  # plain JSON values, numpy scalars included


def test_the_agent_s_reward_text_is_what_a_record_scores(tokenizer):
    """An agent that reports the accepted answer (`reward_text`) is scored on it, not on its policy tokens."""
    ids = tokenizer("Paris", add_special_tokens=False)["input_ids"]
    batch = DataProto.from_dict(
        {"responses": torch.tensor([ids]), "response_mask": torch.ones((1, len(ids)), dtype=torch.long)},
        {
            "data_source": ["nq"],
            "index": [0],
            "question": ["Where?"],
            "golden_answers": [["Paris"]],
            "reward_text": np.array([""], dtype=object),  # the environment accepted no answer
        },
    )
    reward = RewardManager(tokenizer, score_fn=lambda *a, **k: 0.0, metric="f1", metrics_fn=_exact)
    (record,) = generation_records(batch, tokenizer, reward)
    assert record["policy_response"] == "Paris" and record["reward_text"] == "" and record["em"] == 0.0


def _records() -> list[dict]:
    rows = [("nq", 1.0), ("nq", 0.0), ("nq", 0.0), ("bamboogle", 1.0)]
    return [
        {"data_source": s, "index": i, "question": "q", "golden_answers": ["a"], "response": "r",
         "policy_response": "r", "em": em, "turns": 1}
        for i, (s, em) in enumerate(rows)
    ]  # fmt: skip


def test_source_metrics_average_each_source_then_over_sources_and_pool_every_row():
    metrics = source_metrics(_records())
    assert metrics["val/em/nq"] == pytest.approx(1 / 3) and metrics["val/em/bamboogle"] == 1.0
    assert metrics["val/em/avg_over_sources"] == pytest.approx((1 / 3 + 1) / 2)
    assert metrics["val/em/all"] == 0.5
    assert not any("turns" in key for key in metrics)  # agent counters are not reward metrics


def test_the_tracker_table_takes_the_first_rows_with_their_metrics():
    columns, rows = table_rows(_records(), 2, step=5)
    assert columns == ["step", "data_source", "question", "golden", "response", "em"]
    assert rows == [[5, "nq", "q", "a", "r", 1.0], [5, "nq", "q", "a", "r", 0.0]]


def test_records_are_written_whole(tmp_path):
    path = write_records(_records(), tmp_path / "step_3")
    assert [json.loads(line)["index"] for line in path.read_text().splitlines()] == [0, 1, 2, 3]
    assert sorted(p.name for p in path.parent.iterdir()) == ["trajectories.jsonl"]  # no partial file left
