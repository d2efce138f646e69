"""Replies no well-behaved server sends, from real servers on 127.0.0.1: each becomes a failed result that
names the server (counted, retried per the budget), never an exception out of search(); secrets are masked in
every URL encoding; oversized and compressed-bomb replies are cut off unread."""

from __future__ import annotations

import gzip

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llm_agent.search import SearchRequest
from zerosearch.search import (
    GoogleBackend,
    GoogleConfig,
    SimulateConfig,
    SimulateSFTBackend,
    WikiBackend,
    WikiConfig,
)

pytestmark = pytest.mark.timeout(60)

QUESTION = {"question": "Where is Paris?", "golden_answers": ["France"]}
DEEP = "[" * 100_000 + "]" * 100_000


def _server(serve, path: str, reply, methods=("GET", "POST")) -> str:
    """A server answering `path` with `reply` (a JSON-ready value, or raw text) and /v1/models."""

    async def answer(_: Request) -> Response:
        if isinstance(reply, str):
            return Response(reply, media_type="application/json")
        return JSONResponse(reply)

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"data": [{"id": "sim"}]})

    return serve(Starlette(routes=[Route(path, answer, methods=list(methods)), Route("/v1/models", models)]))


def _one(backend, max_failure_rate: float = 1.0):
    with backend as b:
        (result,) = b.search([SearchRequest("paris", topk=3, context=QUESTION)])
    return result


def _chat(content) -> dict:
    return {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ]
    }


@pytest.mark.parametrize(
    "reply",
    [_chat(5), _chat(["Doc 1: a"]), {"choices": "none"}, {"choices": [{"message": None}]}, DEEP],
    ids=["content-int", "content-list", "choices-str", "message-null", "deep-nesting"],
)
def test_a_malformed_simulator_reply_is_a_failed_result_naming_the_server(serve, reply):
    url = _server(serve, "/v1/chat/completions", reply)
    config = SimulateConfig(urls=[url], max_retries=1, backoff_base_s=0.0, max_failure_rate=1.0)
    result = _one(SimulateSFTBackend(config))
    assert result.error is not None and url in result.error, result.error
    assert result.retries == (1 if reply is not DEEP else 0)  # a shape error is retried; invalid JSON is not


@pytest.mark.parametrize(
    "reply",
    [
        {"organic_results": 5},
        {"organic_results": [{"title": ["a", "b"], "snippet": "s"}]},
        {"answer_box": {"title": "t", "answer": 42}},
        DEEP,
    ],
    ids=["results-int", "title-list", "answer-int", "deep-nesting"],
)
def test_a_malformed_serp_page_is_a_failed_result_naming_the_server(serve, reply, monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", "sk-test")
    url = _server(serve, "/search.json", reply)
    result = _one(
        GoogleBackend(GoogleConfig(base_url=url, max_retries=1, backoff_base_s=0.0, max_failure_rate=1.0))
    )
    assert result.error is not None and url in result.error


@pytest.mark.parametrize(
    "reply",
    [{"result": [[{"document": {"contents": 5}}]]}, {"result": [[["nested"]]]}],
    ids=["contents-int", "hit-list"],
)
def test_a_malformed_retriever_hit_is_a_failed_result_naming_the_server(serve, reply):
    url = _server(serve, "/retrieve", reply)
    result = _one(WikiBackend(WikiConfig(url=url, max_retries=0, max_failure_rate=1.0)))
    assert result.error is not None and url in result.error


def test_a_key_with_plus_and_equals_is_masked_in_every_encoding(serve, monkeypatch):
    """SerpAPI answers 500 echoing the request URL, where the key appears percent-encoded."""
    key = "sk-a+b/c=9"

    async def echo(request: Request) -> Response:
        return Response(f"failed: {request.url}", status_code=500)

    url = serve(Starlette(routes=[Route("/search.json", echo)]))
    monkeypatch.setenv("SERPAPI_API_KEY", key)
    config = GoogleConfig(base_url=url, max_retries=0, max_failure_rate=1.0)
    result = _one(GoogleBackend(config))
    assert "failed: " in result.error
    for form in (key, "sk-a%2Bb%2Fc%3D9", "sk-a%2bb%2fc%3d9", "sk-a+b%2Fc%3D9"):
        assert form not in result.error, result.error
    assert "***" in result.error


def test_an_oversized_or_compression_bomb_reply_is_cut_off(serve):
    big = _chat("Doc 1: " + "x" * 200_000)
    bomb = gzip.compress(b'{"choices": [{"message": {"content": "' + b"x" * 50_000_000 + b'"}}]}')

    async def huge(_: Request) -> JSONResponse:
        return JSONResponse(big)

    async def zipped(_: Request) -> Response:
        return Response(bomb, media_type="application/json", headers={"content-encoding": "gzip"})

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"data": [{"id": "sim"}]})

    for handler in (huge, zipped):
        app = Starlette(
            routes=[Route("/v1/chat/completions", handler, methods=["POST"]), Route("/v1/models", models)]
        )
        url = serve(app)
        config = SimulateConfig(urls=[url], max_retries=0, max_failure_rate=1.0, max_reply_bytes=100_000)
        result = _one(SimulateSFTBackend(config))
        assert result.error is not None and "over max_reply_bytes=100000" in result.error, result.error
