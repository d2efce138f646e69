"""Real Google results through SerpAPI (`GET {base_url}/search.json`), for evaluation with a real engine.

The API key is read from an environment variable (SERPAPI_API_KEY by default) when the backend is built and
lives only in a private attribute: the config holds the variable's *name*, and every error text goes
through the request core's scrubber, so the key never reaches logs, reprs, error messages or config dumps.

A document is "title\\nsnippet": the answer box first when Google shows one, then the organic results.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import aiohttp

from llm_agent.search import SearchRequest, SearchResult
from zerosearch.search.base import HttpSearchBackend, failed_result
from zerosearch.search.client import AttemptError, HttpOptions, read_json

# SerpAPI answers 200 with this error text when a query simply has no results: that is an empty page.
_NO_RESULTS = "hasn't returned any results"


@dataclass(kw_only=True)
class GoogleConfig(HttpOptions):
    """Options of the google backend (plus the shared HttpOptions).

    api_key_env: name of the environment variable holding the SerpAPI key (never the key itself).
    base_url: SerpAPI's address (tests point it at a local fake).
    engine, gl, hl, location: SerpAPI parameters (search engine, country, language, location); None omits one.
    use_answer_box: put Google's answer box, when present, first among the documents.
    max_requests: the most queries this backend sends over the run (a paid engine's budget); None = no limit.
        Required when Google is a validation engine (the agent says how many requests a run may need).
    cost_per_1k_requests: your SerpAPI plan's price per 1000 searches, to print cost estimates; None = unknown.
    """

    api_key_env: str = "SERPAPI_API_KEY"
    base_url: str = "https://serpapi.com"
    engine: str = "google"
    gl: str | None = "us"
    hl: str | None = "en"
    location: str | None = None
    use_answer_box: bool = True
    max_requests: int | None = None
    cost_per_1k_requests: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.base_url = self.base_url.rstrip("/")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError(f"GoogleConfig.max_requests: must be >= 1 or null, got {self.max_requests}")

    def estimate(self, requests: int) -> str:
        """'N requests (~$C)' for a planned number of requests, against the budget."""
        cost = (
            ""
            if self.cost_per_1k_requests is None
            else f" (~${requests * self.cost_per_1k_requests / 1000:,.2f})"
        )
        budget = "no budget set" if self.max_requests is None else f"budget max_requests={self.max_requests}"
        return f"up to {requests:,} SerpAPI requests{cost}; {budget}"


def serp_documents(body: dict, topk: int, use_answer_box: bool = True) -> list[str]:
    """Turn a SerpAPI JSON page into "title\\nsnippet" documents, at most `topk`."""
    entries = []
    box = body.get("answer_box")
    if use_answer_box and isinstance(box, dict):
        text = box.get("answer") or box.get("snippet") or ""
        entries.append((box.get("title") or "", text, "answer_box"))
    results = body.get("organic_results") or []
    if not isinstance(results, list):
        raise TypeError(f"organic_results is {type(results).__name__}, not a list")
    for i, item in enumerate(results):
        if isinstance(item, dict):
            entries.append((item.get("title") or "", item.get("snippet") or "", f"organic_results[{i}]"))
    docs = []
    for title, text, where in entries:
        if not isinstance(title, str) or not isinstance(text, str):
            raise TypeError(f"{where}: title and snippet must be text")
        docs.append("\n".join(part for part in (title.strip(), text.strip()) if part))
    return [d for d in docs if d][:topk]


class SearchBudgetError(RuntimeError):
    """A paid engine's request budget (max_requests) would be exceeded: nothing more is sent."""


class GoogleBackend(HttpSearchBackend):
    name = "google"
    config_class = GoogleConfig

    def __init__(self, config: GoogleConfig):
        key = os.environ.get(config.api_key_env, "").strip()
        if not key:
            raise ValueError(
                f"google search backend: the SerpAPI key is missing; set the environment variable "
                f"{config.api_key_env} (or point 'api_key_env' at the variable that holds it)"
            )
        super().__init__(config, secrets=[key])
        self._api_key = key
        self.requests_sent = 0  # queries sent over the run, against max_requests

    def server_urls(self) -> list[str]:
        return [self.config.base_url]

    async def _search_batch(self, requests: list[SearchRequest], noise_prob: float) -> list[SearchResult]:
        budget = self.config.max_requests
        if budget is not None and self.requests_sent + len(requests) > budget:
            raise SearchBudgetError(
                f"google search backend: the request budget max_requests={budget} would be exceeded "
                f"({self.requests_sent} sent, {len(requests)} more asked); raise max_requests to go on"
            )
        self.requests_sent += len(requests)
        return list(await asyncio.gather(*(self._one(req) for req in requests)))

    async def _one(self, req: SearchRequest) -> SearchResult:
        cfg = self.config
        url = f"{cfg.base_url}/search.json"  # shown in errors; the key travels only in `params`
        params = {
            "q": req.query,
            "api_key": self._api_key,
            "engine": cfg.engine,
            "num": req.topk,
            "gl": cfg.gl,
            "hl": cfg.hl,
            "location": cfg.location,
        }
        params = {k: v for k, v in params.items() if v is not None}

        async def attempt(session: aiohttp.ClientSession) -> list[str]:
            async with session.get(url, params=params) as response:
                body = await read_json(response, url, cfg.max_reply_bytes)
            if not isinstance(body, dict):
                raise AttemptError(f"unexpected reply from {url}: not a JSON object", retryable=False)
            error = body.get("error")
            if error and _NO_RESULTS not in str(error):
                raise AttemptError(f"SerpAPI error from {url}: {error}", retryable=False)
            return serp_documents(body, req.topk, cfg.use_answer_box)

        outcome = await self.core.run(attempt, url)
        if outcome.value is None:
            return failed_result(
                outcome.error or "unknown error", outcome.retries, outcome.latency_s, server=cfg.base_url
            )
        documents = outcome.value
        meta = {"server": cfg.base_url}
        if not documents:
            meta["empty_output"] = True
        return SearchResult(
            documents=documents, latency_s=outcome.latency_s, retries=outcome.retries, meta=meta
        )

    def __repr__(self) -> str:
        return f"GoogleBackend({self.config!r}, api_key=***)"
