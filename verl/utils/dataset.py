"""The RL prompt dataset and a stateful, seeded batch loader.

``RLHFDataset`` reads one or more parquet files in the question format of docs/design.md §3 (``data_source``,
``prompt`` as chat messages, ``reward_model.ground_truth``, optional ``question``, ``golden_answers`` and
``extra_info.index``), checks the structure this engine relies on, and tokenizes every prompt once, up front,
so prompts over ``max_prompt_length`` are found at load time (and errors name the file, the row and the
field) rather than in the middle of training. The engine knows nothing of the domain: ``ground_truth`` is
passed through as it is for the reward function configured in the trainer.

``StatefulBatchLoader`` yields batches as dicts of lists (the trainer builds its DataProto from them). Its
order depends only on ``(seed, epoch)``, and its ``state_dict`` holds the epoch and the position in it, so a
resumed run continues with exactly the batches the interrupted run would have seen. No worker processes:
items are already tokenized, so batching is a list lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

OverlongPolicy = Literal["error", "filter", "truncate_left"]
OVERLONG_POLICIES = ("error", "filter", "truncate_left")
# Prompts are encoded in chunks: one call per chunk is much faster than one per prompt, and a chunk
# bounds the memory of the intermediate encodings.
_ENCODE_CHUNK = 1024


class DatasetError(ValueError):
    """A dataset file or row the engine cannot use; the message names the file, the row and the field."""


@dataclass
class RLHFItem:
    """One prompt, tokenized, with the raw fields the reward function and the agent loop need.

    ``index`` is the row's ``extra_info.index`` when present (else its row number in its file); indices
    repeat across files and sources, so they never serve as GRPO group ids.
    """

    prompt_token_ids: list[int]
    data_source: str
    ground_truth: Any
    index: int
    question: str | None = None
    golden_answers: list[str] | None = None
    raw_prompt: list[dict[str, str]] = field(default_factory=list)
    extra_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetStats:
    """What loading did: rows read, kept, skipped as malformed, dropped and shortened by the overlong-prompt
    policy; ``skipped_errors`` holds the message of every skipped row."""

    rows: int = 0
    kept: int = 0
    skipped: int = 0
    filtered: int = 0
    truncated: int = 0
    longest_prompt: int = 0
    skipped_errors: list[str] = field(default_factory=list, repr=False)


def _row_problem(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(field, message)`` for the first structural problem in a row, or None."""
    source = row.get("data_source")
    if not isinstance(source, str) or not source:
        return "data_source", "missing or not a non-empty string"
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        return "prompt", "missing or not a non-empty list of chat messages"
    for i, message in enumerate(prompt):
        if not isinstance(message, Mapping):
            return f"prompt[{i}]", f"expected a {{role, content}} message, got {type(message).__name__}"
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                return f"prompt[{i}].{key}", "missing or not a string"
    reward = row.get("reward_model")
    if not isinstance(reward, Mapping):
        return "reward_model", "missing or not a mapping"
    if reward.get("ground_truth") is None:
        return "reward_model.ground_truth", "missing"
    question = row.get("question")
    if question is not None and not isinstance(question, str):
        return "question", f"expected a string, got {type(question).__name__}"
    answers = row.get("golden_answers")
    if answers is not None and not (isinstance(answers, list) and all(isinstance(a, str) for a in answers)):
        return "golden_answers", "expected a list of strings"
    extra = row.get("extra_info")
    if extra is not None and not isinstance(extra, Mapping):
        return "extra_info", f"expected a mapping, got {type(extra).__name__}"
    return None


def _read_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a corrupt file; name the file either way
        raise DatasetError(f"{path}: not a readable parquet file ({e})") from e


class RLHFDataset(Sequence[RLHFItem]):
    """Prompts from parquet files, validated and tokenized at construction.

    Args:
        files: one path or a list of paths; rows keep file order, then row order.
        tokenizer: a Hugging Face tokenizer.
        max_prompt_length: the longest prompt, in tokens, the rollout accepts.
        overlong_prompts: what to do with a longer prompt: ``"error"`` (fail, naming it), ``"filter"`` (drop
            it) or ``"truncate_left"`` (keep its last ``max_prompt_length`` tokens, which keeps the
            generation prompt at the end).
        use_chat_template: render ``prompt`` with the tokenizer's chat template (``add_generation_prompt``);
            False joins the message contents with newlines as raw text; None (default) uses the template
            when the tokenizer has one.
        chat_template_kwargs: extra arguments for ``apply_chat_template`` (e.g. ``enable_thinking``).
        row_check: the domain's own row check, run after the engine's structural one: ``row -> None`` for a
            good row or ``(field, message)`` for the first problem (e.g. zerosearch.data.schema.row_problem,
            which also wants non-empty questions and golden answers).
        skip_bad_rows: drop malformed rows (counted in ``stats.skipped``, each message kept, a warning
            logged) instead of failing on the first one. Overlong prompts follow ``overlong_prompts``.
    """

    def __init__(
        self,
        files: str | Path | Sequence[str | Path],
        tokenizer: Any,
        max_prompt_length: int,
        overlong_prompts: OverlongPolicy = "error",
        use_chat_template: bool | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        row_check: Callable[[Mapping[str, Any]], tuple[str, str] | None] | None = None,
        skip_bad_rows: bool = False,
    ) -> None:
        paths = [Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]
        if not paths:
            raise DatasetError("no dataset files given")
        if type(max_prompt_length) is not int or max_prompt_length < 1:  # bool is an int subclass: refused
            raise DatasetError(f"max_prompt_length must be a positive integer, got {max_prompt_length!r}")
        if overlong_prompts not in OVERLONG_POLICIES:
            raise DatasetError(
                f"overlong_prompts must be one of {OVERLONG_POLICIES}, got {overlong_prompts!r}"
            )
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if use_chat_template is None:
            use_chat_template = has_template
        elif use_chat_template and not has_template:
            raise DatasetError("use_chat_template=True but the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.max_prompt_length = max_prompt_length
        self.overlong_prompts = overlong_prompts
        self.use_chat_template = use_chat_template
        self._template_kwargs = dict(chat_template_kwargs or {})
        self.row_check, self.skip_bad_rows = row_check, skip_bad_rows
        self.stats = DatasetStats()
        self.items: list[RLHFItem] = []
        for path in paths:
            self._load_file(path)
        if self.stats.skipped:
            logger.warning(
                "skipped %d malformed row(s) of %d; first: %s",
                self.stats.skipped,
                self.stats.rows,
                self.stats.skipped_errors[0],
            )
        if not self.items:
            raise DatasetError(f"{', '.join(map(str, paths))}: no prompts left (stats: {self.stats})")
        logger.info("loaded %d prompt(s) from %d file(s): %s", len(self.items), len(paths), self.stats)

    def _render(self, messages: list[dict[str, str]]) -> str:
        return render_prompt(self.tokenizer, messages, self.use_chat_template, self._template_kwargs)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        # A rendered chat template already holds the model's special tokens (BOS included, if any); raw
        # text gets them from the tokenizer as it would in any other use.
        add_special = not self.use_chat_template
        ids: list[list[int]] = []
        for start in range(0, len(texts), _ENCODE_CHUNK):
            chunk = texts[start : start + _ENCODE_CHUNK]
            ids.extend(list(x) for x in self.tokenizer(chunk, add_special_tokens=add_special)["input_ids"])
        return ids

    def _load_file(self, path: Path) -> None:
        rows, numbers, texts = [], [], []
        for i, row in enumerate(_read_rows(path)):
            self.stats.rows += 1
            problem = _row_problem(row) or (self.row_check(row) if self.row_check else None)
            if problem is not None:
                message = f"{path}: row {i}: field '{problem[0]}': {problem[1]}"
                if not self.skip_bad_rows:
                    raise DatasetError(f"{message} (or set skip_bad_rows to drop such rows)")
                self.stats.skipped += 1
                self.stats.skipped_errors.append(message)
                continue
            rows.append(row)
            numbers.append(i)
            texts.append(self._render(row["prompt"]))
        for i, row, ids in zip(numbers, rows, self._encode(texts), strict=True):
            self.stats.longest_prompt = max(self.stats.longest_prompt, len(ids))
            if len(ids) > self.max_prompt_length:
                if self.overlong_prompts == "error":
                    raise DatasetError(
                        f"{path}: row {i}: field 'prompt': {len(ids)} tokens > max_prompt_length="
                        f"{self.max_prompt_length} (raise it, or set overlong_prompts to 'filter' or "
                        "'truncate_left')"
                    )
                if self.overlong_prompts == "filter":
                    self.stats.filtered += 1
                    continue
                ids = ids[-self.max_prompt_length :]
                self.stats.truncated += 1
            self.items.append(self._item(row, ids, i))
            self.stats.kept += 1

    @staticmethod
    def _item(row: dict[str, Any], ids: list[int], row_number: int) -> RLHFItem:
        extra = dict(row.get("extra_info") or {})
        index = extra.get("index")
        return RLHFItem(
            prompt_token_ids=ids,
            data_source=row["data_source"],
            ground_truth=row["reward_model"]["ground_truth"],
            index=index if isinstance(index, int) and not isinstance(index, bool) else row_number,
            question=row.get("question"),
            golden_answers=row.get("golden_answers"),
            raw_prompt=[{"role": m["role"], "content": m["content"]} for m in row["prompt"]],
            extra_info=extra,
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> RLHFItem:  # type: ignore[override]
        return self.items[i]


def render_prompt(
    tokenizer: Any,
    messages: list[dict[str, str]],
    use_chat_template: bool,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """A prompt's text: the chat template with the generation prompt added, or the contents joined by newlines."""
    if use_chat_template:
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **dict(chat_template_kwargs or {})
        )
    return "\n".join(message["content"] for message in messages)


def encode_prompt(
    tokenizer: Any, messages: list[dict[str, str]], use_chat_template: bool | None = None
) -> list[int]:
    """One prompt's token ids exactly as RLHFDataset makes them (use_chat_template None: when the tokenizer has
    a chat template); for prompts that come from elsewhere than a file (zerosearch.infer)."""
    if use_chat_template is None:
        use_chat_template = bool(getattr(tokenizer, "chat_template", None))
    text = render_prompt(tokenizer, messages, use_chat_template)
    # A rendered chat template already holds the model's special tokens; raw text gets them from the tokenizer.
    return list(tokenizer(text, add_special_tokens=not use_chat_template)["input_ids"])


def collate(items: Sequence[RLHFItem]) -> dict[str, list[Any]]:
    """Turn items into one list per field (``prompt_token_ids``, ``data_source``, ...), in item order."""
    return {f.name: [getattr(item, f.name) for item in items] for f in fields(RLHFItem)}


class StatefulBatchLoader:
    """Seeded, resumable batches over a sized dataset.

    Each epoch visits the dataset in the order ``permutation(seed, epoch)`` (or in file order without
    shuffling). ``drop_last`` drops the short final batch of each epoch (training); validation must keep it
    (see :func:`validation_loader`). Iterating yields the remaining batches of the current epoch; when the
    epoch is used up, the next iteration (or :meth:`next_batch`) starts the next epoch.

    The state is ``(epoch, position)``, where position counts samples, not batches, so a run may resume
    with a different batch size and still continue at the same sample.
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        collate_fn: Callable[[list[Any]], Any] = collate,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if len(dataset) == 0:
            raise ValueError("cannot batch an empty dataset")
        if drop_last and batch_size > len(dataset):
            raise ValueError(
                f"batch_size={batch_size} is larger than the dataset ({len(dataset)} rows) with drop_last: "
                "no batch would ever be produced"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.collate_fn = collate_fn
        self.epoch = 0
        self.position = 0
        self._order_epoch = -1
        self._order = np.arange(0)

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(len(self.dataset), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def _epoch_end(self) -> int:
        n = len(self.dataset)
        return n - n % self.batch_size if self.drop_last else n

    def _epoch_order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            n = len(self.dataset)
            # A generator seeded from (seed, epoch) alone: the order of epoch e never depends on how many
            # draws earlier epochs made, which is what makes a mid-run resume exact.
            rng = np.random.default_rng([self.seed, self.epoch])
            self._order = rng.permutation(n) if self.shuffle else np.arange(n)
            self._order_epoch = self.epoch
        return self._order

    def _roll_if_done(self) -> None:
        if self.position >= self._epoch_end():
            self.epoch += 1
            self.position = 0

    def _take(self) -> Any:
        indices = self._epoch_order()[self.position : min(self.position + self.batch_size, self._epoch_end())]
        self.position += len(indices)
        return self.collate_fn([self.dataset[int(i)] for i in indices])

    def next_batch(self) -> Any:
        """The next batch, starting the next epoch when the current one is used up."""
        self._roll_if_done()
        return self._take()

    def __iter__(self) -> Iterator[Any]:
        self._roll_if_done()
        while self.position < self._epoch_end():
            yield self._take()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly here (plain ints and bools: JSON- and torch.save-safe)."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_samples": len(self.dataset),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved state; refuses one whose order would differ (other seed, data or shuffle)."""
        for key in ("seed", "shuffle", "num_samples"):
            current = self.state_dict()[key]
            if state.get(key) != current:
                raise ValueError(
                    f"loader state has {key}={state.get(key)!r} but this loader has {key}={current!r}; "
                    "resuming would not continue the same data order"
                )
        epoch, position = state.get("epoch"), state.get("position")
        if not (isinstance(epoch, int) and epoch >= 0 and isinstance(position, int) and position >= 0):
            raise ValueError(
                f"loader state needs non-negative integers epoch and position, got {epoch!r}, {position!r}"
            )
        if position > len(self.dataset):
            raise ValueError(f"loader state position={position} exceeds the dataset size {len(self.dataset)}")
        self.epoch, self.position = epoch, position


def validation_loader(
    dataset: Sequence[Any], batch_size: int, collate_fn: Callable[[list[Any]], Any] = collate
) -> StatefulBatchLoader:
    """A loader over every row once, in file order, keeping the final partial batch."""
    return StatefulBatchLoader(dataset, batch_size, shuffle=False, drop_last=False, collate_fn=collate_fn)
