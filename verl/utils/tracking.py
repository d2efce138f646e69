"""Experiment tracking: one ``Tracking`` object sends metrics, sample tables and the run config to backends.

Backends (``LOGGERS``; add more with ``@register_logger("name")``):

* ``console``: one compact line per step with the main metrics (the full dict goes to DEBUG logging);
* ``jsonl``: ``<run_dir>/metrics.jsonl``, one JSON object per step, flushed and fsynced on every step so a
  crash loses nothing already logged; tables go to ``<run_dir>/samples.jsonl`` and the config to
  ``<run_dir>/config.json``. Files are appended to, so a resumed run continues the same files;
* ``wandb``: ``wandb.init(project, name, config, dir=run_dir)``; ``WANDB_MODE=offline`` keeps it local;
* ``tensorboard``: scalars and text in ``<run_dir>/tensorboard`` (torch's ``SummaryWriter``).

Secrets never reach a backend: the config is passed through :func:`redact_secrets` first, which replaces
the values of keys that look like credentials (``api_key``, ``token``, ``password``, ``*_key``, ...).
Metric values may be Python numbers, NumPy scalars or one-element tensors; they are converted to plain
Python numbers once, before any backend sees them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

REDACTED = "***REDACTED***"
Scalar = bool | int | float | str

# A key is a secret when its last name part is one of these ("api_key", "serp_api_key", "hf_token") or when
# any part is one of the second set ("password_file", "client_secret_path").
_SECRET_LAST_PARTS = {"key", "apikey", "token", "authorization", "auth"}
_SECRET_ANY_PART = {"password", "passwd", "secret", "secrets", "credentials"}
# Keys ending in "_key"/"_token" that name dataset columns or tokenizer symbols, not credentials: redacting
# them would only hide which column a run read or which token ends a sequence.
_NOT_SECRET = {
    "prompt_key",
    "response_key",
    "reward_fn_key",
    "image_key",
    "video_key",
    "question_key",
    "answer_key",
    "eos_token",
    "bos_token",
    "pad_token",
    "unk_token",
}

# Shown first, in this order, on the console line when present.
CONSOLE_KEYS = (
    "critic/score/mean",
    "critic/rewards/mean",
    "actor/pg_loss",
    "actor/kl_loss",
    "actor/entropy",
    "actor/grad_norm",
    "actor/lr",
    "critic/vf_loss",
    "response_length/mean",
    "env/number_of_actions/mean",
    "search/noise_prob",
    "timing_s/step",
)
_CONSOLE_FALLBACK = 8


def _name_parts(key: str) -> list[str]:
    """Split a key into lowercase parts at ``_ - .``, spaces and camelCase (``apiKey`` -> api, key)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key)
    return [part for part in re.split(r"[_\-.\s]+", spaced.lower()) if part]


def is_secret_key(key: Any) -> bool:
    """Whether a config key names a credential (by name only; values are never inspected)."""
    if not isinstance(key, str):
        return False
    normalized = "_".join(_name_parts(key))
    if normalized in _NOT_SECRET:
        return False
    parts = normalized.split("_")
    return parts[-1] in _SECRET_LAST_PARTS or any(part in _SECRET_ANY_PART for part in parts)


def redact_command_line(argv: Sequence[str]) -> list[str]:
    """``argv`` with the value of every ``key=value`` override whose (last) key part names a credential
    replaced by REDACTED, as in ``trainer.hf_token=***REDACTED***``; Hydra's ``+``/``++``/``~`` prefixes are understood."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and value and is_secret_key(key.lstrip("+~").rsplit(".", 1)[-1]):
            arg = f"{key}={REDACTED}"
        out.append(arg)
    return out


def redact_secrets(config: Any) -> Any:
    """A plain copy of ``config`` (nested mappings and lists) with the values of secret-looking keys replaced.

    Unset secrets (None or "") are kept as they are, so a reader can still see that a key was not given.
    """
    if isinstance(config, Mapping):
        out = {}
        for key, value in config.items():
            if is_secret_key(key) and value not in (None, ""):
                out[key] = REDACTED
            else:
                out[key] = redact_secrets(value)
        return out
    if isinstance(config, Sequence) and not isinstance(config, (str, bytes)):
        return [redact_secrets(item) for item in config]
    return config


def to_scalar(key: str, value: Any) -> Scalar:
    """Convert a metric value to a plain Python bool/int/float/str, or raise naming the metric."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        count = value.size if isinstance(value, np.ndarray) else value.numel()
        if count == 1:
            return value.item()
        raise TypeError(f"metric '{key}' is an array of shape {tuple(value.shape)}; log a scalar")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"metric '{key}' has type {type(value).__name__}; expected a number or a string")


def to_cell(key: str, value: Any) -> Scalar:
    """Convert a table cell like :func:`to_scalar`, but lists and dicts (golden answers) become JSON text."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return to_scalar(key, value)


def _json_safe(value: Any) -> Any:
    """Make NaN/inf strict-JSON writable (as "nan", "inf", "-inf") inside nested containers."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _json_line(record: Mapping[str, Any]) -> str:
    return json.dumps(_json_safe(record), allow_nan=False, ensure_ascii=False, default=str) + "\n"


@dataclass(frozen=True)
class RunInfo:
    """What every backend is told about the run; ``config`` is already redacted."""

    project: str
    experiment: str
    run_dir: Path
    config: dict[str, Any]


class LoggerBackend(ABC):
    """One tracking destination. Backends receive metrics already converted by :func:`to_scalar`."""

    def __init__(self, run: RunInfo) -> None:
        self.run = run

    @abstractmethod
    def log(self, metrics: dict[str, Scalar], step: int) -> None: ...

    @abstractmethod
    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None: ...

    @abstractmethod
    def finish(self) -> None:
        """Flush and close; called once."""


LOGGERS: dict[str, type[LoggerBackend]] = {}


def register_logger(name: str) -> Callable[[type[LoggerBackend]], type[LoggerBackend]]:
    """Class decorator adding a backend to ``LOGGERS`` under ``name``."""

    def add(cls: type[LoggerBackend]) -> type[LoggerBackend]:
        if name in LOGGERS and LOGGERS[name] is not cls:
            raise ValueError(f"tracking backend '{name}' is already registered ({LOGGERS[name].__name__})")
        LOGGERS[name] = cls
        return cls

    return add


def _format_value(value: Scalar) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@register_logger("console")
class ConsoleLogger(LoggerBackend):
    """Prints ``step N | key value | ...`` with the main metrics; the full dict is logged at DEBUG."""

    def log(self, metrics: dict[str, Scalar], step: int) -> None:
        shown = [k for k in CONSOLE_KEYS if k in metrics]
        shown += [k for k in metrics if k.startswith("val/") and k not in shown]
        if not shown:
            shown = list(metrics)[:_CONSOLE_FALLBACK]
        parts = [f"{key} {_format_value(metrics[key])}" for key in shown]
        print(" | ".join([f"step {step}", *parts]), flush=True)
        logger.debug("step %d metrics: %s", step, metrics)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        preview = ""
        if rows:
            cells = ", ".join(f"{col}={str(val)[:80]!r}" for col, val in zip(columns, rows[0], strict=True))
            preview = f"; first: {cells}"
        print(f"[{name}] step {step}: {len(rows)} row(s){preview}", flush=True)

    def finish(self) -> None:
        """Nothing to close: every line is printed and flushed as it is logged."""


@register_logger("jsonl")
class JsonlLogger(LoggerBackend):
    """Appends metrics to metrics.jsonl and table rows to samples.jsonl; writes config.json once."""

    def __init__(self, run: RunInfo) -> None:
        super().__init__(run)
        (run.run_dir / "config.json").write_text(
            json.dumps(_json_safe(run.config), indent=2, ensure_ascii=False, default=str) + "\n"
        )
        # Kept open for the whole run (closed in finish), so each step costs one write, not an open.
        self._metrics = open(run.run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._samples = open(run.run_dir / "samples.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    @staticmethod
    def _write(handle: Any, text: str) -> None:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())

    def log(self, metrics: dict[str, Scalar], step: int) -> None:
        self._write(self._metrics, _json_line({"step": step, **metrics}))

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        records = ({"step": step, "table": name, "row": dict(zip(columns, row, strict=True))} for row in rows)
        text = "".join(_json_line(record) for record in records)
        self._write(self._samples, text)

    def finish(self) -> None:
        self._metrics.close()
        self._samples.close()


@register_logger("wandb")
class WandbLogger(LoggerBackend):
    """A wandb run in ``run_dir``; the mode (online/offline/disabled) comes from ``WANDB_MODE``."""

    def __init__(self, run: RunInfo) -> None:
        super().__init__(run)
        import wandb

        self._wandb = wandb
        # wandb records the process's command line among the run's metadata: a secret passed as a Hydra
        # override (`+x.api_key=...`) would be stored there in clear, so it sees a redacted command line.
        saved_argv = sys.argv[:]
        sys.argv[:] = redact_command_line(saved_argv)
        try:
            self._run = wandb.init(
                project=run.project,
                name=run.experiment,
                config=run.config,
                dir=str(run.run_dir),
                mode=os.environ.get("WANDB_MODE") or None,
            )
        finally:
            sys.argv[:] = saved_argv

    def log(self, metrics: dict[str, Scalar], step: int) -> None:
        self._run.log(metrics, step=step)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self._run.log({name: self._wandb.Table(columns=columns, data=rows)}, step=step)

    def finish(self) -> None:
        self._run.finish()
        # finish() returns once the service has taken the run's exit, but the service may still hold the
        # tail of the run's log (run-*.wandb) in its buffers; teardown waits for it to close its files, so
        # the run is complete on disk when training returns (atexit does the same, but not reliably in
        # processes that Ray or multiprocessing end).
        self._wandb.teardown()


def _markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A markdown table (what TensorBoard's text plugin renders) with cell pipes and newlines escaped."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@register_logger("tensorboard")
class TensorboardLogger(LoggerBackend):
    """Numeric metrics as scalars, tables and the config as text, in ``<run_dir>/tensorboard``."""

    def __init__(self, run: RunInfo) -> None:
        super().__init__(run)
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(run.run_dir / "tensorboard"))
        config = json.dumps(_json_safe(run.config), indent=2, ensure_ascii=False, default=str)
        # Indented by four spaces so the text plugin shows it as a code block.
        self._writer.add_text("config", "\n".join("    " + line for line in config.splitlines()), 0)

    def log(self, metrics: dict[str, Scalar], step: int) -> None:
        for key, value in metrics.items():
            # TensorBoard scalars are numbers; string metrics are left to the other backends.
            if not isinstance(value, str):
                self._writer.add_scalar(key, float(value), step)
        self._writer.flush()

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self._writer.add_text(name, _markdown_table(columns, rows), step)
        self._writer.flush()

    def finish(self) -> None:
        self._writer.close()


class Tracking:
    """Sends every ``log`` / ``log_table`` call to each requested backend.

    Args:
        project: project name (wandb project).
        experiment: run name (wandb run name).
        backends: names from ``LOGGERS``, e.g. ``["console", "jsonl", "wandb"]``.
        run_dir: folder for this run's files (created if missing).
        config: the run's configuration; logged with secrets redacted.
    """

    def __init__(
        self,
        project: str,
        experiment: str,
        backends: Sequence[str] | str,
        run_dir: str | Path,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        names = [backends] if isinstance(backends, str) else list(backends)
        unknown = [name for name in names if name not in LOGGERS]
        if unknown:
            raise ValueError(f"unknown tracking backend(s) {unknown}; known: {sorted(LOGGERS)}")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"tracking backend(s) {repeated} listed more than once")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run = RunInfo(project, experiment, run_dir, redact_secrets(dict(config or {})))
        self.backends: dict[str, LoggerBackend] = {}
        self._finished = False
        for name in names:
            try:
                self.backends[name] = LOGGERS[name](self.run)
            except Exception as e:
                self.finish()
                raise RuntimeError(f"tracking backend '{name}' failed to start: {e}") from e

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log one step's metrics (numbers, NumPy scalars, one-element tensors or strings)."""
        self._check_step(step)
        plain = {str(key): to_scalar(str(key), value) for key, value in metrics.items()}
        for backend in self.backends.values():
            backend.log(plain, step)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        """Log a table (e.g. sample trajectories); every row needs one value per column."""
        self._check_step(step)
        columns = [str(c) for c in columns]
        plain_rows = []
        for i, row in enumerate(rows):
            if len(row) != len(columns):
                raise ValueError(f"table '{name}': row {i} has {len(row)} values for {len(columns)} columns")
            plain_rows.append([to_cell(f"{name}[{i}].{col}", v) for col, v in zip(columns, row, strict=True)])
        for backend in self.backends.values():
            backend.log_table(name, columns, plain_rows, step)

    def finish(self) -> None:
        """Close every backend once; later calls do nothing."""
        if self._finished:
            return
        self._finished = True
        for name, backend in self.backends.items():
            try:
                backend.finish()
            except Exception:  # one failing backend must not keep the others from closing their files
                logger.exception("tracking backend '%s' failed to finish", name)

    def _check_step(self, step: int) -> None:
        if self._finished:
            raise RuntimeError("Tracking.finish() was already called")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()
