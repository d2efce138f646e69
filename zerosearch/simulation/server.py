"""Built-in OpenAI-compatible server for the simulation LLM (transformers + continuous batching).

    python -m zerosearch.simulation.server --model PATH --port 8000 [--host 127.0.0.1] [--max-batch-size 32]
        [--max-wait-ms 5] [--max-prompt-tokens N] [--max-body-bytes 4000000] [--served-model-name NAME]
        [--dtype auto] [--device auto]

Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET /stats.
It speaks the subset of the OpenAI API the search client uses, so SGLang, `vllm serve` and this server are
interchangeable behind it (docs/serving.md). It is meant for CPUs and small GPUs: the toy world, tests and
laptops. Concurrent requests are decoded together by one worker thread (`ContinuousBatcher`), up to
--max-batch-size rows at a time: a request joins the running batch at its next step and is answered the step
its row ends.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from zerosearch.simulation.batcher import ContinuousBatcher
from zerosearch.simulation.engine import GenerationEngine, GenerationRequest, GenerationResult, SamplingParams
from zerosearch.simulation.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    SamplingFields,
    api_error_handler,
    http_error_handler,
    validation_error_handler,
)
from zerosearch.utils.http import BodySizeLimit, add_connection_arguments, connection_limits, serve

log = logging.getLogger("zerosearch.simulation.server")


@dataclass(frozen=True)
class ServerLimits:
    """Request limits; None means "the model's context length"."""

    max_prompt_tokens: int | None = None
    max_tokens_cap: int = 4096
    default_max_tokens: int = 256
    max_body_bytes: int = 4_000_000


def create_app(
    engine: GenerationEngine,
    served_model_name: str,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    limits: ServerLimits | None = None,
) -> FastAPI:
    """Build the FastAPI app around a loaded engine. The batching worker runs while the app is up."""
    limits = limits or ServerLimits()
    batcher: ContinuousBatcher[GenerationRequest, GenerationResult] = ContinuousBatcher(
        engine, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, describe=_describe
    )
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="ZeroSearch simulation server", lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)

    def check_common(req: SamplingFields) -> None:
        # An empty name means the served model, as the reference client sends it (and vLLM accepts it).
        if req.model and req.model != served_model_name:
            raise APIError(
                404,
                f"model {req.model!r} is not served here; this server serves {served_model_name!r}",
                param="model",
                error_type="not_found_error",
            )
        if req.stream:
            raise APIError(400, "stream=true is not supported by this server", param="stream")
        if req.max_tokens is not None and req.max_tokens > limits.max_tokens_cap:
            raise APIError(
                400,
                f"max_tokens is {req.max_tokens}, over this server's cap of {limits.max_tokens_cap}",
                param="max_tokens",
            )

    def build_rows(req: SamplingFields, prompt_ids: list[int], param: str) -> list[GenerationRequest]:
        """Check lengths against the limits and expand the request into its n rows."""
        prompt_limit = min(limits.max_prompt_tokens or engine.max_model_len, engine.max_model_len)
        if not prompt_ids:
            raise APIError(400, f"{param}: the prompt is empty", param=param)
        if len(prompt_ids) > prompt_limit:
            raise APIError(
                400,
                f"{param}: the prompt has {len(prompt_ids)} tokens, over the limit of {prompt_limit}",
                param=param,
            )
        room = engine.max_model_len - len(prompt_ids)
        max_tokens = req.max_tokens if req.max_tokens is not None else min(limits.default_max_tokens, room)
        if max_tokens < 1 or len(prompt_ids) + max_tokens > engine.max_model_len:
            raise APIError(
                400,
                f"max_tokens: prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) "
                f"exceeds the model's context length of {engine.max_model_len}",
                param="max_tokens",
            )
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            stop=req.stop_strings(),
            seed=req.seed,
            ignore_eos=req.ignore_eos,
            skip_special_tokens=req.skip_special_tokens,
        )
        # Each of the n samples gets its own seed, so they differ from one another yet stay reproducible.
        return [
            GenerationRequest(prompt_ids, params if req.seed is None else replace(params, seed=req.seed + j))
            for j in range(req.n)
        ]

    async def run_rows(rows: list[GenerationRequest], http: Request) -> list[GenerationResult]:
        """Batch the rows and wait for them; if the client goes away meanwhile, its rows stop generating
        (queued ones are dropped, running ones end after their current token) instead of running on for
        nobody while other requests wait."""
        submitted = [batcher.submit(row) for row in rows]
        watcher = asyncio.create_task(_cancel_on_disconnect(http, rows, submitted))
        try:
            return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in submitted)))
        except asyncio.CancelledError:
            _cancel(rows, submitted)
            raise
        except Exception as e:
            raise APIError(
                500, f"generation failed: {type(e).__name__}: {e}", error_type="server_error"
            ) from e
        finally:
            watcher.cancel()

    def usage(results: list[GenerationResult], prompt_tokens: int) -> dict:
        completion = sum(r.completion_tokens for r in results)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, http: Request) -> JSONResponse:
        check_common(req)
        if not engine.tokenizer.chat_template:
            raise APIError(
                400, "the model's tokenizer has no chat template; use /v1/completions", param="messages"
            )
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        try:  # off the event loop: a long prompt must not stall /health and every other request
            prompt_ids = await asyncio.to_thread(engine.chat_prompt_ids, messages)
        except Exception as e:  # the template itself may reject a conversation (roles, order)
            raise APIError(400, f"messages: the chat template rejected them: {e}", param="messages") from e
        results = await run_rows(build_rows(req, prompt_ids, "messages"), http)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": None,
                "finish_reason": r.finish_reason,
                "stop_reason": r.stop_reason,
            }
            for i, r in enumerate(results)
        ]
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": served_model_name,
                "choices": choices,
                "usage": usage(results, len(prompt_ids)),
            }
        )

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, http: Request) -> JSONResponse:
        check_common(req)
        prompts = req.prompts()
        all_ids = await asyncio.to_thread(lambda: [engine.tokenizer(p)["input_ids"] for p in prompts])
        rows = [
            row
            for i, ids in enumerate(all_ids)
            for row in build_rows(req, ids, "prompt" if len(prompts) == 1 else f"prompt.{i}")
        ]
        results = await run_rows(rows, http)
        # OpenAI orders choices prompt by prompt, the n samples of a prompt next to each other.
        choices = [
            {
                "index": i,
                "text": r.text,
                "logprobs": None,
                "finish_reason": r.finish_reason,
                "stop_reason": r.stop_reason,
            }
            for i, r in enumerate(results)
        ]
        return JSONResponse(
            {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": served_model_name,
                "choices": choices,
                "usage": usage(results, sum(len(ids) for ids in all_ids)),
            }
        )

    @app.get("/v1/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [
                {
                    "id": served_model_name,
                    "object": "model",
                    "created": created,
                    "owned_by": "zerosearch",
                    "max_model_len": engine.max_model_len,
                }
            ],
        }

    @app.get("/health")
    async def health() -> JSONResponse:
        if not batcher.alive:
            return JSONResponse({"status": "error", "message": "batching worker is not running"}, 503)
        return JSONResponse({"status": "ok", "model": served_model_name})

    @app.get("/stats")
    async def stats() -> dict:
        return {
            **asdict(batcher.stats),
            "max_batch_size": batcher.max_batch_size,
            "max_wait_ms": batcher.max_wait_s * 1000.0,
            "torch_threads": torch.get_num_threads(),
        }

    return app


async def _cancel_on_disconnect(http: Request, rows: list[GenerationRequest], submitted: list) -> None:
    # The body is read by now, so the next ASGI message is the disconnect: wait for it, no polling.
    while (await http.receive())["type"] != "http.disconnect":
        pass
    log.info("client disconnected: cancelling %d row(s)", len(rows))
    _cancel(rows, submitted)


def _cancel(rows: list[GenerationRequest], submitted: list) -> None:
    for row, future in zip(rows, submitted, strict=True):
        future.cancel()  # still queued: the batcher drops it
        row.cancel.set()  # running: it stops after its current token


def _describe(job: GenerationRequest, result: GenerationResult) -> tuple[int, int]:
    return len(job.prompt_ids), result.completion_tokens


def _positive(flag: str):
    def parse(value: str) -> int:
        number = int(value)
        if number < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be >= 1, got {number}")
        return number

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m zerosearch.simulation.server", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", required=True, help="Hugging Face model folder (weights + tokenizer)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: local only)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--served-model-name", default=None, help="name clients pass as `model` (default: --model)"
    )
    p.add_argument("--max-batch-size", type=_positive("--max-batch-size"), default=32)
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="when nothing is decoding: how long the worker collects requests after the first before "
        "prefilling them together (while a batch runs, waiting requests join it at its next step)",
    )
    p.add_argument(
        "--max-prompt-tokens",
        type=_positive("--max-prompt-tokens"),
        default=None,
        help="reject longer prompts (default: the model's context length)",
    )
    p.add_argument(
        "--max-tokens-cap",
        type=_positive("--max-tokens-cap"),
        default=4096,
        help="largest max_tokens a request may ask for",
    )
    p.add_argument(
        "--default-max-tokens",
        type=_positive("--default-max-tokens"),
        default=256,
        help="max_tokens when a request does not say",
    )
    p.add_argument(
        "--max-body-bytes",
        type=_positive("--max-body-bytes"),
        default=4_000_000,
        help="refuse request bodies larger than this (413) before reading them",
    )
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--num-threads",
        type=_positive("--num-threads"),
        default=None,
        help="CPU threads for torch (default: torch's choice); 1 avoids thrashing on a shared CPU",
    )
    p.add_argument(
        "--no-prefix-reuse",
        action="store_true",
        help="prefill every prompt whole (default: start from the stored keys and values of the prefix a "
        "prompt shares with the previous prefill, e.g. the simulation template's opening)",
    )
    add_connection_arguments(p)
    args = p.parse_args(argv)
    if args.max_wait_ms < 0:
        p.error(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    args.connection_limits = connection_limits(args, p)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    try:
        engine = GenerationEngine(
            args.model, device=args.device, dtype=args.dtype, prefix_reuse=not args.no_prefix_reuse
        )
    except FileNotFoundError as e:  # neither a folder nor a model in the Hugging Face cache
        raise SystemExit(f"error: {e}") from None
    name = args.served_model_name or args.model
    limits = ServerLimits(
        args.max_prompt_tokens, args.max_tokens_cap, args.default_max_tokens, args.max_body_bytes
    )
    app = create_app(engine, name, args.max_batch_size, args.max_wait_ms, limits)
    log.info(
        "serving %s as %r on %s:%d (device %s, context %d, max batch %d)",
        args.model,
        name,
        args.host,
        args.port,
        engine.device,
        engine.max_model_len,
        args.max_batch_size,
    )
    serve(app, args.host, args.port, args.connection_limits)


if __name__ == "__main__":
    main()
