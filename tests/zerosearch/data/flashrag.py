"""A local folder in the FlashRAG collection's layout (`<root>/<dataset>/<split>.jsonl`, or .parquet), built
from nothing for the data-preparation tests and the reproduce-guide test."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# The splits each dataset has on the hub.
SPLITS = {
    "nq": ("train", "dev", "test"),
    "triviaqa": ("train", "dev", "test"),
    "popqa": ("test",),
    "hotpotqa": ("train", "dev"),
    "2wikimultihopqa": ("train", "dev"),
    "musique": ("train", "dev"),
    "bamboogle": ("test",),
}


def record(dataset: str, split: str, i: int) -> dict:
    """Row i: every third question lacks its "?" and carries stray spaces; metadata fields differ by dataset."""
    question = f"  what is fact {i} of {dataset} {split}" + ("" if i % 3 == 0 else "?")
    metadata = {"type": "bridge", "level": i % 3} if dataset == "hotpotqa" else {"popularity": float(i)}
    return {
        "id": f"{split}_{i}",
        "question": question,
        "golden_answers": [f"answer {i}", f"alias {i}"],
        "metadata": metadata,
    }


def write_flashrag(root: Path, sizes: dict[str, dict[str, int]]) -> Path:
    """`sizes[dataset][split]` rows per file; MuSiQue as parquet (both formats work), the rest as jsonl."""
    for dataset, splits in sizes.items():
        (root / dataset).mkdir(parents=True)
        for split, size in splits.items():
            records = [record(dataset, split, i) for i in range(size)]
            if dataset == "musique":
                pq.write_table(pa.Table.from_pylist(records), root / dataset / f"{split}.parquet")
            else:
                text = "".join(json.dumps(r) + "\n" for r in records)
                (root / dataset / f"{split}.jsonl").write_text(text, encoding="utf-8")
    return root
