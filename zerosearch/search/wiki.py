"""A Wikipedia (or any corpus) retriever behind Search-R1's HTTP API, e.g. zerosearch.retrieval.server.

Two forms of the API (docs/design.md §3):
- "batch" (default): `POST {url}/retrieve {"queries": [...], "topk": k, "return_scores": bool}` ->
  `{"result": [[{"document": {"contents": ...}, "score": s}, ...], ...]}`; one call carries a whole chunk of
  `batch_size` queries (requests are grouped by topk first).
- "single": `POST {url}/retrieve {"query": q, "top_k": k}` -> `[{"text": ...}, ...]`, one call per query.

Search-R1 corpora store a passage as '"Title"\\ntext'; a document is returned as "(Title: Title) text" (a
passage without a quoted title line is returned as its text), with whitespace collapsed to single spaces
so that it fits on one "Doc N:" line of the observation.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from llm_agent.search import SearchRequest, SearchResult
from zerosearch.search.base import HttpSearchBackend, failed_result
from zerosearch.search.client import AttemptError, HttpOptions, read_json


def format_passage(contents: str) -> str:
    """'"Title"\\ntext' -> '(Title: Title) text'; other passages -> their text, whitespace collapsed."""
    head, sep, rest = contents.strip().partition("\n")
    head = head.strip()
    if sep and len(head) >= 2 and head[0] == head[-1] == '"':
        title, text = head[1:-1].strip(), " ".join(rest.split())
        return f"(Title: {title}) {text}" if title else text
    return " ".join(contents.split())


def passage_text(item: Any) -> str:
    """The passage in one hit, whichever of the API's shapes it came in."""
    if isinstance(item, dict) and isinstance(item.get("document"), dict | str):
        item = item["document"]  # batch form with scores
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in ("contents", "text"):
            if isinstance(item.get(key), str):
                title = item.get("title")
                # Some retrievers keep the title apart: put it back in Search-R1's layout.
                return f'"{title}"\n{item[key]}' if isinstance(title, str) and title else item[key]
    raise ValueError(f"a hit without 'contents' or 'text': {str(item)[:200]}")


@dataclass(kw_only=True)
class WikiConfig(HttpOptions):
    """Options of the wiki backend (plus the shared HttpOptions).

    url: the retriever's base URL (with or without the trailing /retrieve).
    api: "batch" (Search-R1's form) or "single" (one query per call).
    batch_size: queries per call in the batch form.
    return_scores: ask for scores (batch form); they are kept in SearchResult.meta["scores"].
    """

    url: str
    api: Literal["batch", "single"] = "batch"
    batch_size: int = 64
    return_scores: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        url = self.url.strip().rstrip("/")
        self.url = url[: -len("/retrieve")] if url.endswith("/retrieve") else url
        if not self.url:
            raise ValueError("WikiConfig.url: give the retriever's URL, e.g. http://127.0.0.1:8000")
        if self.api not in ("batch", "single"):
            raise ValueError(f"WikiConfig.api: expected 'batch' or 'single', got {self.api!r}")
        if self.batch_size < 1:
            raise ValueError(f"WikiConfig.batch_size: must be >= 1, got {self.batch_size}")


class WikiBackend(HttpSearchBackend):
    name = "wiki"
    config_class = WikiConfig

    def server_urls(self) -> list[str]:
        return [self.config.url]

    async def _search_batch(self, requests: list[SearchRequest], noise_prob: float) -> list[SearchResult]:
        if self.config.api == "single":
            chunks = [[i] for i in range(len(requests))]
        else:
            by_topk: dict[int, list[int]] = {}
            for i, req in enumerate(requests):
                by_topk.setdefault(req.topk, []).append(i)
            size = self.config.batch_size
            chunks = [ids[s : s + size] for ids in by_topk.values() for s in range(0, len(ids), size)]
        answers = await asyncio.gather(*(self._chunk([requests[i] for i in ids]) for ids in chunks))
        by_index = {
            i: result
            for ids, chunk_results in zip(chunks, answers, strict=True)
            for i, result in zip(ids, chunk_results, strict=True)
        }
        return [by_index[i] for i in range(len(requests))]

    async def _chunk(self, chunk: list[SearchRequest]) -> list[SearchResult]:
        """One call for a chunk of requests with the same topk; its outcome is shared by the chunk."""
        cfg, topk = self.config, chunk[0].topk
        url = f"{cfg.url}/retrieve"
        if cfg.api == "single":
            payload: dict = {"query": chunk[0].query, "top_k": topk}
        else:
            payload = {"queries": [r.query for r in chunk], "topk": topk, "return_scores": cfg.return_scores}

        async def attempt(session: aiohttp.ClientSession) -> list[list[Any]]:
            async with session.post(url, json=payload) as response:
                body = await read_json(response, url, cfg.max_reply_bytes)
            hits = [body] if cfg.api == "single" else (body.get("result") if isinstance(body, dict) else None)
            if (
                not isinstance(hits, list)
                or len(hits) != len(chunk)
                or not all(isinstance(h, list) for h in hits)
            ):
                raise AttemptError(
                    f"unexpected reply from {url} for {len(chunk)} queries: {str(body)[:200]}",
                    retryable=False,
                )
            return hits

        outcome = await self.core.run(attempt, url)
        if outcome.value is None:
            reason = outcome.error or "unknown error"
            return [failed_result(reason, outcome.retries, outcome.latency_s, server=cfg.url) for _ in chunk]
        results = []
        for hits in outcome.value:
            meta: dict = {"server": cfg.url}
            try:
                documents = [format_passage(passage_text(hit)) for hit in hits][:topk]
            except Exception as e:  # noqa: BLE001 - any shape the parsing did not expect: this hit fails
                results.append(
                    failed_result(
                        f"malformed reply from {url}: {type(e).__name__}: {e}",
                        outcome.retries,
                        outcome.latency_s,
                        server=cfg.url,
                    )
                )
                continue
            if cfg.return_scores:
                meta["scores"] = [hit.get("score") if isinstance(hit, dict) else None for hit in hits][:topk]
            if not documents:
                meta["empty_output"] = True
            results.append(
                SearchResult(
                    documents=documents, latency_s=outcome.latency_s, retries=outcome.retries, meta=meta
                )
            )
        return results
