"""Checkpoint folders that are either complete or invisible.

Layout under a checkpoint root (verl's)::

    root/
      global_step_10/                      a complete checkpoint (whatever the trainer writes inside)
      global_step_20/
      global_step_30.tmp-4242/             being written by process 4242, or left by a crash: never chosen
      latest_checkpointed_iteration.txt    "20\n": the newest checkpoint that finished, written last

Why: a run killed while saving must not resume from half a checkpoint. So a checkpoint is written into a
staging folder ``global_step_N.tmp-<pid>`` and renamed into place only when every file is in it (a rename
within one file system is atomic), and only then is the marker rewritten, itself atomically (temporary file
plus ``os.replace``). The marker is authoritative; when it is missing (a root written by another tool) or
points to a folder that no longer exists, the newest folder with a complete name is used instead.

Several processes may write into one staging folder (FSDP ranks each saving their shard): one process
creates it with :func:`begin_checkpoint`, hands the path to the others, and calls :func:`commit_checkpoint`
when all of them are done. :func:`write_checkpoint` wraps both for a single writer.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

STEP_PREFIX = "global_step_"
MARKER_FILE = "latest_checkpointed_iteration.txt"
_COMPLETE_NAME = re.compile(rf"^{STEP_PREFIX}(\d+)$")
_STAGING_NAME = re.compile(rf"^{STEP_PREFIX}\d+\.tmp-(\d+)$")


def step_dir(root: str | Path, step: int) -> Path:
    """The folder of the complete checkpoint of ``step`` under ``root``."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"checkpoint step must be a non-negative integer, got {step!r}")
    return Path(root) / f"{STEP_PREFIX}{step}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders under ``root`` as ``(step, path)``, oldest first (never staging ones)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _COMPLETE_NAME.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def _fsync_dir(path: Path) -> None:
    """Persist a directory's entries (renames, new files) so a power loss cannot undo them."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_marker(root: str | Path, step: int) -> Path:
    """Atomically point the marker at ``step``; the checkpoint folder must already be complete."""
    target = step_dir(root, step)
    if not target.is_dir():
        raise FileNotFoundError(f"refusing to mark step {step}: {target} is not a complete checkpoint folder")
    marker = Path(root) / MARKER_FILE
    tmp = marker.with_name(f"{MARKER_FILE}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(f"{step}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, marker)
    _fsync_dir(marker.parent)
    return marker


def read_marker(root: str | Path) -> int | None:
    """The step the marker names, or None when there is no marker or it does not hold a step number."""
    marker = Path(root) / MARKER_FILE
    if not marker.is_file():
        return None
    text = marker.read_text().strip()
    if not text.isdigit():
        logger.warning("%s does not hold a step number (%r); ignoring it", marker, text[:40])
        return None
    return int(text)


def find_latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint to resume from: the marker's folder, else the newest complete folder, else None."""
    marked = read_marker(root)
    if marked is not None:
        folder = step_dir(root, marked)
        if folder.is_dir():
            return folder
        logger.warning(
            "%s names step %d but %s is missing; using the newest complete folder",
            Path(root) / MARKER_FILE,
            marked,
            folder,
        )
    complete = list_checkpoints(root)
    return complete[-1][1] if complete else None


def begin_checkpoint(root: str | Path, step: int) -> Path:
    """Create and return an empty staging folder for ``step``; nothing else will ever choose it."""
    final = step_dir(root, step)
    staging = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if staging.exists():  # left by an earlier attempt of this same process
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def commit_checkpoint(staging: str | Path, root: str | Path, step: int) -> Path:
    """Move a finished staging folder into place as ``global_step_<step>`` and then update the marker.

    An existing folder for the same step (a re-run after a resume) is replaced: it is moved aside first,
    so there is never a moment where a half-written folder carries the complete name.
    """
    staging = Path(staging)
    if not staging.is_dir():
        raise FileNotFoundError(f"staging folder {staging} does not exist")
    final = step_dir(root, step)
    if final.exists():
        old = final.with_name(f"{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old)
    else:
        os.replace(staging, final)
    _fsync_dir(final.parent)
    write_marker(root, step)
    return final


@contextmanager
def write_checkpoint(root: str | Path, step: int) -> Iterator[Path]:
    """Context manager for a single writer: yields a staging folder, commits it if the block succeeds.

    If the block raises, the staging folder is removed and the previous checkpoint stays the latest.
    """
    staging = begin_checkpoint(root, step)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    commit_checkpoint(staging, root, step)


def cleanup_checkpoints(root: str | Path, keep_last: int | None) -> list[Path]:
    """Delete all but the ``keep_last`` newest complete checkpoints; None keeps everything.

    The folder the marker names is never deleted, even when it is not among the newest. Returns the folders
    removed, oldest first.
    """
    if keep_last is None:
        return []
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"keep_last must be a positive integer or None (keep all), got {keep_last!r}")
    marked = read_marker(root)
    complete = list_checkpoints(root)
    removed = []
    for step, folder in complete[:-keep_last]:
        if step == marked:
            continue
        shutil.rmtree(folder)
        removed.append(folder)
    return removed


def remove_stale_staging(root: str | Path) -> list[Path]:
    """Delete staging folders left by crashed runs (any not owned by this process).

    Call it at start-up, before this run saves anything and while no other run writes into ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for entry in sorted(root.iterdir()):
        match = _STAGING_NAME.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and entry.is_dir():
            shutil.rmtree(entry)
            removed.append(entry)
    return removed


def fingerprint_changes(saved: dict, current: dict) -> list[str]:
    """'key: saved -> current' for every setting that differs (a key missing on one side counts)."""
    return [
        f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]
