"""The OpenAI request schemas the built-in server accepts, and OpenAI-style error bodies.

Types are strict (a string is not an int, a bool is not a number) so a client bug shows up as a 400 that
names the field instead of a silently converted value. Unknown fields are ignored, as OpenAI clients send
many optional ones (frequency_penalty, logprobs, user, ...) that a simulation server has no use for.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from zerosearch.utils.http import error_response

MAX_N = 16
MAX_STOP_STRINGS = 16
MAX_PROMPTS = 64
# Each of a request's n samples uses seed + j, and torch takes 64-bit seeds: seed + n must stay in range.
MIN_SEED, MAX_SEED = -(2**63), 2**63 - 1 - MAX_N
# Below this (and above 0) logits / temperature overflow to inf and sampling breaks; 0 means greedy.
MIN_TEMPERATURE = 1e-5

Probability = Annotated[float, Field(strict=True, gt=0.0, le=1.0)]


class TextPart(BaseModel):
    """One part of a multi-part message content (only text parts make sense for a text model)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: StrictStr
    content: StrictStr | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class SamplingFields(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    max_tokens: Annotated[int, Field(strict=True, ge=1)] | None = None
    temperature: Annotated[float, Field(strict=True, ge=0.0, le=2.0)] = 1.0
    top_p: Probability = 1.0
    n: Annotated[int, Field(strict=True, ge=1, le=MAX_N)] = 1
    stop: StrictStr | list[StrictStr] | None = None
    seed: Annotated[int, Field(strict=True, ge=MIN_SEED, le=MAX_SEED)] | None = None
    stream: StrictBool = False
    # vLLM extensions, useful for benchmarks (ignore_eos) and for special-token-heavy outputs.
    ignore_eos: StrictBool = False
    skip_special_tokens: StrictBool = True

    @field_validator("temperature")
    @classmethod
    def _check_temperature(cls, value: float) -> float:
        if 0.0 < value < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}, got {value}")
        return value

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(stops)}")
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        return value

    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]


class CompletionRequest(SamplingFields):
    prompt: StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=MAX_PROMPTS)]

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class APIError(Exception):
    """An error returned to the client as {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self, status: int, message: str, param: str | None = None, error_type: str = "invalid_request_error"
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.error_type = status, message, param, error_type

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.param, self.error_type)


async def api_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def http_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (a body that cannot be parsed at all: not UTF-8, nested too deep, an integer
    too long for Python; an unknown path or method) in OpenAI's error body instead of {"detail": ...}."""
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 400 and "parsing the body" in detail:
        detail = (
            "request body could not be parsed as JSON (not UTF-8, nested too deeply, or a number too long)"
        )
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    response = APIError(exc.status_code, detail, error_type=kind).response()
    response.headers.update(exc.headers or {})
    return response


async def validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """Turn FastAPI's 422 into OpenAI's 400, naming the first offending field."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    loc = [part for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return APIError(400, f"request body is not valid JSON: {first.get('msg')}").response()
    # Pydantic adds the union member tried ("str", "list[str]") to the location; keep field names only.
    names = [
        str(p) for p in loc if isinstance(p, int) or (isinstance(p, str) and "[" not in p and p != "str")
    ]
    where = ".".join(names) if names else "body"
    param = names[0] if names else None
    return APIError(400, f"{where}: {first.get('msg')}", param=param).response()
