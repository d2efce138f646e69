"""The search interface the agent loop speaks. Backends (ZeroSearch's simulator, Google, a retriever, ...)
implement it elsewhere; this package never imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SearchRequest:
    """One search issued by one trajectory.

    The question and golden answers are that trajectory's own (the simulator needs them to write useful
    documents; the reference code once mixed them up across samples). `noise_prob` is the curriculum's
    probability that this call returns noisy documents; real engines ignore it. `seed` makes this request's
    random draws (noisy or useful, the simulator's sampling) reproducible whatever else is in flight, so a
    resumed run searches exactly as an uninterrupted one; None leaves them unseeded.
    """

    query: str
    question: str = ""
    golden_answers: tuple[str, ...] = ()
    noise_prob: float = 0.0
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
