"""The shared request core (retries, time limits, failure threshold, concurrency, sync wrapper), exercised
through the simulate_sft backend against real misbehaving servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from llm_agent.search import SearchRequest
from zerosearch.search import SearchBackendError, SimulateConfig, SimulateSFTBackend, error_document
from zerosearch.search.client import HttpOptions, RequestCore
from zerosearch.search.simulate import row_context

pytestmark = pytest.mark.timeout(60)

FAST_RETRIES = {"max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05}


def backend(url, **options) -> SimulateSFTBackend:
    return SimulateSFTBackend(SimulateConfig(urls=url, model="fake-simulator", **options))  # the fake's name


def reqs(n: int, prefix: str = "q") -> list[SearchRequest]:
    return [SearchRequest(f"{prefix} {i}", row_context(f"question {i}?", (f"answer {i}",))) for i in range(n)]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket is closed


def test_server_error_is_retried_then_fails_with_one_error_document(chat_server):
    server, url = chat_server(fail_status=500, fail_message="engine crashed")
    with backend(url, max_failure_rate=1.0, **FAST_RETRIES) as b:
        results = b.search(reqs(3))
    assert server.calls == 3 * 3  # first attempt + 2 retries each
    for r in results:
        assert r.failed and r.retries == 2
        assert r.error.startswith(f"HTTP 500 from {url}/v1/chat/completions") and "engine crashed" in r.error
        assert r.error.endswith("(3 attempts)")
        assert r.documents == [error_document(r.error)] == [f"[search failed: {r.error}]"]


def test_too_many_failures_raise_naming_backend_servers_count_and_last_error(chat_server):
    _, url = chat_server(fail_status=503, fail_message="overloaded")
    with backend(url, **FAST_RETRIES) as b, pytest.raises(SearchBackendError) as info:
        b.search(reqs(4))
    err = info.value
    message = str(err)
    assert "'simulate_sft'" in message and url in message and "4 of 4 requests failed" in message
    assert "HTTP 503" in message and "overloaded" in message
    assert (err.failures, err.total, len(err.results)) == (4, 4, 4)


def test_failures_up_to_the_threshold_are_tolerated_and_over_it_raise(chat_server):
    _, url = chat_server(fail_status=500, fail_marker="Query: bad")
    with backend(url, max_failure_rate=0.5, **FAST_RETRIES) as b:
        results = b.search(reqs(2, "bad") + reqs(2, "good"))
        assert [r.failed for r in results] == [True, True, False, False]
        with pytest.raises(SearchBackendError, match="3 of 4 requests failed"):
            b.search(reqs(3, "bad") + reqs(1, "good"))


def test_hanging_server_is_cut_off_by_the_time_limit(chat_server):
    server, url = chat_server(hang=True)
    timeout, retries, backoff_max = 0.5, 1, 0.05
    start = time.perf_counter()
    with backend(
        url,
        timeout_s=timeout,
        max_retries=retries,
        backoff_base_s=0.05,
        backoff_max_s=backoff_max,
        max_failure_rate=1.0,
    ) as b:
        results = b.search(reqs(8))
    elapsed = time.perf_counter() - start
    # All 8 run at once: (retries + 1) time limits plus the backoff, plus slack for a busy machine.
    assert elapsed < (retries + 1) * timeout + retries * backoff_max + 2.0
    assert all(r.error == "timed out after 0.5s (2 attempts)" for r in results)
    assert server.calls == 16


def test_bad_request_is_not_retried_and_keeps_the_servers_message(chat_server):
    server, url = chat_server(fail_status=400, fail_message="prompt has 9000 tokens, over the limit")
    with backend(url, max_failure_rate=1.0, **FAST_RETRIES) as b:
        (result,) = b.search(reqs(1))
    assert server.calls == 1 and result.retries == 0
    assert result.error.startswith("HTTP 400") and "prompt has 9000 tokens, over the limit" in result.error


def test_rate_limit_is_retried_after_the_servers_retry_after(chat_server):
    server, url = chat_server(fail_status=429, fail_first=1, retry_after="0.3")
    with backend(url, max_retries=2, backoff_base_s=0.001, backoff_max_s=1.0) as b:
        (result,) = b.search(reqs(1))
    assert result.error is None and result.retries == 1 and server.calls == 2
    assert result.latency_s >= 0.3


def test_transient_server_errors_recover_within_the_retry_budget(chat_server):
    server, url = chat_server(fail_status=502, fail_first=3)
    with backend(url, max_retries=3, backoff_base_s=0.01) as b:
        (result,) = b.search(reqs(1))
    assert result.error is None and result.retries == 3 and len(result.documents) == 5


def test_refused_connection_is_retried_then_reported(chat_server):
    url = closed_port_url()
    with backend(url, max_failure_rate=1.0, **FAST_RETRIES) as b:
        (result,) = b.search(reqs(1))
    assert result.retries == 2 and result.error.startswith("connection error:")
    assert result.meta["server"] == url


def test_concurrency_is_bounded(chat_server):
    server, url = chat_server(latency_s=0.1)
    with backend(url, concurrency=5) as b:
        b.search(reqs(30))
    assert server.max_in_flight == 5


def test_requests_really_run_concurrently(chat_server):
    server, url = chat_server(latency_s=0.2)
    start = time.perf_counter()
    with backend(url, concurrency=64) as b:
        results = b.search(reqs(32))
    elapsed = time.perf_counter() - start
    assert all(not r.failed for r in results)
    assert server.max_in_flight >= 16
    assert elapsed < 32 * 0.2 / 4  # one at a time would take 6.4 s


def test_sync_search_works_inside_a_running_event_loop(chat_server):
    _, url = chat_server()

    async def caller():
        return b.search(reqs(3))

    with backend(url) as b:
        results = asyncio.run(caller())
    assert [len(r.documents) for r in results] == [5, 5, 5]


def test_asearch_runs_in_the_callers_loops_and_close_releases_their_sessions(chat_server):
    _, url = chat_server()
    b = backend(url)
    loop = asyncio.new_event_loop()
    try:
        assert len(loop.run_until_complete(b.asearch(reqs(2)))) == 2
        b.search(reqs(1))  # the private loop gets its own session
        assert b.core.open_sessions == 2
        b.close()
        assert b.core.open_sessions == 0
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.search(reqs(1))


def test_backoff_is_full_jitter_bounded_and_seeded():
    def delays(seed):
        core = RequestCore(HttpOptions(retry_seed=seed, backoff_base_s=0.5, backoff_max_s=2.0))
        return [core.backoff_delay(n) for n in range(6)]

    first = delays(3)
    caps = [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert all(0.0 <= d <= cap for d, cap in zip(first, caps, strict=True))
    assert first == delays(3) and first != delays(4)


def test_malformed_requests_are_rejected_with_their_position(chat_server):
    _, url = chat_server()
    with backend(url) as b:
        with pytest.raises(TypeError, match="request 1 is a str"):
            b.search([reqs(1)[0], "just a string"])
        with pytest.raises(ValueError, match="request 0 field 'topk'"):
            b.search([SearchRequest("q", row_context("q?", ("a",)), topk=0)])
        with pytest.raises(ValueError, match=r"noise_prob must be in \[0, 1\], got 1.5"):
            b.search(reqs(1), noise_prob=1.5)
        with pytest.raises(ValueError, match="noise_prob must be in"):
            b.bind(noise_prob=True).search(reqs(1))


def test_failure_rate_counts_only_the_requests_sent(chat_server):
    _, url = chat_server(fail_status=500)
    blanks = [SearchRequest("   ", row_context("q?", ("a",)))] * 3
    with backend(url, **FAST_RETRIES) as b, pytest.raises(SearchBackendError, match="1 of 1 requests failed"):
        b.search(blanks + reqs(1))


def test_aclose_in_a_short_lived_loop_releases_its_session(chat_server):
    _, url = chat_server()
    b = backend(url)

    async def use_and_close():
        results = await b.asearch(reqs(2))
        assert b.core.open_sessions == 1
        await b.aclose()
        return results

    assert len(asyncio.run(use_and_close())) == 2
    assert b.core.open_sessions == 0
