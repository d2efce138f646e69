"""Continuous batching: one worker thread decodes every request in flight as one batch.

HTTP handlers `submit` jobs and await the returned futures. The worker runs the engine's decode loop
(`serve(source, max_batch_size)`, i.e. `GenerationEngine.serve`) with this batcher as its source: whenever
the running batch has room, the loop takes the jobs waiting in the queue and they join it at its next step,
and each job's future is resolved the step its row ends. So a short request never waits for a long one, and a
client's next request joins the batch that is already running instead of waiting for it to drain. When
nothing runs, the first job is awaited and more are collected for at most `max_wait_ms`, so a burst is
prefilled together.

Failures: the engine fails the jobs it cannot run, alone (`fail`); if its loop itself raises, the jobs in
flight fail and the worker starts the loop again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


@dataclass
class BatchStats:
    """Counters over the server's lifetime; exposed at /stats.

    `steps` decode steps ran with `row_steps` rows in all (so `row_steps / steps` rows per step on average,
    at most `max_batch_rows`); `busy_s` is the time during which some row was decoding.
    """

    steps: int = 0
    row_steps: int = 0
    rows: int = 0
    failed_rows: int = 0
    max_batch_rows: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    busy_s: float = 0.0


class Engine(Protocol[Job, Result]):
    def serve(self, source: ContinuousBatcher[Job, Result], max_rows: int) -> None: ...


class ContinuousBatcher(Generic[Job, Result]):
    """Feeds jobs submitted from many threads/coroutines to `engine.serve`, which runs on one worker thread.

    `describe(job, result)` returns (prompt_tokens, completion_tokens) for the stats.
    """

    def __init__(
        self,
        engine: Engine[Job, Result],
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        describe: Callable[[Job, Result], tuple[int, int]] | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.engine, self.describe = engine, describe
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: queue.Queue[tuple[Job, Future] | None] = queue.Queue()
        self._in_flight: dict[int, tuple[Job, Future]] = {}  # id(job) -> (job, its future)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False  # the shutdown sentinel was taken: hand out no more jobs
        self._busy_since: float | None = None
        # (time, steps, row_steps, finished rows, completion tokens) at the last progress line
        self._logged = (time.monotonic(), 0, 0, 0, 0)

    def start(self) -> ContinuousBatcher[Job, Result]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="continuous-batcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Let the rows in flight finish, fail the jobs still queued, and end the worker."""
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

    # The engine's side (called on the worker thread) -----------------------------------------------------
    def take(self, room: int, idle: bool) -> list[Job] | None:
        """Up to `room` waiting jobs. `idle`: block for the first, then collect for at most max_wait_ms.
        None once shutdown was asked (the rows in flight still finish)."""
        if self._stopping:
            self._closed = True
        if self._closed:
            return None
        if idle:
            self._mark_idle()
            first = self._queue.get()
            self._busy_since = time.monotonic()
            if first is None:
                self._closed = True
                return None
            items = [first]
            deadline = time.monotonic() + self.max_wait_s
        else:
            items, deadline = [], 0.0
        while len(items) < room:
            timeout = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._closed = True
                break
            items.append(item)
        jobs = []
        for job, fut in items:
            # A job whose caller gave up (client disconnected) is dropped; a running future can no longer
            # be cancelled, so setting its result later is always allowed.
            if fut.set_running_or_notify_cancel():
                self._in_flight[id(job)] = (job, fut)
                jobs.append(job)
        self.stats.rows += len(jobs)
        return jobs

    def finish(self, job: Job, result: Result) -> None:
        _, fut = self._in_flight.pop(id(job))
        if self.describe is not None:
            prompt_tokens, completion_tokens = self.describe(job, result)
            self.stats.prompt_tokens += prompt_tokens
            self.stats.completion_tokens += completion_tokens
        fut.set_result(result)

    def fail(self, job: Job, error: Exception) -> None:
        _, fut = self._in_flight.pop(id(job))
        self.stats.failed_rows += 1
        log.error("a request failed: %s", error, exc_info=error)
        fut.set_exception(error)

    def step(self, rows: int) -> None:
        s = self.stats
        s.steps += 1
        s.row_steps += rows
        s.max_batch_rows = max(s.max_batch_rows, rows)
        now = time.monotonic()
        if now - self._logged[0] >= LOG_EVERY_S:
            self._log_progress(now)

    def _log_progress(self, now: float) -> None:
        """One INFO line per LOG_EVERY_S while decoding: what was done since the last one."""
        s, (then, steps, row_steps, rows, tokens) = self.stats, self._logged
        if s.steps > steps:
            log.info(
                "%.0f s: %d request(s) finished, %d tokens (%.1f tok/s), %d steps of %.1f rows on average",
                now - then,
                s.rows - rows - len(self._in_flight),
                s.completion_tokens - tokens,
                (s.completion_tokens - tokens) / (now - then),
                s.steps - steps,
                (s.row_steps - row_steps) / (s.steps - steps),
            )
        self._logged = (now, s.steps, s.row_steps, s.rows - len(self._in_flight), s.completion_tokens)

    # -----------------------------------------------------------------------------------------------------
    def _mark_idle(self) -> None:
        if self._busy_since is not None:
            self.stats.busy_s += time.monotonic() - self._busy_since
            self._busy_since = None

    def _loop(self) -> None:
        while True:
            try:
                self.engine.serve(self, self.max_batch_size)
            except Exception as err:  # the loop itself broke: its jobs fail, the worker goes on
                log.exception(
                    "the decode loop failed; failing the %d request(s) in flight", len(self._in_flight)
                )
                for job in list(self._in_flight):
                    self.fail(self._in_flight[job][0], err)
            self._mark_idle()
            if self._closed:
                return
