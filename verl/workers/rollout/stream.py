"""A rollout engine serving in the background of its worker, for a driver that streams requests to it.

The agent loop runs on the driver; the engine runs in a worker process (a Ray actor). To let trajectories
go on at their own pace (llm_agent.generation, overlap_search) the driver hands each rank new requests and
takes back finished ones in one call, `exchange`, while the rank's engine decodes on a thread of its own
(`RolloutEngine.serve`), so requests join and leave its running batch between calls. Only engines whose
`serve` needs no other rank (`RolloutEngine.serves_alone`) can do this; the others are driven a batch at a
time through `generate`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

from verl.workers.rollout.base import RolloutEngine, RolloutOutput, RolloutRequest

# What `exchange` takes and gives: (key, request) in, (key, output) out; keys are the driver's.
Keyed = tuple[Any, RolloutRequest]


class _Queues:
    """The RolloutSource the serving thread reads: requests from `inbox` (None there closes it), results to
    `outbox` under the key they came with."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[Keyed | None] = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue[tuple[Any, RolloutOutput]] = queue.SimpleQueue()
        self.keys: dict[int, Any] = {}  # id(request) -> key; the serving thread's own
        self.closed = False

    def take(self, limit: int, wait: bool) -> list[RolloutRequest] | None:
        taken: list[RolloutRequest] = []
        while len(taken) < limit and not self.closed:
            try:
                item = self.inbox.get(block=wait and not taken)
            except queue.Empty:
                break
            if item is None:
                self.closed = True  # what came before the close still runs
                break
            key, request = item
            self.keys[id(request)] = key
            taken.append(request)
        return None if self.closed and not taken else taken

    def finish(self, request: RolloutRequest, output: RolloutOutput) -> None:
        self.outbox.put((self.keys.pop(id(request)), output))


class BackgroundServer:
    """`engine.serve` on a daemon thread, fed and drained by `exchange`; `stop` ends it."""

    def __init__(self, engine: RolloutEngine):
        if not engine.serves_alone:
            raise ValueError(
                f"{type(engine).__name__} cannot serve in the background (serves_alone is False)"
            )
        self.queues = _Queues()
        self.error: BaseException | None = None
        self.in_flight = 0
        self.thread = threading.Thread(target=self._serve, args=(engine,), name="rollout-serve", daemon=True)
        self.thread.start()

    def _serve(self, engine: RolloutEngine) -> None:
        try:
            engine.serve(self.queues)
        except BaseException as err:  # handed to the driver by the next exchange
            self.error = err

    def exchange(self, requests: Sequence[Keyed], wait_s: float) -> list[tuple[Any, RolloutOutput]]:
        """Queue `requests`, then return every result ready, waiting up to `wait_s` for the first while any
        request is in flight. Raises the serving thread's error, if it died."""
        self._check()
        for item in requests:
            self.queues.inbox.put(item)
        self.in_flight += len(requests)
        done = []
        try:
            if self.in_flight and wait_s > 0:
                done.append(self.queues.outbox.get(timeout=wait_s))
            while True:
                done.append(self.queues.outbox.get_nowait())
        except queue.Empty:
            pass
        self.in_flight -= len(done)
        if not done:
            self._check()
        return done

    def stop(self) -> None:
        """Close the queue, let the rows in flight finish and end the thread; raises its error, if any."""
        self.queues.inbox.put(None)
        self.thread.join()
        self._check()

    def _check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the rollout engine's serving thread failed: {self.error!r}") from self.error
