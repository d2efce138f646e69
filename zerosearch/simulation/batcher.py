"""Dynamic batching: one worker thread turns concurrent requests into batched calls.

HTTP handlers `submit` jobs and await the returned futures. The worker takes the first waiting job, keeps
collecting for at most `max_wait_ms` (or until `max_batch_size` jobs are in hand), runs the whole batch with
one call to `run_batch`, and resolves every job's future. Jobs that arrive while a batch runs wait in the
queue and form the next batch at once. If `run_batch` raises, only that batch's futures get the exception;
the worker goes on with the next batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """Counters over the server's lifetime; exposed at /stats to show that requests were batched."""

    batches: int = 0
    rows: int = 0
    failed_batches: int = 0
    max_batch_rows: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    busy_s: float = 0.0


class DynamicBatcher(Generic[Job, Result]):
    """Collects jobs from many threads/coroutines and runs them in batches on one worker thread.

    `run_batch(jobs) -> results` must return one result per job, in order. `describe(jobs, results)` returns
    (prompt_tokens, completion_tokens) for the log line and the stats.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Job]], Sequence[Result]],
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        describe: Callable[[list[Job], Sequence[Result]], tuple[int, int]] | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.run_batch, self.describe = run_batch, describe
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: queue.Queue[tuple[Job, Future] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> DynamicBatcher[Job, Result]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="dynamic-batcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in flight, fail the jobs still queued, and end the worker."""
        self._stopping = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(RuntimeError("server is shutting down"))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: Job) -> Future:
        if self._stopping:
            raise RuntimeError("server is shutting down")
        fut: Future = Future()
        self._queue.put((job, fut))
        return fut

    def _collect(self) -> list[tuple[Job, Future]] | None:
        """Block for the first job, then gather more until the batch is full or the wait is over."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first] if first[1].set_running_or_notify_cancel() else []
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            timeout = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                # Shutdown requested: run what we hold, then let the loop see the sentinel again.
                self._queue.put(None)
                break
            # A job whose caller gave up (client disconnected) is dropped; a running future can no longer
            # be cancelled, so setting its result later is always allowed.
            if item[1].set_running_or_notify_cancel():
                batch.append(item)
        return batch

    def _loop(self) -> None:
        while not self._stopping:
            batch = self._collect()
            if batch is None:
                return
            if not batch:
                continue
            try:
                self._run(batch)
            except Exception as e:  # any failure fails this batch only, never the worker
                self.stats.failed_batches += 1
                if len(batch) == 1:
                    log.exception("a request failed")
                    batch[0][1].set_exception(e)
                    continue
                # One bad job must not fail its batch-mates: run each alone, so only the bad one fails.
                log.warning("batch of %d request(s) failed (%s); running them one at a time", len(batch), e)
                for item in batch:
                    try:
                        self._run([item])
                    except Exception as alone:
                        log.exception("a request failed")
                        item[1].set_exception(alone)

    def _run(self, batch: list[tuple[Job, Future]]) -> None:
        """Run the batch and hand every job its result (raises, leaving every future unset, on failure)."""
        jobs = [job for job, _ in batch]
        start = time.perf_counter()
        results = self.run_batch(jobs)
        if len(results) != len(jobs):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(jobs)} jobs")
        elapsed = time.perf_counter() - start
        prompt_tokens, completion_tokens = self.describe(jobs, results) if self.describe else (0, 0)
        self._record(len(jobs), prompt_tokens, completion_tokens, elapsed)
        for (_, fut), result in zip(batch, results, strict=True):
            fut.set_result(result)

    def _record(self, rows: int, prompt_tokens: int, completion_tokens: int, elapsed: float) -> None:
        s = self.stats
        s.batches += 1
        s.rows += rows
        s.max_batch_rows = max(s.max_batch_rows, rows)
        s.prompt_tokens += prompt_tokens
        s.completion_tokens += completion_tokens
        s.busy_s += elapsed
        log.info(
            "batch %d: rows=%d prompt_tokens=%d completion_tokens=%d time=%.3fs (%.1f tok/s)",
            s.batches,
            rows,
            prompt_tokens,
            completion_tokens,
            elapsed,
            completion_tokens / elapsed if elapsed > 0 else 0.0,
        )
