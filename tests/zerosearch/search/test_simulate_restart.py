"""simulate_sft against the real built-in simulation server, killed mid-batch and restarted on its port."""

from __future__ import annotations

import threading
import time

import pytest

from llm_agent.search import SearchRequest
from zerosearch.search import SimulateConfig, SimulateSFTBackend
from zerosearch.search.simulate import row_context
from zerosearch.utils.serving import ServerProcess, find_free_port

N_REQUESTS = 32


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_batch_survives_a_server_crash_and_restart(tiny_model_dir):
    args = ["--model", str(tiny_model_dir), "--served-model-name", "tiny-sim", "--max-batch-size", "8"]
    server = ServerProcess("zerosearch.simulation.server", args, find_free_port())
    # The retry budget (up to 40 retries, each waiting up to 2 s) is far longer than a restart takes.
    config = SimulateConfig(
        urls=server.url,
        max_tokens=8,
        concurrency=8,
        timeout_s=30,
        max_retries=40,
        backoff_base_s=0.2,
        backoff_max_s=2.0,
        retry_seed=0,
    )
    requests = [
        SearchRequest(f"query {i}", row_context(f"question {i}?", (f"answer {i}",)))
        for i in range(N_REQUESTS)
    ]
    results: list = []
    with server, SimulateSFTBackend(config) as backend:
        worker = threading.Thread(
            target=lambda: results.extend(backend.search(requests, noise_prob=0.5)), daemon=True
        )
        worker.start()
        deadline = time.monotonic() + 120
        while sum(backend.pool.served) < 8:  # part of the batch has been sent: crash now
            assert time.monotonic() < deadline and worker.is_alive(), "the batch never got going"
            time.sleep(0.02)
        server.kill()
        time.sleep(0.5)
        server.start()
        worker.join(timeout=200)
        assert not worker.is_alive(), "the batch did not finish after the restart"
    assert len(results) == N_REQUESTS
    assert [r.error for r in results] == [None] * N_REQUESTS
    assert any(r.retries > 0 for r in results)  # the crash was felt, and retried through
    assert all(r.meta["model"] == "tiny-sim" and r.noisy in (True, False) for r in results)
