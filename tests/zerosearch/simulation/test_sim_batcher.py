"""DynamicBatcher on real threads: batch sizes, failure isolation, shutdown."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from zerosearch.simulation.batcher import DynamicBatcher


class Recorder:
    """A batch function that upper-cases its jobs, records batch sizes and fails on the job "boom"."""

    def __init__(self):
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, jobs: list[str]) -> list[str]:
        self.release.wait(timeout=10)
        self.sizes.append(len(jobs))
        if "boom" in jobs:
            raise RuntimeError("generation exploded")
        return [job.upper() for job in jobs]


def test_waiting_jobs_run_together_up_to_the_batch_size():
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch_size=4, max_wait_ms=0).start()
    run.release.clear()  # hold the worker inside its first batch while ten more jobs queue up
    first = batcher.submit("first")
    futures = [batcher.submit(f"job{i}") for i in range(10)]
    run.release.set()
    assert first.result(timeout=10) == "FIRST"
    assert [f.result(timeout=10) for f in futures] == [f"JOB{i}" for i in range(10)]
    batcher.stop()
    assert sum(run.sizes) == 11
    assert max(run.sizes) == 4
    assert batcher.stats.batches == len(run.sizes) and batcher.stats.max_batch_rows == 4


def test_a_failing_request_fails_alone_never_its_batch_mates_and_the_worker_lives_on():
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch_size=2, max_wait_ms=200).start()
    mate, bad = batcher.submit("batch-mate"), batcher.submit("boom")
    assert mate.result(timeout=10) == "BATCH-MATE"  # rerun alone after the shared batch failed
    with pytest.raises(RuntimeError, match="generation exploded"):
        bad.result(timeout=10)
    assert run.sizes == [2, 1, 1]
    assert batcher.submit("later").result(timeout=10) == "LATER"
    assert batcher.alive
    assert batcher.stats.failed_batches == 1 and batcher.stats.batches == 2
    batcher.stop()


def test_a_cancelled_job_is_skipped():
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch_size=8, max_wait_ms=0).start()
    run.release.clear()
    blocker = batcher.submit("blocker")
    cancelled: Future = batcher.submit("gone")
    assert cancelled.cancel()
    kept = batcher.submit("kept")
    run.release.set()
    assert blocker.result(timeout=10) == "BLOCKER"
    assert kept.result(timeout=10) == "KEPT"
    batcher.stop()
    assert batcher.stats.rows == 2


def test_stop_fails_jobs_that_never_ran():
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch_size=1, max_wait_ms=0).start()
    run.release.clear()
    running = batcher.submit("running")
    queued = [batcher.submit(f"q{i}") for i in range(3)]
    threading.Timer(0.2, run.release.set).start()
    batcher.stop()
    assert running.result(timeout=10) == "RUNNING"
    for fut in queued:
        with pytest.raises(RuntimeError, match="shutting down"):
            fut.result(timeout=10)
    with pytest.raises(RuntimeError, match="shutting down"):
        batcher.submit("late")
