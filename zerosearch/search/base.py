"""What every search backend shares: request checks, the sync wrapper, closing, and the failure threshold.

A backend implements `_search_batch(requests, noise_prob)` (async, one result per request, in order); this
base turns it into `asearch(requests, noise_prob=0.0)` (async), `search(requests, noise_prob=0.0)` (sync,
callable with or without an event loop running in the caller's thread) and `close`. `noise_prob` is the
curriculum's probability that a simulated search returns noisy documents (real engines ignore it): a setting
of the training step, not of the request, so the agent loop gets it bound, `backend.bind(noise_prob)`, a
view that speaks `llm_agent.search.SearchBackend` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from llm_agent.search import SearchRequest, SearchResult
from zerosearch.search.client import HttpOptions, LoopThread, RequestCore, SearchBackendError


def error_document(reason: str) -> str:
    """The one document a failed request returns, so the trajectory can go on and the model sees why."""
    return f"[search failed: {reason}]"


def failed_result(
    reason: str, retries: int = 0, latency_s: float = 0.0, noisy: bool | None = None, **meta: Any
) -> SearchResult:
    return SearchResult(
        documents=[error_document(reason)],
        noisy=noisy,
        latency_s=latency_s,
        retries=retries,
        error=reason,
        meta=meta,
    )


def check_requests(requests: Sequence[SearchRequest], backend: str) -> list[SearchRequest]:
    """Reject malformed requests up front, naming the request's position and field."""
    if isinstance(requests, SearchRequest | str):
        raise TypeError(
            f"{backend}: search() takes a list of SearchRequest, got a single {type(requests).__name__}"
        )
    requests = list(requests)
    for i, req in enumerate(requests):
        if not isinstance(req, SearchRequest):
            raise TypeError(f"{backend}: request {i} is a {type(req).__name__}, expected SearchRequest")
        if not isinstance(req.query, str):
            raise TypeError(
                f"{backend}: request {i} field 'query' must be a str, got {type(req.query).__name__}"
            )
        if not isinstance(req.topk, int) or req.topk < 1:
            raise ValueError(f"{backend}: request {i} field 'topk' must be an int >= 1, got {req.topk!r}")
        if req.seed is not None and (isinstance(req.seed, bool) or not isinstance(req.seed, int)):
            raise TypeError(f"{backend}: request {i} field 'seed' must be an int or None, got {req.seed!r}")
    return requests


class BaseSearchBackend:
    """Base of all backends. Subclasses set `name`, `config_class` and implement `_search_batch`."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type]

    def __init__(self, config: Any):
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{self.name}: expected a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self._runner = LoopThread(f"search-{self.name}")
        self._closed = False

    async def _search_batch(self, requests: list[SearchRequest], noise_prob: float) -> list[SearchResult]:
        raise NotImplementedError

    def server_urls(self) -> list[str]:
        """The servers this backend talks to (for error messages); empty for in-process backends."""
        return []

    async def asearch(self, requests: Sequence[SearchRequest], noise_prob: float = 0.0) -> list[SearchResult]:
        """Search in the caller's event loop (HTTP backends keep one session per loop: in a short-lived
        loop such as `asyncio.run(...)`, `await backend.aclose()` before it ends releases it cleanly)."""
        if self._closed:
            raise RuntimeError(f"search backend '{self.name}' is closed")
        requests = check_requests(requests, self.name)
        if isinstance(noise_prob, bool) or not (
            isinstance(noise_prob, int | float) and 0.0 <= noise_prob <= 1.0
        ):
            raise ValueError(f"{self.name}: noise_prob must be in [0, 1], got {noise_prob!r}")
        # A blank query (the policy wrote "<search> </search>") finds nothing; it is not sent, and it is
        # not a backend failure either.
        sent = [i for i, req in enumerate(requests) if req.query.strip()]
        results = [SearchResult(documents=[], meta={"empty_query": True}) for _ in requests]
        if sent:
            answered = await self._search_batch([requests[i] for i in sent], float(noise_prob))
            for i, result in zip(sent, answered, strict=True):
                results[i] = result
            self._check_failures(answered)  # the failure rate is over the requests actually sent
        return results

    def _check_failures(self, results: list[SearchResult]) -> None:
        """Hook for backends with a failure threshold; the in-process ones cannot fail per request."""

    def search(self, requests: Sequence[SearchRequest], noise_prob: float = 0.0) -> list[SearchResult]:
        """Sync form of `asearch`, run on this backend's private loop thread (see LoopThread)."""
        return self._runner.run(self.asearch(requests, noise_prob))

    def bind(self, noise_prob: float) -> BoundSearch:
        """This backend searching at `noise_prob`, as the agent loop's SearchBackend (it speaks no settings)."""
        return BoundSearch(self, noise_prob)

    def close(self) -> None:
        self._closed = True
        self._runner.stop()

    async def aclose(self) -> None:
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class BoundSearch:
    """A backend with a training step's settings bound: `llm_agent.search.SearchBackend` as the agent loop
    uses it. Closing it leaves the backend open: the domain that bound it owns the backend."""

    def __init__(self, backend: BaseSearchBackend, noise_prob: float):
        self.backend = backend
        self.noise_prob = noise_prob

    def search(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        return self.backend.search(requests, self.noise_prob)

    async def asearch(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        return await self.backend.asearch(requests, self.noise_prob)

    def close(self) -> None:
        """Nothing to release: the backend stays open for the next step."""


class HttpSearchBackend(BaseSearchBackend):
    """A backend that sends HTTP requests through the shared RequestCore and enforces max_failure_rate."""

    def __init__(self, config: HttpOptions, secrets: Sequence[str] = ()):
        super().__init__(config)
        self.core = RequestCore(config, secrets=secrets)

    def _check_failures(self, results: list[SearchResult]) -> None:
        failed = [r for r in results if r.failed]
        # "More than max_failure_rate of the batch": with rate 0.5, 2 of 4 is tolerated, 3 of 4 is not.
        if failed and len(failed) > math.floor(self.config.max_failure_rate * len(results) + 1e-9):
            raise SearchBackendError(
                self.name,
                self.server_urls(),
                len(failed),
                len(results),
                failed[-1].error or "unknown error",
                results,
            )

    async def aclose(self) -> None:
        await self.core.aclose()
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        # The private loop's client must be closed on that loop, before the loop stops.
        self.core.close()
        super().close()
