"""The question-dataset format (docs/design.md §3): parquet, one row per question.

Columns, compatible with the public ZeroSearch / Search-R1 files:

- `data_source` (str): where the question comes from, e.g. "nq" or "toyworld_two_hop".
- `prompt` (list of chat messages `{role, content}`): the instruction template already filled in.
- `ability` (str): a free-form task tag, e.g. "fact-reasoning".
- `reward_model` = `{style: "rule", ground_truth: {target: [answers]}}`.
- `extra_info` = `{split, index}` (more keys are allowed, e.g. the toy world's question type).
- `question` (str) and `golden_answers` (list of str).

Every reader goes through `read_dataset`, which validates each row and names the file, the row index and
the field of the first problem, so a malformed file fails at load time instead of deep inside training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info", "question", "golden_answers")
REWARD_STYLE = "rule"


class DatasetError(ValueError):
    """A dataset file or row that does not follow the format; the message names file, row and field."""


class DatasetRows(list):
    """The rows `read_dataset` returns: a plain list of dicts plus what was skipped.

    `skipped` counts the rows dropped with `skip_invalid=True`; `errors` holds one message per dropped row.
    """

    def __init__(self, rows: Sequence[dict] = (), skipped: int = 0, errors: Sequence[str] = ()):
        super().__init__(rows)
        self.skipped = skipped
        self.errors = list(errors)


def make_row(
    *,
    question: str,
    golden_answers: Sequence[str],
    prompt: Sequence[dict[str, str]],
    data_source: str,
    split: str,
    index: int,
    ability: str = "fact-reasoning",
    extra_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one dataset row (validated) from its parts.

    `extra_info` adds keys beside `split` and `index`; it may not override them.
    """
    extra = {"split": split, "index": int(index)}
    for key, value in (extra_info or {}).items():
        if key in extra:
            raise DatasetError(f"make_row: extra_info may not override '{key}'")
        extra[key] = value
    row = {
        "data_source": data_source,
        "prompt": [{"role": m["role"], "content": m["content"]} for m in prompt],
        "ability": ability,
        "reward_model": {"style": REWARD_STYLE, "ground_truth": {"target": list(golden_answers)}},
        "extra_info": extra,
        "question": question,
        "golden_answers": list(golden_answers),
    }
    problem = row_problem(row)
    if problem is not None:
        field, message = problem
        raise DatasetError(f"make_row: field '{field}': {message}")
    return row


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_prompt(prompt: Any) -> tuple[str, str] | None:
    if not isinstance(prompt, list):
        return "prompt", f"expected a list of chat messages, got {type(prompt).__name__}"
    if not prompt:
        return "prompt", "is empty"
    for i, message in enumerate(prompt):
        if not isinstance(message, dict):
            return f"prompt[{i}]", f"expected a {{role, content}} message, got {type(message).__name__}"
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                return f"prompt[{i}].{key}", "missing or not a string"
        if not message["content"].strip():
            return f"prompt[{i}].content", "is empty"
    return None


def _check_answers(field: str, answers: Any) -> tuple[str, str] | None:
    if not _is_str_list(answers):
        return field, f"expected a list of strings, got {type(answers).__name__}"
    if not answers:
        return field, "is empty"
    if any(not a.strip() for a in answers):
        return field, "holds an empty answer"
    return None


def row_problem(row: Any) -> tuple[str, str] | None:
    """Return `(field, message)` for the first problem in `row`, or None when the row is valid."""
    if not isinstance(row, dict):
        return "<row>", f"expected a mapping, got {type(row).__name__}"
    for column in COLUMNS:
        if column not in row or row[column] is None:
            return column, "missing"
    for column in ("data_source", "ability", "question"):
        if not isinstance(row[column], str):
            return column, f"expected a string, got {type(row[column]).__name__}"
    if not row["question"].strip():
        return "question", "is empty"
    problem = _check_prompt(row["prompt"])
    if problem is not None:
        return problem
    problem = _check_answers("golden_answers", row["golden_answers"])
    if problem is not None:
        return problem
    reward = row["reward_model"]
    if not isinstance(reward, dict):
        return "reward_model", f"expected a mapping, got {type(reward).__name__}"
    if reward.get("style") != REWARD_STYLE:
        return "reward_model.style", f"expected '{REWARD_STYLE}', got {reward.get('style')!r}"
    truth = reward.get("ground_truth")
    if not isinstance(truth, dict):
        return "reward_model.ground_truth", "missing or not a mapping"
    problem = _check_answers("reward_model.ground_truth.target", truth.get("target"))
    if problem is not None:
        return problem
    extra = row["extra_info"]
    if not isinstance(extra, dict):
        return "extra_info", f"expected a mapping, got {type(extra).__name__}"
    if not isinstance(extra.get("split"), str):
        return "extra_info.split", "missing or not a string"
    index = extra.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        return "extra_info.index", "missing or not an integer"
    return None


def write_dataset(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Validate `rows` and write them as parquet; the same rows always give the same bytes.

    Columns come in `COLUMNS` order (then any extra columns, sorted) so the file layout does not depend
    on the order of keys in the first row.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not rows:
        raise DatasetError(f"{path}: refusing to write an empty dataset")
    for i, row in enumerate(rows):
        problem = row_problem(row)
        if problem is not None:
            raise DatasetError(f"{path}: row {i}: field '{problem[0]}': {problem[1]}")
    extra_columns = sorted(set().union(*(row.keys() for row in rows)) - set(COLUMNS))
    names = list(COLUMNS) + extra_columns
    table = pa.Table.from_pylist([{name: row.get(name) for name in names} for row in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


def read_dataset(path: str | Path, skip_invalid: bool = False) -> DatasetRows:
    """Read and validate a dataset parquet file.

    A malformed row raises `DatasetError` naming the file, the row index and the field. With
    `skip_invalid=True` bad rows are dropped instead; the result's `skipped` says how many, and a warning
    is logged.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: dataset file not found")
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file; name the file either way
        raise DatasetError(f"{path}: not a readable parquet file ({e})") from e
    good: list[dict] = []
    errors: list[str] = []
    for i, row in enumerate(table.to_pylist()):
        problem = row_problem(row)
        if problem is None:
            good.append(row)
            continue
        message = f"{path}: row {i}: field '{problem[0]}': {problem[1]}"
        if not skip_invalid:
            raise DatasetError(message)
        errors.append(message)
    if errors:
        logger.warning(
            "%s: skipped %d invalid row(s) of %d; first: %s", path, len(errors), table.num_rows, errors[0]
        )
    return DatasetRows(good, skipped=len(errors), errors=errors)
