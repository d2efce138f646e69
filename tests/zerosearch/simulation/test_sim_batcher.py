"""ContinuousBatcher on real threads, driving a step-by-step stand-in engine: joining a running batch,
answers as rows end, failure isolation, a crashed loop, cancellation, shutdown."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from zerosearch.simulation.batcher import ContinuousBatcher


class StepEngine:
    """Decodes jobs "name:steps" one step at a time: a job ends after its steps with result NAME (steps 0: once
    `release` is set); "boom" is
    failed alone at admission; while `hold` is clear the loop waits before each step; `crash_once` makes the
    loop raise once at its first step (with its rows in flight)."""

    def __init__(self):
        self.hold = threading.Event()
        self.hold.set()
        self.release = threading.Event()
        self.step_rows: list[list[str]] = []  # the jobs of every step
        self.crash_once = False

    def serve(self, source, max_rows: int) -> None:
        active: dict[str, int] = {}
        closing = False
        while True:
            if not closing and len(active) < max_rows:
                taken = source.take(max_rows - len(active), not active)
                if taken is None:
                    closing = True
                for job in taken or []:
                    if job == "boom":
                        source.fail(job, RuntimeError("prefill exploded"))
                    else:
                        active[job] = int(job.split(":")[1])
            if not active:
                if closing:
                    return
                continue
            self.hold.wait(timeout=10)
            if self.crash_once:
                self.crash_once = False
                raise RuntimeError("the loop broke")
            source.step(len(active))
            self.step_rows.append(sorted(active))
            for job in list(active):
                active[job] -= 1
                if active[job] == 0 or (active[job] < 0 and self.release.is_set()):
                    del active[job]
                    source.finish(job, job.split(":")[0].upper())


def test_jobs_that_arrive_while_a_batch_runs_join_it_up_to_the_batch_size():
    engine = StepEngine()
    batcher = ContinuousBatcher(engine, max_batch_size=3, max_wait_ms=0).start()
    engine.hold.clear()  # the worker holds the first job at its first step while four more queue up
    first = batcher.submit("first:3")
    later = [batcher.submit(f"job{i}:2") for i in range(4)]
    engine.hold.set()
    assert first.result(timeout=10) == "FIRST"
    assert [f.result(timeout=10) for f in later] == [f"JOB{i}" for i in range(4)]
    batcher.stop()
    assert max(len(rows) for rows in engine.step_rows) == 3
    assert batcher.stats.max_batch_rows == 3 and batcher.stats.rows == 5
    assert batcher.stats.row_steps == 3 + 4 * 2 and batcher.stats.steps == len(engine.step_rows)


def test_a_short_job_is_answered_while_a_long_one_is_still_running():
    engine = StepEngine()
    batcher = ContinuousBatcher(engine, max_batch_size=4, max_wait_ms=0).start()
    long = batcher.submit("long:0")
    while not engine.step_rows:  # the long job is decoding alone
        threading.Event().wait(0.01)
    short = batcher.submit("short:2")
    assert short.result(timeout=10) == "SHORT"
    assert not long.done()
    engine.release.set()
    assert long.result(timeout=10) == "LONG"
    batcher.stop()
    assert ["long:0", "short:2"] in engine.step_rows


def test_a_job_the_engine_cannot_run_fails_alone_and_the_worker_lives_on():
    engine = StepEngine()
    batcher = ContinuousBatcher(engine, max_batch_size=4, max_wait_ms=200).start()
    mate, bad = batcher.submit("mate:2"), batcher.submit("boom")
    assert mate.result(timeout=10) == "MATE"
    with pytest.raises(RuntimeError, match="prefill exploded"):
        bad.result(timeout=10)
    assert batcher.submit("later:1").result(timeout=10) == "LATER"
    assert batcher.alive and batcher.stats.failed_rows == 1
    batcher.stop()


def test_a_broken_loop_fails_the_jobs_in_flight_and_starts_again():
    engine = StepEngine()
    engine.crash_once = True
    batcher = ContinuousBatcher(engine, max_batch_size=4, max_wait_ms=200).start()
    a, b = batcher.submit("a:2"), batcher.submit("b:2")
    for fut in (a, b):
        with pytest.raises(RuntimeError, match="the loop broke"):
            fut.result(timeout=10)
    assert batcher.submit("after:1").result(timeout=10) == "AFTER"
    assert batcher.alive
    batcher.stop()


def test_a_cancelled_job_is_skipped():
    engine = StepEngine()
    batcher = ContinuousBatcher(engine, max_batch_size=1, max_wait_ms=0).start()
    engine.hold.clear()
    blocker = batcher.submit("blocker:1")
    cancelled: Future = batcher.submit("gone:1")
    assert cancelled.cancel()
    kept = batcher.submit("kept:1")
    engine.hold.set()
    assert blocker.result(timeout=10) == "BLOCKER"
    assert kept.result(timeout=10) == "KEPT"
    batcher.stop()
    assert batcher.stats.rows == 2 and ["gone:1"] not in engine.step_rows


def test_stop_lets_running_rows_finish_and_fails_jobs_that_never_ran():
    engine = StepEngine()
    batcher = ContinuousBatcher(engine, max_batch_size=1, max_wait_ms=0).start()
    engine.hold.clear()
    running = batcher.submit("running:3")
    queued = [batcher.submit(f"q{i}:1") for i in range(3)]
    threading.Timer(0.2, engine.hold.set).start()
    batcher.stop()
    assert running.result(timeout=10) == "RUNNING"
    for fut in queued:
        with pytest.raises(RuntimeError, match="shutting down"):
            fut.result(timeout=10)
    with pytest.raises(RuntimeError, match="shutting down"):
        batcher.submit("late:1")
