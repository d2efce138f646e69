"""The simulated search engine: an LLM behind an OpenAI-compatible chat API writes the documents.

`simulate_sft` speaks to a fine-tuned simulation LLM, `simulate_prompt` to a plain instruct model (its
prompt adds a worked example); both send `POST {url}/v1/chat/completions` with an empty system message and
the simulation prompt as the user message (zerosearch.templates.simulation_messages). SGLang, `vllm serve`
and the built-in zerosearch.simulation.server are interchangeable behind that API.

For each request the backend draws noisy-or-useful with the call's `noise_prob` (from the request's own
seed when it carries one, else from the backend's seeded stream, so a run is reproducible) and records the
draw in `SearchResult.noisy`; a seeded request also sends a derived `seed` so the server samples the same
documents again. Each request's prompt is built from that request's own row context: its `question` (str)
and `golden_answers` (a list of str).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from llm_agent.search import SearchRequest, SearchResult
from verl.utils.seed import derive_seed
from zerosearch.search.balance import ServerPool
from zerosearch.search.base import HttpSearchBackend, failed_result
from zerosearch.search.client import AttemptError, HttpOptions, SearchBackendError, read_json
from zerosearch.templates import DEFAULT_SIMULATION_TEMPLATE, check_simulation_template, simulation_messages

# "Doc 3:", "doc 3.", "Document 3)" at the start of a line, optionally in bold.
_DOC_MARKER = re.compile(r"^[ \t]*(?:\*\*)?doc(?:ument)?[ \t]*\d+[ \t]*[:.)](?:\*\*)?[ \t]*", re.I | re.M)


def parse_documents(text: str, topk: int) -> list[str]:
    """Split a simulator's output into at most `topk` documents.

    Documents start with "Doc N:" lines (text before the first one, such as "Here are five documents", is
    dropped); a document may run over several lines, which are joined with spaces. Output without any such
    marker is split into its non-empty lines. The list is cut after document `topk`.
    """
    markers = list(_DOC_MARKER.finditer(text))
    if markers:
        ends = [m.start() for m in markers[1:]] + [len(text)]
        blocks = [text[m.end() : end] for m, end in zip(markers, ends, strict=True)]
    else:
        blocks = text.splitlines()
    docs = [" ".join(block.split()) for block in blocks]
    return [d for d in docs if d][:topk]


def row_context(question: str, golden_answers) -> dict[str, Any]:
    """A dataset row's context as a simulator reads it from `SearchRequest.context`."""
    return {"question": str(question), "golden_answers": tuple(str(a) for a in golden_answers)}


def row_question_and_answers(req: SearchRequest, position: int, backend: str) -> tuple[str, list[str]]:
    """The question and golden answers a simulator needs, from the request's row context; an error naming
    the request's position and the context field when either is missing or of the wrong type."""
    question, answers = req.context.get("question"), req.context.get("golden_answers", ())
    if not isinstance(question, str):
        raise TypeError(
            f"{backend}: request {position} context field 'question' must be a str, got {type(question).__name__}"
        )
    if not isinstance(answers, list | tuple) or not all(isinstance(a, str) for a in answers):
        raise TypeError(f"{backend}: request {position} context field 'golden_answers' must be a list of str")
    return question, list(answers)


def normalize_base_url(url: str) -> str:
    """Accept both "http://host:port" and the OpenAI-client style "http://host:port/v1"."""
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


@dataclass(kw_only=True)
class SimulateConfig(HttpOptions):
    """Options of the simulate_sft / simulate_prompt backends (plus the shared HttpOptions).

    urls: one or more OpenAI-compatible servers (a list, or one string with commas); balanced by least
        in-flight requests.
    model: the served model name sent in each request; None asks the first server's /v1/models once.
    seed: seed of the noisy/useful draws.
    answer_mode: which golden answers go into the prompt: "first" (default) or "all".
    template: the simulation prompt set (zerosearch/templates): "reference" (default), the text the released
        simulation LLMs were tuned on, byte for byte; "project", the project's own wording; or a path with
        {mode}/{label} in it (a file per case).
    max_tokens, temperature, top_p: sampling of the simulator's reply.
    api_key_env: name of an environment variable holding the servers' API key (`vllm serve --api-key`,
        SGLang `--api-key`), sent as a bearer token; None sends none. The key itself is never a config value.
    """

    urls: list[str] | str
    model: str | None = None
    seed: int = 0
    answer_mode: Literal["first", "all"] = "first"
    template: str = DEFAULT_SIMULATION_TEMPLATE
    max_tokens: int = 600
    temperature: float = 0.8
    top_p: float = 1.0
    api_key_env: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        urls = self.urls.split(",") if isinstance(self.urls, str) else list(self.urls)
        self.urls = [normalize_base_url(u) for u in urls if u.strip()]
        if not self.urls:
            raise ValueError("SimulateConfig.urls: give at least one server URL, e.g. http://127.0.0.1:8001")
        if self.answer_mode not in ("first", "all"):
            raise ValueError(
                f"SimulateConfig.answer_mode: expected 'first' or 'all', got {self.answer_mode!r}"
            )
        if self.max_tokens < 1:
            raise ValueError(f"SimulateConfig.max_tokens: must be >= 1, got {self.max_tokens}")


def check_served_model(backend: str, model: str, urls: list[str], headers: dict[str, str]) -> None:
    """Fail at start, not at the first search with a 404, when a server that answers does not serve `model`
    (a server that does not answer yet is left to the search's retries)."""
    for url in urls:
        request = urllib.request.Request(f"{url}/v1/models", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                served = [str(m.get("id")) for m in json.load(response).get("data", [])]
        except (OSError, ValueError, AttributeError):
            continue
        if served and model not in served:  # a server that lists no model cannot be checked
            raise ValueError(
                f"{backend}: search.model is {model!r}, but {url} serves {served}: leave search.model unset "
                f"(the served name is read from the server) or set it to the served name"
            )


class SimulateSFTBackend(HttpSearchBackend):
    """Documents written by a fine-tuned simulation LLM (the paper's default search engine in training)."""

    name = "simulate_sft"
    config_class = SimulateConfig
    mode = "sft"

    def __init__(self, config: SimulateConfig):
        key = os.environ.get(config.api_key_env, "").strip() if config.api_key_env else ""
        if config.api_key_env and not key:
            raise ValueError(
                f"{self.name}: api_key_env names {config.api_key_env}, but that environment variable is not set"
            )
        try:
            check_simulation_template(config.template, self.mode)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"{self.name}: template {config.template!r}: {e}") from e
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if config.model is not None:
            check_served_model(self.name, config.model, config.urls, headers)
        super().__init__(config, secrets=[key] if key else [])
        self._headers = headers
        self.pool = ServerPool(config.urls)
        self._rng = random.Random(config.seed)
        self._model = config.model

    def server_urls(self) -> list[str]:
        return list(self.config.urls)

    async def _search_batch(self, requests: list[SearchRequest], noise_prob: float) -> list[SearchResult]:
        # Draw every request's noise up front, in request order, so the draws depend only on the seed and
        # the sequence of requests, never on which reply arrives first.
        noisy = [self._noise_draw(req) < noise_prob for req in requests]
        model = self._model or await self._detect_model()
        # Each task builds its own prompt just before sending it, so the first requests are on the wire
        # while later prompts are still being rendered. A prompt the template cannot take (a caller bug)
        # stops the batch with the request's position once every task has finished.
        outcomes = await asyncio.gather(
            *(self._one(i, req, n, model) for i, (req, n) in enumerate(zip(requests, noisy, strict=True))),
            return_exceptions=True,
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            raise errors[0]
        return [o for o in outcomes if isinstance(o, SearchResult)]

    def _noise_draw(self, req: SearchRequest) -> float:
        """A uniform draw in [0, 1): from the request's own seed when it has one (reproducible whatever
        came before), else from the backend's seeded stream."""
        if req.seed is None:
            return self._rng.random()
        return random.Random(derive_seed(self.config.seed, req.seed)).random()

    async def _detect_model(self) -> str:
        url = f"{self.config.urls[0]}/v1/models"

        async def attempt(session: aiohttp.ClientSession) -> str:
            async with session.get(url, headers=self._headers) as response:
                body = await read_json(response, url, self.config.max_reply_bytes)
            try:
                return str(body["data"][0]["id"])
            except (KeyError, IndexError, TypeError):
                raise AttemptError(f"no model listed by {url}: {str(body)[:200]}", retryable=False) from None

        outcome = await self.core.run(attempt, url)
        if outcome.value is None:
            raise SearchBackendError(
                self.name,
                self.config.urls[:1],
                1,
                1,
                f"could not find the served model name ({outcome.error}); set 'model'",
            )
        self._model = outcome.value
        return outcome.value

    async def _one(self, position: int, req: SearchRequest, noisy: bool, model: str) -> SearchResult:
        question, answers = row_question_and_answers(req, position, self.name)
        try:
            messages = simulation_messages(
                req.query,
                question,
                answers,
                useful=not noisy,
                mode=self.mode,
                answer_mode=self.config.answer_mode,
                template=self.config.template,
            )
        except ValueError as e:
            raise ValueError(f"{self.name}: request {position} (query {req.query!r}): {e}") from e
        payload = {
            "model": model,
            "messages": messages,
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
            "top_p": self.config.top_p,
            "n": 1,
        }
        if req.seed is not None:  # 31 bits: what every OpenAI-compatible server accepts
            payload["seed"] = derive_seed(self.config.seed, req.seed, 1) % 2**31
        used: list[str] = []

        async def attempt(session: aiohttp.ClientSession) -> tuple[str, Any]:
            with self.pool.lease() as (index, base):
                url = f"{base}/v1/chat/completions"
                used.append(base)
                try:
                    async with session.post(url, json=payload, headers=self._headers) as response:
                        self.pool.mark_up(index)
                        reply = await read_json(response, url, self.config.max_reply_bytes)
                except aiohttp.ClientConnectorError:
                    self.pool.mark_down(index)
                    raise
            choice = reply["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str | None):
                raise TypeError(f"message.content is {type(text).__name__}, not text")
            return text or "", choice.get("finish_reason")

        outcome = await self.core.run(attempt, lambda: used[-1])
        meta = {"server": used[-1] if used else None, "model": model}
        if outcome.value is None:
            return failed_result(
                outcome.error or "unknown error", outcome.retries, outcome.latency_s, noisy, **meta
            )
        text, meta["finish_reason"] = outcome.value
        meta["text"] = text  # the raw output, for format checks (zerosearch.simtune audit)
        documents = parse_documents(text, req.topk)
        if not documents:
            meta["empty_output"] = True  # not an error: the model wrote nothing usable
        return SearchResult(
            documents=documents, noisy=noisy, latency_s=outcome.latency_s, retries=outcome.retries, meta=meta
        )


class SimulatePromptBackend(SimulateSFTBackend):
    """Documents written by a plain instruct model prompted with one worked example (no fine-tuning)."""

    name = "simulate_prompt"
    mode = "prompt"
