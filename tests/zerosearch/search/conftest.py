"""Real HTTP test servers on 127.0.0.1 for the search backends, run by uvicorn in a background thread
(tests/zerosearch/conftest.py: `serve`).

- ChatServer: OpenAI-compatible /v1/chat/completions whose documents echo the prompt's query, question,
  answer and label line, so a test can check that each request carried its own data and noise draw.
- SerpServer: SerpAPI's /search.json shape.
- RetrieverServer: Search-R1's /retrieve in both forms.
Each records what it saw (calls, bodies, most requests in flight at once) and can be told to answer
with an error status, to be slow, or to hang.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class Recorder:
    """What a fake server saw, and how it should misbehave."""

    latency_s: float = 0.0
    fail_status: int | None = None  # answer every call with this status...
    fail_first: int | None = None  # ...or only the first N calls
    fail_marker: str | None = None  # ...or only calls whose body contains this text
    fail_message: str = "simulated failure"
    retry_after: str | None = None
    hang: bool = False
    calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    bodies: list = field(default_factory=list)

    async def enter(self, body) -> JSONResponse | None:
        """Count the call; return an error response when this call should fail (after hang/latency)."""
        self.calls += 1
        self.bodies.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hang:
                await asyncio.sleep(30)
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
        finally:
            self.in_flight -= 1
        failing = (
            self.fail_status is not None
            and (self.fail_first is None or self.calls <= self.fail_first)
            and (self.fail_marker is None or self.fail_marker in json.dumps(body))
        )
        if failing:
            headers = {"retry-after": self.retry_after} if self.retry_after else None
            return JSONResponse({"error": {"message": self.fail_message}}, self.fail_status, headers=headers)
        return None


_QUERY = re.compile(r"^Query: (.*)$", re.M)
_QA = re.compile(r'answer the question: "(.*)" whose answer is (.*)\.$', re.M)
_LABEL = re.compile(r"^(Useful|Noisy) Output:\s*$", re.M)


def echo_documents(prompt: str, n_docs: int) -> str:
    """Documents that say which query, question, answer and label the prompt carried."""
    query = _QUERY.findall(prompt)[-1]
    qa = _QA.search(prompt)
    question, answer = (qa.group(1), qa.group(2)) if qa else ("-", "-")
    label = _LABEL.findall(prompt)[-1]
    return "\n".join(
        f"Doc {i}: query={query} | question={question} | answer={answer} | label={label}"
        for i in range(1, n_docs + 1)
    )


@dataclass
class ChatServer(Recorder):
    model: str = "fake-simulator"
    n_docs: int = 5
    content: str | None = None  # a fixed reply instead of the echo
    authorization: list = field(default_factory=list)  # the Authorization header of every chat call

    def app(self) -> Starlette:
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            self.authorization.append(request.headers.get("authorization"))
            error = await self.enter(body)
            if error is not None:
                return error
            prompt = body["messages"][-1]["content"]
            text = self.content if self.content is not None else echo_documents(prompt, self.n_docs)
            return JSONResponse(
                {
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )

        async def models(_: Request) -> JSONResponse:
            return JSONResponse({"object": "list", "data": [{"id": self.model, "object": "model"}]})

        return Starlette(
            routes=[
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/v1/models", models, methods=["GET"]),
            ]
        )


@dataclass
class SerpServer(Recorder):
    with_answer_box: bool = False
    no_results: bool = False  # answer as SerpAPI does for a query without results

    def app(self) -> Starlette:
        async def search(request: Request) -> JSONResponse:
            params = dict(request.query_params)
            error = await self.enter(params)
            if error is not None:
                return JSONResponse({"error": f"Invalid API key: {params.get('api_key')}"}, error.status_code)
            if self.no_results:
                return JSONResponse({"error": "Google hasn't returned any results for this query."})
            q, num = params["q"], int(params.get("num", 10))
            body: dict = {
                "search_metadata": {"status": "Success"},
                "organic_results": [
                    {
                        "position": i,
                        "title": f"Result {i} for {q}",
                        "link": f"https://example.org/{i}",
                        "snippet": f"Snippet {i} about {q}.",
                    }
                    for i in range(1, num + 1)
                ],
            }
            if self.with_answer_box:
                body["answer_box"] = {"type": "organic_result", "title": f"Answer for {q}", "answer": "42"}
            return JSONResponse(body)

        return Starlette(routes=[Route("/search.json", search, methods=["GET"])])


@dataclass
class RetrieverServer(Recorder):
    """Search-R1's /retrieve: the k "hits" for a query are passages titled after it."""

    def app(self) -> Starlette:
        def passage(query: str, rank: int) -> dict:
            return {"id": str(rank), "contents": f'"{query} {rank}"\nPassage {rank} about\n{query}.'}

        async def retrieve(request: Request) -> JSONResponse:
            body = await request.json()
            error = await self.enter(body)
            if error is not None:
                return error
            if "queries" in body:
                k, scores = body["topk"], body.get("return_scores", False)
                result = [
                    [
                        {"document": passage(q, r), "score": 10.0 - r} if scores else passage(q, r)
                        for r in range(k)
                    ]
                    for q in body["queries"]
                ]
                return JSONResponse({"result": result})
            q = body["query"]
            return JSONResponse([{"text": passage(q, r)["contents"]} for r in range(body["top_k"])])

        return Starlette(routes=[Route("/retrieve", retrieve, methods=["POST"])])


@pytest.fixture
def chat_server(serve):
    """chat_server(**behaviour) -> (ChatServer, url)."""

    def start(**behaviour) -> tuple[ChatServer, str]:
        recorder = ChatServer(**behaviour)
        return recorder, serve(recorder.app())

    return start


@pytest.fixture
def serp_server(serve):
    """serp_server(**behaviour) -> (SerpServer, url)."""

    def start(**behaviour) -> tuple[SerpServer, str]:
        recorder = SerpServer(**behaviour)
        return recorder, serve(recorder.app())

    return start


@pytest.fixture
def retriever_server(serve):
    """retriever_server(**behaviour) -> (RetrieverServer, url)."""

    def start(**behaviour) -> tuple[RetrieverServer, str]:
        recorder = RetrieverServer(**behaviour)
        return recorder, serve(recorder.app())

    return start
