"""The background server a worker streams requests to (verl/workers/rollout/stream.py), on the real
transformers engine."""

from __future__ import annotations

import time

import pytest

from verl.workers.rollout.base import RolloutRequest, RolloutSamplingParams
from verl.workers.rollout.stream import BackgroundServer


def drain(server: BackgroundServer, expected: int, deadline_s: float = 60.0) -> dict:
    done, start = {}, time.perf_counter()
    while len(done) < expected and time.perf_counter() - start < deadline_s:
        done.update(server.exchange([], 0.05))
    return done


def test_requests_sent_in_two_exchanges_come_back_under_their_keys_as_generate_samples_them(rollout, prompts):
    own = [
        RolloutSamplingParams(temperature=1.0, max_tokens=3 + 5 * k, seed=10 + k) for k in range(len(prompts))
    ]
    server = BackgroundServer(rollout)
    try:
        first = server.exchange([(f"k{k}", RolloutRequest(prompts[k], own[k])) for k in (0, 1)], 0.0)
        done = dict(first)
        done.update(server.exchange([(f"k{k}", RolloutRequest(prompts[k], own[k])) for k in (2, 3)], 0.05))
        done.update(drain(server, len(prompts) - len(done)))
    finally:
        server.stop()
    expected = rollout.generate(prompts, own)
    assert {key: out.token_ids for key, out in done.items()} == {
        f"k{k}": group[0].token_ids for k, group in enumerate(expected)
    }


def test_a_failure_in_the_serving_thread_reaches_the_driver(rollout, prompts):
    server = BackgroundServer(rollout)
    too_long = RolloutRequest([1] * rollout.max_model_len, RolloutSamplingParams(max_tokens=2))
    server.exchange([("bad", too_long)], 0.0)
    server.thread.join(timeout=30)  # the engine's serve raises once the request fails: the thread ends
    with pytest.raises(RuntimeError, match="serving thread failed"):
        server.exchange([], 0.0)


def test_an_engine_that_needs_other_ranks_to_serve_is_refused(rollout):
    class Collective(type(rollout)):
        serves_alone = False

    engine = object.__new__(Collective)
    with pytest.raises(ValueError, match="cannot serve in the background"):
        BackgroundServer(engine)
