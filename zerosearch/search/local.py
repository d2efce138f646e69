"""A retriever inside the trainer's process: BM25 or dense search over a corpus file, no server needed.

It is the toy world's real engine and the quickest way to evaluate against a small corpus. The index is
built once when the backend is made (zerosearch.retrieval.index); a batch is searched in a worker thread
(`asyncio.to_thread`) so the event loop stays free for the other backends and the agent loop. Documents
are formatted exactly like the wiki backend's ("(Title: X) text" for Search-R1 passages).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llm_agent.search import SearchRequest, SearchResult
from zerosearch.retrieval.index import BM25Index, DenseIndex, load_corpus
from zerosearch.search.base import BaseSearchBackend
from zerosearch.search.wiki import format_passage


@dataclass(kw_only=True)
class LocalConfig:
    """Options of the local backend.

    corpus: JSON-lines corpus file (a `contents` or `text` field per line).
    index: "bm25" (default) or "dense" (MiniLM sentence embeddings; needs the 'dense' extra).
    """

    corpus: str | Path
    index: Literal["bm25", "dense"] = "bm25"

    def __post_init__(self) -> None:
        if self.index not in ("bm25", "dense"):
            raise ValueError(f"LocalConfig.index: expected 'bm25' or 'dense', got {self.index!r}")


class LocalBackend(BaseSearchBackend):
    name = "local"
    config_class = LocalConfig

    def __init__(self, config: LocalConfig):
        super().__init__(config)
        docs = load_corpus(config.corpus)
        self.index = BM25Index(docs) if config.index == "bm25" else DenseIndex(docs)
        self._index_lock = (
            threading.Lock()
        )  # one search at a time: the indexes are not documented thread-safe

    async def _search_batch(self, requests: list[SearchRequest], noise_prob: float) -> list[SearchResult]:
        by_topk: dict[int, list[int]] = {}
        for i, req in enumerate(requests):
            by_topk.setdefault(req.topk, []).append(i)
        results: dict[int, SearchResult] = {}
        for topk, ids in by_topk.items():
            start = time.perf_counter()
            hits = await asyncio.to_thread(self._search, [requests[i].query for i in ids], topk)
            latency = time.perf_counter() - start
            for i, row in zip(ids, hits, strict=True):
                results[i] = SearchResult(
                    documents=[format_passage(self.index.documents[doc_id]) for doc_id, _ in row],
                    latency_s=latency,
                    meta={"doc_ids": [doc_id for doc_id, _ in row], "scores": [score for _, score in row]},
                )
        return [results[i] for i in range(len(requests))]

    def _search(self, queries: list[str], topk: int) -> list[list[tuple[int, float]]]:
        with self._index_lock:
            return self.index.search(queries, topk)
