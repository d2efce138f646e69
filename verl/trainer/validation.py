"""What a validation produces: one record per row, the metrics per data source, and the files it writes.

A record holds the row (data_source, index, question, golden_answers), the whole response as the policy saw it
(observations included: `response`), the policy's own tokens (`policy_response`), the text the reward scores
(`reward_text`: the accepted answer action where the agent reports one, verl.workers.reward.reward_texts), the
reward's answer metrics (em, cover_em, f1, ... from `reward.metrics_fn`) and the agent's per-row counters
(turns, searches, ..., and `search_calls`: each executed search's query and documents). Validation in a run
writes them to `<validation_data_dir>/step_<N>/trajectories.jsonl`,
and the domain's agent may add its own report beside them (`report_validation(records, folder)`:
ZeroSearch writes the evaluation harness's results.md, results.json and figures); `zerosearch.eval` builds its
records with the same function, so a run's validation and an evaluation outside one write the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from verl.protocol import DataProto
from verl.workers.reward import RewardManager, decode_tokens, policy_texts, reward_texts

# The agent's per-row counters copied into each record when the rollout provides them (llm_agent's stats).
AGENT_COLUMNS = ("turns", "searches", "valid_actions", "invalid_actions", "answered", "search_calls")
# What a record says about its row; every other field is a metric of the reward's metrics_fn.
ROW_FIELDS = (
    "data_source",
    "index",
    "question",
    "golden_answers",
    "response",
    "policy_response",
    "reward_text",
)
TRAJECTORIES = "trajectories.jsonl"


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON-native values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | list | tuple):
        return [_plain(v) for v in value]
    return value


def generation_records(batch: DataProto, tokenizer, reward: RewardManager) -> list[dict[str, Any]]:
    """One record per row of a rolled-out, validation batch (prompt columns united with the rollout's)."""
    columns = batch.non_tensor_batch
    texts, scored = policy_texts(batch, tokenizer), reward_texts(batch, tokenizer)
    metrics = reward.answer_metrics(scored, batch)
    pad = tokenizer.pad_token_id
    records = []
    for row, policy_text in enumerate(texts):
        ids = [t for t in batch.batch["responses"][row].tolist() if t != pad]
        record = {
            "data_source": str(columns["data_source"][row]),
            "index": _plain(columns["index"][row]),
            "question": str(columns["question"][row]),
            "golden_answers": [str(a) for a in columns["golden_answers"][row]],
            "response": decode_tokens(tokenizer, ids),
            "policy_response": policy_text,
            "reward_text": scored[row],
        }
        record.update({key: float(values[row]) for key, values in metrics.items()})
        record.update({key: _plain(columns[key][row]) for key in AGENT_COLUMNS if key in columns})
        records.append(record)
    return records


def metric_keys(records: Sequence[dict[str, Any]]) -> list[str]:
    """The reward's metric names in the records (em, cover_em, f1, ...)."""
    return [k for k in (records[0] if records else {}) if k not in ROW_FIELDS and k not in AGENT_COLUMNS]


def source_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """For each reward metric: `val/<key>/<source>` for each data source, `val/<key>/all` pooled over every row (a large source weighs
    more) and `val/<key>/avg_over_sources` (each source counts once, the paper's "Avg")."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_source.setdefault(record["data_source"], []).append(record)
    out: dict[str, float] = {}
    for key in metric_keys(records):
        means = {s: float(np.mean([r[key] for r in rows])) for s, rows in by_source.items()}
        out.update({f"val/{key}/{source}": mean for source, mean in means.items()})
        out[f"val/{key}/all"] = float(np.mean([r[key] for r in records]))
        out[f"val/{key}/avg_over_sources"] = float(np.mean(list(means.values())))
    return out


def write_records(records: Sequence[dict[str, Any]], folder: Path) -> Path:
    """`folder/trajectories.jsonl`, written whole under a temporary name and then renamed, so a reader never
    sees half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TRAJECTORIES
    partial = folder / f".{TRAJECTORIES}.partial"
    with partial.open("w", encoding="utf-8") as sink:
        for record in records:
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return path


def table_rows(records: Sequence[dict[str, Any]], count: int, step: int) -> tuple[list[str], list[list]]:
    """The first `count` records as a tracker table (wandb Table, tensorboard text, console jsonl)."""
    metrics = metric_keys(records)
    columns = ["step", "data_source", "question", "golden", "response", *metrics]
    rows = [
        [step, r["data_source"], r["question"], " | ".join(r["golden_answers"]), r["response"]]
        + [r[k] for k in metrics]
        for r in records[:count]
    ]
    return columns, rows
