"""Balanced useful/noisy SFT rows for a simulation LLM, in the exact prompt the trainer will send it.

Each labelled interaction becomes one row: `prompt` = the simulation chat messages the search backend sends
(zerosearch.templates.simulation_messages: the reference text by default, the labelled mode, the question and
its golden answer), `response` = the documents as "Doc i: ..." lines (what the backend parses back). Then:

1. deduplicated on (query, documents, label);
2. one result list serves at most `max_same_response` rows (an uninformative query returns the same documents
   for every question, and hundreds of copies teach one canned reply);
3. split by question: a question's rows all go to train or all to validation (a seeded hash of the question),
   so validation loss measures questions the simulator has not seen;
4. balanced in each split by downsampling the larger label (seeded).

Written as `train.parquet` / `val.parquet` (plus `build_stats.json`), the layout `verl.trainer.sft_trainer` reads
with its defaults (`prompt`, `response`), with the interaction's fields kept beside them for inspection.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class BuildStats:
    labelled: int = 0
    without_label: int = 0
    duplicates: int = 0
    repeated_response: int = 0
    per_split: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> useful/noisy/kept


def _split_of(question: str, val_fraction: float, seed: int) -> str:
    digest = hashlib.sha256(f"{seed}:{question.strip().lower()}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def sft_row(item: dict[str, Any], template: str, mode: str, answer_mode: str, topk: int) -> dict[str, Any]:
    """One labelled interaction as an SFT row (prompt messages + the documents as the response)."""
    from llm_agent.observation import format_documents
    from zerosearch.templates import simulation_messages

    return {
        "prompt": simulation_messages(
            item["query"],
            item["question"],
            item["golden_answers"],
            useful=item["label"] == "useful",
            mode=mode,
            answer_mode=answer_mode,
            template=template,
        ),
        "response": format_documents(item["documents"][:topk]),
        "documents": list(item["documents"][:topk]),
        "label": item["label"],
        "query": item["query"],
        "question": item["question"],
        "golden_answers": list(item["golden_answers"]),
        "data_source": item.get("data_source", ""),
        **item.get("meta", {}),
    }


def build_rows(
    labelled: Sequence[dict[str, Any]],
    template: str = "reference",
    mode: str = "sft",
    answer_mode: str = "first",
    topk: int = 5,
    val_fraction: float = 0.05,
    max_same_response: int = 3,
    seed: int = 0,
) -> tuple[dict[str, list[dict[str, Any]]], BuildStats]:
    """{"train": rows, "val": rows} and what happened on the way (see the module doc)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if max_same_response < 1:
        raise ValueError(f"--max-same-response must be >= 1, got {max_same_response}")
    stats = BuildStats(labelled=len(labelled))
    seen: set[tuple] = set()
    uses: dict[tuple[str, ...], int] = {}
    pools: dict[str, dict[str, list[dict[str, Any]]]] = {
        split: {"useful": [], "noisy": []} for split in ("train", "val")
    }
    for item in labelled:
        if item.get("label") not in ("useful", "noisy"):
            stats.without_label += 1
            continue
        documents = tuple(" ".join(d.split()) for d in item["documents"][:topk])
        key = (" ".join(item["query"].lower().split()), documents, item["label"])
        if key in seen:
            stats.duplicates += 1
            continue
        seen.add(key)
        if uses.get(documents, 0) >= max_same_response:
            stats.repeated_response += 1
            continue
        uses[documents] = uses.get(documents, 0) + 1
        split = _split_of(item["question"], val_fraction, seed)
        pools[split][item["label"]].append(item)
    rng = random.Random(seed)
    out: dict[str, list[dict[str, Any]]] = {}
    for split, pool in pools.items():
        keep = min(len(pool["useful"]), len(pool["noisy"]))
        kept = [x for label in ("useful", "noisy") for x in rng.sample(pool[label], keep)]
        rng.shuffle(kept)
        out[split] = [sft_row(x, template, mode, answer_mode, topk) for x in kept]
        stats.per_split[split] = {
            "useful": len(pool["useful"]),
            "noisy": len(pool["noisy"]),
            "kept": len(kept),
        }
    return out, stats


def write_build(rows: dict[str, list[dict[str, Any]]], stats: BuildStats, out: str | Path) -> list[Path]:
    """train.parquet, val.parquet (when it has rows) and build_stats.json in `out`."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not rows["train"]:
        raise ValueError(
            f"no balanced training rows: {stats.per_split.get('train')} (need both useful and noisy interactions)"
        )
    paths = []
    for split, split_rows in rows.items():
        if split_rows:
            paths.append(out / f"{split}.parquet")
            pq.write_table(pa.Table.from_pylist(split_rows), paths[-1], compression="zstd")
    paths.append(out / "build_stats.json")
    paths[-1].write_text(json.dumps(asdict(stats), indent=2) + "\n", encoding="utf-8")
    return paths


def convert_rows(
    records: Sequence[dict[str, Any]], prompt_key: str, response_key: str, source: str = "input"
) -> list[dict[str, Any]]:
    """Rows of another simulation-tuning layout as SFT rows: `prompt_key` holds the prompt (a string, or chat
    messages), `response_key` the documents text. An error names the row and the missing or mistyped field."""
    out = []
    for number, record in enumerate(records):
        for key in (prompt_key, response_key):
            if key not in record:
                raise ValueError(f"{source}: row {number} has no field {key!r} (fields: {', '.join(record)})")
        prompt, response = record[prompt_key], record[response_key]
        if isinstance(prompt, str):
            prompt = [{"role": "system", "content": ""}, {"role": "user", "content": prompt}]
        elif not (isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt)):
            raise ValueError(f"{source}: row {number} field {prompt_key!r} must be a string or chat messages")
        if not isinstance(response, str) or not response.strip():
            raise ValueError(f"{source}: row {number} field {response_key!r} must be a non-empty string")
        out.append({"prompt": prompt, "response": response})
    return out
