"""The tool interface the agent loop speaks: a search request is a query plus the row's own context.
Backends (ZeroSearch's simulator, Google, a retriever, ...) implement it elsewhere; this package never imports
them and never reads the context: what a backend needs from the row, and any per-step setting (ZeroSearch's
noise probability), is the domain's business, bound into the backend it hands the agent loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class SearchRequest:
    """One search issued by one trajectory.

    `context` is that trajectory's row context as the domain gave it to the agent loop, passed through
    untouched (ZeroSearch's simulator reads the row's question and golden answers from it: each request
    carries its own row's, which the reference code once mixed up across samples). `seed` makes this
    request's random draws reproducible whatever else is in flight, so a resumed run searches exactly as an
    uninterrupted one; None leaves them unseeded.
    """

    query: str
    context: Mapping[str, Any] = field(default_factory=dict)
    topk: int = 5
    seed: int | None = None


@dataclass
class SearchResult:
    """Documents for one request plus what happened while getting them.

    `noisy` is True/False when the backend drew useful-or-noisy (simulators) and None otherwise.
    `error` is set when the request failed after its retry budget; `documents` then holds one document
    that says so, so the trajectory can go on.
    """

    documents: list[str]
    noisy: bool | None = None
    latency_s: float = 0.0
    retries: int = 0
    error: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error is not None


@runtime_checkable
class SearchBackend(Protocol):
    """A batch of requests in, one result per request out, in order."""

    def search(self, requests: list[SearchRequest]) -> list[SearchResult]: ...

    async def asearch(self, requests: list[SearchRequest]) -> list[SearchResult]: ...

    def close(self) -> None: ...
