"""The training and test sets of the paper from the FlashRAG QA collection, in the dataset format of
docs/design.md §3.

    python -m zerosearch.data.prepare train --out DIR [--source SRC] [--datasets nq,hotpotqa]
    python -m zerosearch.data.prepare test --out DIR [--source SRC]
        [--datasets nq,triviaqa,popqa,hotpotqa,2wikimultihopqa,musique,bamboogle] [--per-dataset N --seed S]

SRC is the FlashRAG collection on the Hugging Face hub (`RUC-NLPIR/FlashRAG_datasets`, one config per dataset,
rows `{id, question, golden_answers, metadata}`; the default) or a local folder laid out as
`SRC/<dataset>/<split>.jsonl` (or `.parquet`), as a download of that repository is, which works offline.
`train` merges the `train` splits (the paper: NQ + HotpotQA, 169,615 rows). `test` takes each dataset's `test`
split, else `dev`, else `train`, optionally `--per-dataset N` rows drawn with the seed (the paper evaluates 500
per dataset; a smaller dataset, such as Bamboogle's 125 questions, is kept whole).

Each row: `data_source` = the dataset's name; the question stripped, with `?` appended when missing; the
policy prompt filled in (`--template`); `golden_answers` and `reward_model.ground_truth.target`;
`extra_info = {split, index, id, metadata}` with `index` the row's position in its source split, so
(`data_source`, `index`) is unique, and the source's `metadata` kept as a JSON string (its fields differ from
one dataset to the next). Every row is checked by the dataset schema before anything is written.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from zerosearch.data.schema import DatasetError, make_row, write_dataset
from zerosearch.templates import policy_messages

HUB_SOURCE = "RUC-NLPIR/FlashRAG_datasets"
TRAIN_DATASETS = ("nq", "hotpotqa")
TEST_DATASETS = ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")
TEST_SPLITS = ("test", "dev", "train")  # the first one a dataset has is its test set
FILE_SUFFIXES = (".jsonl", ".parquet")


class PrepareError(RuntimeError):
    """Data preparation cannot go on; the message says which dataset or file and what to do."""


class LocalSource:
    """A folder in the FlashRAG layout: `<root>/<dataset>/<split>.jsonl` (or .parquet)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise PrepareError(f"--source {self.root}: no such folder")

    def __str__(self) -> str:
        return str(self.root)

    def _file(self, dataset: str, split: str) -> Path | None:
        found = [self.root / dataset / f"{split}{suffix}" for suffix in FILE_SUFFIXES]
        return next((f for f in found if f.is_file()), None)

    def splits(self, dataset: str) -> list[str]:
        folder = self.root / dataset
        if not folder.is_dir():
            raise PrepareError(
                f"{folder}: no such folder (dataset {dataset!r} is not in --source {self.root})"
            )
        return sorted({f.stem for f in folder.iterdir() if f.suffix in FILE_SUFFIXES})

    def load(self, dataset: str, split: str):
        import datasets

        path = self._file(dataset, split)
        if path is None:
            raise PrepareError(f"{self.root / dataset}: no {split}.jsonl or {split}.parquet")
        builder = "json" if path.suffix == ".jsonl" else "parquet"
        return datasets.load_dataset(builder, data_files=str(path), split="train")


class HubSource:
    """The collection on the Hugging Face hub (or in its local cache, with HF_HUB_OFFLINE=1)."""

    def __init__(self, repo: str = HUB_SOURCE):
        self.repo = repo

    def __str__(self) -> str:
        return self.repo

    def _unreachable(self, dataset: str, error: Exception) -> PrepareError:
        return PrepareError(
            f"cannot read {dataset!r} of {self.repo} from the Hugging Face hub ({type(error).__name__}: {error}). "
            f"Without network access, download the collection where there is some, e.g. `huggingface-cli "
            f"download --repo-type dataset {self.repo} --local-dir DIR`, and pass --source DIR."
        )

    def splits(self, dataset: str) -> list[str]:
        import datasets

        try:
            return list(datasets.get_dataset_split_names(self.repo, dataset))
        except Exception as e:  # network, offline mode, a missing config: all mean "use a local copy"
            raise self._unreachable(dataset, e) from e

    def load(self, dataset: str, split: str):
        import datasets

        try:
            return datasets.load_dataset(self.repo, dataset, split=split)
        except Exception as e:
            raise self._unreachable(dataset, e) from e


def open_source(source: str | None):
    """A local folder when `source` is one, else the hub repository it names (default: FlashRAG's)."""
    if source and (Path(source).is_dir() or source.startswith((".", "/", "~"))):
        return LocalSource(Path(source).expanduser())
    return HubSource(source or HUB_SOURCE)


def question_text(question: Any) -> str:
    """The question stripped, with `?` appended when it does not end with one (as the reference does)."""
    text = str(question).strip()
    return text if text.endswith("?") else text + "?"


def sample_indices(size: int, per_dataset: int | None, seed: int) -> list[int]:
    """`per_dataset` row positions out of `size`, drawn without replacement with `seed`, in file order; all
    rows when there are no more than that (or no limit)."""
    if per_dataset is None or size <= per_dataset:
        return list(range(size))
    return sorted(random.Random(seed).sample(range(size), per_dataset))


def dataset_rows(
    records, dataset: str, split: str, positions: Sequence[int], template: str
) -> list[dict[str, Any]]:
    """Rows in the dataset format for the records at `positions` (their index in the source split)."""
    rows = []
    for index in tqdm(positions, desc=f"{dataset}/{split}", unit="row", dynamic_ncols=True):
        record = records[index]
        try:
            question = question_text(record["question"])
            answers = record["golden_answers"]
            answers = [str(a) for a in ([answers] if isinstance(answers, str) else answers or [])]
            rows.append(
                make_row(
                    question=question,
                    golden_answers=answers,
                    prompt=policy_messages(question, template),
                    data_source=dataset,
                    split=split,
                    index=index,
                    extra_info={
                        "id": str(record.get("id", index)),
                        "metadata": json.dumps(record.get("metadata"), ensure_ascii=False, default=str),
                    },
                )
            )
        except (DatasetError, KeyError, TypeError) as e:
            raise PrepareError(f"{dataset}/{split} row {index}: {e}") from e
    return rows


def prepare(
    kind: str,
    out: str | Path,
    source: str | None = None,
    datasets: Sequence[str] | None = None,
    per_dataset: int | None = None,
    seed: int = 0,
    template: str = "policy_default",
) -> Path:
    """Write `<out>/<kind>.parquet` (kind: train or test); returns its path."""
    if kind not in ("train", "test"):
        raise PrepareError(f"unknown set {kind!r}: train or test")
    if per_dataset is not None and per_dataset < 1:
        raise PrepareError(f"--per-dataset must be >= 1, got {per_dataset}")
    names = list(datasets or (TRAIN_DATASETS if kind == "train" else TEST_DATASETS))
    src = open_source(source)
    rows: list[dict[str, Any]] = []
    for name in names:
        available = src.splits(name)
        wanted = ("train",) if kind == "train" else TEST_SPLITS
        split = next((s for s in wanted if s in available), None)
        if split is None:
            raise PrepareError(
                f"{name} in {src}: no {' or '.join(wanted)} split (it has {', '.join(available) or 'none'})"
            )
        records = src.load(name, split)
        positions = sample_indices(len(records), per_dataset, seed)
        rows.extend(dataset_rows(records, name, split, positions, template))
        print(f"{name}: {len(positions)} of {len(records)} rows of its {split} split", file=sys.stderr)
    path = write_dataset(rows, Path(out) / f"{kind}.parquet")
    print(f"wrote {len(rows)} rows to {path}", file=sys.stderr)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zerosearch.data.prepare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("kind", choices=("train", "test"), help="the training set or the test sets")
    parser.add_argument("--out", required=True, help="output folder (<out>/<kind>.parquet)")
    parser.add_argument(
        "--source", default=None, help=f"hub repository or local folder (default {HUB_SOURCE})"
    )
    parser.add_argument("--datasets", default=None, help="comma list (default: the paper's for this set)")
    parser.add_argument("--per-dataset", type=int, default=None, help="rows drawn per dataset (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --per-dataset draw")
    parser.add_argument("--template", default="policy_default", help="policy template name or file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] if args.datasets else None
    try:
        prepare(args.kind, args.out, args.source, names, args.per_dataset, args.seed, args.template)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
