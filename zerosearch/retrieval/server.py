"""Retriever HTTP server over a local corpus, speaking Search-R1's API (and ZeroSearch's wiki form).

    python -m zerosearch.retrieval.server --corpus corpus.jsonl --port 8001 [--host 127.0.0.1]
        [--retriever bm25|dense] [--topk-default 3] [--max-topk 100] [--max-queries 256]

POST /retrieve accepts two bodies:

- batch (Search-R1): {"queries": [q, ...], "topk": k, "return_scores": bool}
  -> {"result": [[{"document": {"id": .., "contents": ..}, "score": s}, ...], ...]} with scores, or
  -> {"result": [[{"id": .., "contents": ..}, ...], ...]} without (Search-R1 returns the bare documents then);
- single (ZeroSearch's wiki mode): {"query": q, "top_k": k} -> [{"text": .., "id": .., "score": s}, ...].

Document ids are the 0-based line numbers of the corpus' documents, as strings. Searches run in the
threadpool, off the event loop, so /health and other clients are served while an index works.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from zerosearch.retrieval.index import BM25Index, DenseIndex, load_corpus
from zerosearch.utils.http import (
    BodySizeLimit,
    add_connection_arguments,
    connection_limits,
    error_response,
    serve,
)

log = logging.getLogger("zerosearch.retrieval.server")


@dataclass(frozen=True)
class RetrievalLimits:
    """Bounds on one request, so a single client cannot make the server do unbounded work."""

    topk_default: int = 3
    max_topk: int = 100
    max_queries: int = 256
    max_query_chars: int = 2048
    max_body_bytes: int = 1_000_000


class BatchQuery(BaseModel):
    """Search-R1's body. Unknown fields are ignored, as Search-R1's server does."""

    model_config = ConfigDict(extra="ignore")
    queries: Annotated[list[StrictStr], Field(min_length=1)]
    topk: StrictInt | None = None
    return_scores: StrictBool = False


class SingleQuery(BaseModel):
    """ZeroSearch's wiki-mode body."""

    model_config = ConfigDict(extra="ignore")
    query: StrictStr
    top_k: StrictInt | None = None


class RetrievalError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def create_app(
    index: Any, documents: list[str], retriever: str, limits: RetrievalLimits | None = None
) -> FastAPI:
    """Build the app around a ready index (anything with `search(queries, topk) -> [[(id, score)]]`)."""
    limits = limits or RetrievalLimits()
    app = FastAPI(title="ZeroSearch retriever")
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)

    def check_topk(value: int | None, param: str) -> int:
        k = limits.topk_default if value is None else value
        if not 1 <= k <= limits.max_topk:
            raise RetrievalError(400, f"{param} must be between 1 and {limits.max_topk}, got {k}", param)
        return k

    def check_queries(queries: list[str], param: str) -> None:
        if len(queries) > limits.max_queries:
            raise RetrievalError(
                413,
                f"{param}: {len(queries)} queries in one request, over the limit of {limits.max_queries}",
                param,
            )
        for i, q in enumerate(queries):
            if not q.strip():
                raise RetrievalError(400, f"{param}[{i}] is empty", param)
            if len(q) > limits.max_query_chars:
                raise RetrievalError(
                    413,
                    f"{param}[{i}] has {len(q)} characters, over the limit of {limits.max_query_chars}",
                    param,
                )

    async def search(queries: list[str], topk: int) -> list[list[tuple[int, float]]]:
        start = time.perf_counter()
        hits = await run_in_threadpool(index.search, queries, topk)
        log.info("retrieve: %d queries, topk=%d, %.3fs", len(queries), topk, time.perf_counter() - start)
        return hits

    async def parse_body(request: Request) -> dict:
        raw = await request.body()  # at most max_body_bytes: BodySizeLimit refuses more as it streams in
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, a 5000-digit number, nested too deep
            raise RetrievalError(400, f"request body is not valid JSON: {type(e).__name__}: {e}") from None
        if not isinstance(body, dict) or not ({"queries", "query"} & body.keys()):
            raise RetrievalError(
                400,
                "request body must be an object with 'queries' (a list of strings, "
                "Search-R1 form) or 'query' (a string, single form)",
            )
        return body

    @app.exception_handler(RetrievalError)
    async def on_retrieval_error(_: Request, exc: RetrievalError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param)

    @app.post("/retrieve", response_model=None)
    async def retrieve(request: Request) -> JSONResponse:
        body = await parse_body(request)
        model = BatchQuery if "queries" in body else SingleQuery
        try:
            parsed = model.model_validate(body)
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or None
            raise RetrievalError(
                400, f"{field}: {first['msg']}", str(first["loc"][0]) if first["loc"] else None
            ) from None
        if isinstance(parsed, BatchQuery):
            topk = check_topk(parsed.topk, "topk")
            check_queries(parsed.queries, "queries")
            hits = await search(parsed.queries, topk)
            return JSONResponse(
                {
                    "result": [
                        [_batch_item(documents, i, s, parsed.return_scores) for i, s in row] for row in hits
                    ]
                }
            )
        topk = check_topk(parsed.top_k, "top_k")
        check_queries([parsed.query], "query")
        (row,) = await search([parsed.query], topk)
        return JSONResponse([{"text": documents[i], "id": str(i), "score": s} for i, s in row])

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "retriever": retriever, "documents": len(documents)}

    return app


def _batch_item(documents: list[str], doc_id: int, score: float, with_score: bool) -> dict:
    document = {"id": str(doc_id), "contents": documents[doc_id]}
    return {"document": document, "score": score} if with_score else document


def build_index(documents: list[str], retriever: str):
    if retriever == "bm25":
        return BM25Index(documents)
    if retriever == "dense":
        return DenseIndex(documents)
    raise ValueError(f"--retriever must be bm25 or dense, got {retriever!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m zerosearch.retrieval.server", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--corpus", required=True, help="JSONL file, one document per line with `contents` (or `text`)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: local only)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--retriever", choices=["bm25", "dense"], default="bm25")
    p.add_argument("--topk-default", type=int, default=3, help="topk when a request does not say")
    p.add_argument("--max-topk", type=int, default=100)
    p.add_argument("--max-queries", type=int, default=256, help="most queries in one batch request")
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=RetrievalLimits.max_body_bytes,
        help="refuse request bodies larger than this (413) while they stream in",
    )
    add_connection_arguments(p)
    args = p.parse_args(argv)
    args.connection_limits = connection_limits(args, p)
    for flag in ("topk_default", "max_topk", "max_queries"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.topk_default > args.max_topk:
        p.error(f"--topk-default ({args.topk_default}) must not exceed --max-topk ({args.max_topk})")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    documents = load_corpus(args.corpus)
    start = time.perf_counter()
    index = build_index(documents, args.retriever)
    log.info(
        "indexed %d documents from %s with %s in %.1fs",
        len(documents),
        args.corpus,
        args.retriever,
        time.perf_counter() - start,
    )
    limits = RetrievalLimits(
        args.topk_default, args.max_topk, args.max_queries, max_body_bytes=args.max_body_bytes
    )
    serve(create_app(index, documents, args.retriever, limits), args.host, args.port, args.connection_limits)


if __name__ == "__main__":
    main()
