"""Batched text generation for the built-in simulation server, on the project's one decode loop.

One call to `GenerationEngine.generate` runs a whole batch of independent requests through
`verl.workers.rollout.hf_decode.BatchDecoder` (the same loop as the transformers rollout backend):
left-padded prompts with real-token positions, KV cache, finished rows dropped, and per-row temperature,
top-p, token budget, stop strings and random generator, so requests with different settings share a batch
and a seeded request samples the same tokens whatever else is batched.

This module adds what the OpenAI API needs on top: text. The decoder returns token ids exactly as sampled;
here the text is decoded with the request's `skip_special_tokens`, cut before the first stop string (the
API does not return the stop string), and EOS is left out of the text. Both EOS and a stop string are
reported as finish_reason "stop", as the OpenAI API does; `stop_reason` says which (vLLM's field: the stop
string matched, None for EOS), so a client can tell a finished answer from a cut action.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from verl.utils.hub import resolve_model
from verl.workers.rollout.hf_decode import (
    DTYPES,
    BatchDecoder,
    DecodeParams,
    DecodeRequest,
    DecodeResult,
    resolve_device,
)


@dataclass(frozen=True)
class SamplingParams:
    """How one row is decoded. temperature 0 means greedy (argmax); seed None means a fresh random seed."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True


@dataclass
class GenerationRequest:
    """One row of a batch: the prompt as token ids, its sampling parameters, and `cancel`: set it (from any
    thread) to stop the row after its current token, finish_reason "abort" (its client went away)."""

    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class GenerationResult:
    """What one row produced. `token_ids` are the sampled ids (EOS included when it ended the row)."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or a stop string), "length" (max_tokens reached) or "abort" (cancelled)
    prompt_tokens: int
    stop_reason: str | None = (
        None  # the stop string that ended the row (vLLM's field); None for EOS or length
    )

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


class GenerationEngine:
    """A causal LM and its tokenizer, loaded once, generating batches of `GenerationRequest`s.

    `prefix_reuse`: a prefill starts from the stored keys and values of the prompt prefix it shares with the
    previous one (`BatchDecoder`'s `reuse_prefix`: the simulation template's opening is computed once).
    Not thread-safe: the server calls `generate` from its single batching worker only.
    """

    def __init__(
        self, model_path: str | Path, device: str = "auto", dtype: str = "auto", prefix_reuse: bool = True
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(resolve_model(str(model_path), "--model"))
        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
        try:
            self.device = resolve_device(device)
        except ValueError as err:
            raise ValueError(f"--device: {err}") from None
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=DTYPES[dtype] if dtype != "auto" else "auto"
        )
        self.model.to(self.device).eval()
        self.decoder = BatchDecoder(self.model, self.tokenizer, self.device, reuse_prefix=prefix_reuse)
        self.pad_id = self.decoder.pad_id
        self.eos_ids = self.decoder.eos_ids
        self.max_model_len = self.decoder.max_model_len

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt ids of a chat conversation, as `/v1/chat/completions` builds them (template applied,
        generation prompt added, no extra special tokens)."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Decode all `requests` together; results come back in the same order."""
        results = self.decoder.decode([_decode_request(req) for req in requests])
        return [self._result(req, res) for req, res in zip(requests, results, strict=True)]

    def serve(self, source: JobSource, max_rows: int) -> None:
        """Continuous batching (`BatchDecoder.serve`): generate the requests `source` hands over, up to
        `max_rows` at a time, each one finished the step its row ends, until `source` closes."""
        self.decoder.serve(_DecodeSource(self, source), max_rows)

    def generate_in_batches(
        self, requests: Sequence[GenerationRequest], batch_size: int, desc: str | None = None
    ) -> list[GenerationResult]:
        """`generate` over `requests`, `batch_size` at a time (memory stays bounded on long lists), with a
        progress bar labelled `desc` when given; results in the same order."""
        from tqdm import tqdm

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        starts = range(0, len(requests), batch_size)
        if desc is not None:
            starts = tqdm(starts, desc=desc, unit="batch")
        return [out for start in starts for out in self.generate(requests[start : start + batch_size])]

    def _result(self, request: GenerationRequest, result: DecodeResult) -> GenerationResult:
        params = request.params
        ids = result.token_ids
        if result.finish_reason == "eos":
            text = self._decode_text(ids[:-1], params)
        else:
            text = self._decode_text(ids, params)
            if result.stop is not None:
                # The API returns the text before the first stop string, without it.
                cuts = [pos for pos in (text.find(s) for s in params.stop) if pos >= 0]
                text = text[: min(cuts)] if cuts else text
        reason = result.finish_reason if result.finish_reason in ("length", "abort") else "stop"
        stop = result.stop if result.finish_reason == "stop" else None
        return GenerationResult(text, list(ids), reason, len(request.prompt_ids), stop)

    def _decode_text(self, ids: list[int], params: SamplingParams) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=params.skip_special_tokens)


class JobSource(Protocol):
    """`RequestSource` in this module's terms (the server's batcher implements it)."""

    def take(self, room: int, idle: bool) -> list[GenerationRequest] | None: ...
    def finish(self, request: GenerationRequest, result: GenerationResult) -> None: ...
    def fail(self, request: GenerationRequest, error: Exception) -> None: ...
    def step(self, rows: int) -> None: ...


class _DecodeSource:
    """Adapts a `JobSource` of `GenerationRequest`s to the decoder's `RequestSource`."""

    def __init__(self, engine: GenerationEngine, jobs: JobSource):
        self.engine, self.jobs = engine, jobs
        self.pending: dict[int, GenerationRequest] = {}  # id(decode request) -> the job it came from

    def take(self, room: int, idle: bool) -> list[DecodeRequest] | None:
        taken = self.jobs.take(room, idle)
        if taken is None:
            return None
        requests = []
        for job in taken:
            try:
                request = _decode_request(job)
            except ValueError as err:
                self.jobs.fail(job, err)
                continue
            self.pending[id(request)] = job
            requests.append(request)
        return requests

    def finish(self, request: DecodeRequest, result: DecodeResult) -> None:
        job = self.pending.pop(id(request))
        self.jobs.finish(job, self.engine._result(job, result))

    def fail(self, request: DecodeRequest, error: Exception) -> None:
        self.jobs.fail(self.pending.pop(id(request)), error)

    def step(self, rows: int) -> None:
        self.jobs.step(rows)


def _decode_request(req: GenerationRequest) -> DecodeRequest:
    params = req.params
    decode_params = DecodeParams(
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        stop=tuple(params.stop),
        ignore_eos=params.ignore_eos,
        skip_special_tokens=params.skip_special_tokens,
    )
    return DecodeRequest(req.prompt_ids, decode_params, params.seed, req.cancel.is_set)
