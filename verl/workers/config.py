"""Typed configs of the actor/rollout/reference worker and of the critic worker, with field names that are
verl's Hydra keys (`actor_rollout_ref.model.*`, `.actor.*`, `.ref.*`, `.rollout.*`, `critic.*`). The trainer
builds them once from the YAML (verl/trainer/config.py) and the workers receive them as they are. Every check
runs in __post_init__ and names the full key.

Batch-size units, as in verl's YAML, with the quantities the workers use as named, derived fields:
* `ppo_mini_batch_size` counts *prompts* per optimizer step, over all ranks;
* `mini_batch_samples` (derived) = ppo_mini_batch_size x rollout.n: trajectories per optimizer step, all ranks;
* `mini_batch_samples_per_rank` (derived) = mini_batch_samples / data-parallel world size;
* every `*_micro_batch_size_per_gpu` counts samples on one rank per forward/backward.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

from verl.algorithms.kl import KL_PENALTIES
from verl.algorithms.masked_ops import LOSS_AGG_MODES
from verl.utils.config import build, derived, require
from verl.utils.fsdp import DTYPES
from verl.utils.optim import LR_SCHEDULERS


def _positive(key: str, value: int | float) -> None:
    if value <= 0:
        raise ValueError(f"{key} must be > 0, got {value}")


def _non_negative(key: str, value: int | float) -> None:
    if value < 0:
        raise ValueError(f"{key} must be >= 0, got {value}")


def _dtype(key: str, value: str | None) -> None:
    if value is not None and value not in DTYPES:
        raise ValueError(f"{key}: unknown dtype {value!r}; valid: {', '.join(DTYPES)}")


def _loss_aggregation(key: str, mode: str, scale_factor: int | None) -> None:
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"{key}.loss_agg_mode: unknown {mode!r}; valid: {', '.join(LOSS_AGG_MODES)}")
    if scale_factor is not None:
        _positive(f"{key}.loss_scale_factor", scale_factor)
    elif mode == "seq-mean-token-sum-norm":
        raise ValueError(
            f"{key}.loss_scale_factor is required with loss_agg_mode=seq-mean-token-sum-norm: the constant each "
            f"sequence's token sum is divided by (configs/ppo_trainer.yaml: the response budget)"
        )


# transformers' attention implementations, and the package each needs beyond transformers itself.
ATTENTION_IMPLEMENTATIONS = {"eager": None, "sdpa": None, "flash_attention_2": "flash_attn"}


def _attention(key: str, value: str | None) -> None:
    """A known implementation whose kernel package is installed (checked in the driver, before any worker)."""
    if value is None:
        return
    if value not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"{key}: unknown attention implementation {value!r}; valid: {', '.join(ATTENTION_IMPLEMENTATIONS)} "
            f"or null (transformers' default)"
        )
    package = ATTENTION_IMPLEMENTATIONS[value]
    if package is not None and importlib.util.find_spec(package) is None:
        raise ValueError(
            f"{key}={value} needs the {package} package, which is not installed in {sys.executable}: install it "
            f"(make install-gpu, docs/gpu.md) or set {key}=sdpa"
        )


@dataclass
class OptimConfig:
    """actor.optim: AdamW and the warmup + constant/cosine schedule (verl/utils/optim.py).

    lr_warmup_steps >= 0 overrides lr_warmup_steps_ratio. total_training_steps is derived: the trainer's step
    count, set when the trainer config is built. KEY is the config key that errors name (the critic's subclass
    says critic.optim)."""

    KEY: ClassVar[str] = "actor.optim"

    lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    lr_warmup_steps: int = -1
    lr_warmup_steps_ratio: float = 0.0
    lr_scheduler: str = "constant"
    min_lr_ratio: float = 0.0
    total_training_steps: int = derived(-1, "trainer.total_training_steps")

    def __post_init__(self):
        self.betas = tuple(self.betas)
        key = self.KEY
        _positive(f"{key}.lr", self.lr)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"{key}.betas must be two numbers in [0, 1), got {self.betas}")
        _non_negative(f"{key}.weight_decay", self.weight_decay)
        _positive(f"{key}.eps", self.eps)
        if not 0.0 <= self.lr_warmup_steps_ratio <= 1.0:
            raise ValueError(
                f"{key}.lr_warmup_steps_ratio must be in [0, 1], got {self.lr_warmup_steps_ratio}"
            )
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(
                f"{key}.lr_scheduler: unknown {self.lr_scheduler!r}; valid: {', '.join(LR_SCHEDULERS)}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"{key}.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class FSDPConfig:
    """actor.fsdp_config / ref.fsdp_config / critic.model.fsdp_config: mixed precision (None = compute in the
    stored dtype) and, on GPU, offload to CPU memory: parameters (with their gradients and optimizer state)
    between uses, or only the optimizer state between updates (actor and critic; the reference has none)."""

    param_dtype: str | None = None
    reduce_dtype: str | None = None
    param_offload: bool = False
    optimizer_offload: bool = False

    def __post_init__(self):
        _dtype("fsdp_config.param_dtype", self.param_dtype)
        _dtype("fsdp_config.reduce_dtype", self.reduce_dtype)


@dataclass
class ModelConfig:
    """actor_rollout_ref.model: the Hugging Face folder the actor, reference and rollout start from."""

    path: str = ""
    tokenizer_path: str | None = None
    dtype: str = "float32"
    enable_gradient_checkpointing: bool = False
    use_remove_padding: bool = False
    attn_implementation: str | None = None

    def __post_init__(self):
        if not self.path:
            raise ValueError("actor_rollout_ref.model.path is required (a Hugging Face model folder)")
        _dtype("actor_rollout_ref.model.dtype", self.dtype)
        _attention("actor_rollout_ref.model.attn_implementation", self.attn_implementation)


@dataclass
class ActorConfig:
    """actor_rollout_ref.actor: the PPO/GRPO update (see verl/workers/actor.py)."""

    ppo_mini_batch_size: int = 64
    ppo_micro_batch_size_per_gpu: int = 4
    ppo_epochs: int = 1
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float | None = None
    loss_agg_mode: str = "token-mean"
    loss_scale_factor: int | None = None
    entropy_coeff: float = 0.0
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.001
    kl_loss_type: str = "low_var_kl"
    grad_clip: float = 1.0
    optim: OptimConfig = field(default_factory=OptimConfig)
    fsdp_config: FSDPConfig = field(default_factory=FSDPConfig)
    mini_batch_samples: int = derived(0, "ppo_mini_batch_size x rollout.n: trajectories per optimizer step")
    mini_batch_samples_per_rank: int = derived(0, "mini_batch_samples / data-parallel ranks")

    def __post_init__(self):
        _positive("actor.ppo_mini_batch_size", self.ppo_mini_batch_size)
        _positive("actor.ppo_micro_batch_size_per_gpu", self.ppo_micro_batch_size_per_gpu)
        _positive("actor.ppo_epochs", self.ppo_epochs)
        _non_negative("actor.clip_ratio_low", self.clip_ratio_low)
        _non_negative("actor.clip_ratio_high", self.clip_ratio_high)
        if self.clip_ratio_c is not None and self.clip_ratio_c <= 1.0:
            raise ValueError(f"actor.clip_ratio_c must be > 1 (dual clip) or null, got {self.clip_ratio_c}")
        _loss_aggregation("actor", self.loss_agg_mode, self.loss_scale_factor)
        _non_negative("actor.entropy_coeff", self.entropy_coeff)
        _non_negative("actor.kl_loss_coef", self.kl_loss_coef)
        if self.kl_loss_type not in KL_PENALTIES:
            raise ValueError(
                f"actor.kl_loss_type: unknown {self.kl_loss_type!r}; valid: {', '.join(KL_PENALTIES)}"
            )
        _positive("actor.grad_clip", self.grad_clip)


@dataclass
class RefConfig:
    """actor_rollout_ref.ref: the frozen reference model's forward passes."""

    log_prob_micro_batch_size_per_gpu: int = 8
    fsdp_config: FSDPConfig = field(default_factory=FSDPConfig)

    def __post_init__(self):
        _positive("ref.log_prob_micro_batch_size_per_gpu", self.log_prob_micro_batch_size_per_gpu)


@dataclass
class ValKwargsConfig:
    """rollout.val_kwargs: validation decoding (greedy by default: temperature 0)."""

    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1

    def __post_init__(self):
        _non_negative("rollout.val_kwargs.temperature", self.temperature)
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"rollout.val_kwargs.top_p must be in (0, 1], got {self.top_p}")
        if self.n != 1:
            raise ValueError(f"rollout.val_kwargs.n must be 1, got {self.n}")


@dataclass
class RolloutConfig:
    """actor_rollout_ref.rollout: the generation backend (`name`, a registered RolloutEngine) and defaults.

    `dtype` is the rollout copy's weight dtype; the actor's old log-probs use
    `log_prob_micro_batch_size_per_gpu` (verl keeps that key under rollout)."""

    name: str = "hf"
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    prompt_length: int = 512
    response_length: int = 512
    dtype: str = "float32"
    log_prob_micro_batch_size_per_gpu: int = 8
    seed: int | None = None
    # vLLM engine options (name: vllm); the transformers backend ignores them.
    tensor_model_parallel_size: int = 1
    load_format: str = "dummy"
    free_cache_engine: bool | None = None
    sleep_level: int = 1
    gpu_memory_utilization: float = 0.5
    max_model_len: int | None = None
    enforce_eager: bool = True
    val_kwargs: ValKwargsConfig = field(default_factory=ValKwargsConfig)

    def __post_init__(self):
        if self.name == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ValueError(
                f"rollout.name=vllm needs vLLM, which is not installed in {sys.executable}: install it "
                f"(make install-gpu, docs/gpu.md; vLLM's CPU build: make .venv-vllm) or set rollout.name=hf"
            )
        _non_negative("rollout.temperature", self.temperature)
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"rollout.top_p must be in (0, 1], got {self.top_p}")
        _positive("rollout.n", self.n)
        _positive("rollout.prompt_length", self.prompt_length)
        _positive("rollout.response_length", self.response_length)
        _dtype("rollout.dtype", self.dtype)
        _positive("rollout.log_prob_micro_batch_size_per_gpu", self.log_prob_micro_batch_size_per_gpu)
        _positive("rollout.tensor_model_parallel_size", self.tensor_model_parallel_size)
        if self.load_format not in ("dummy", "auto", "safetensors"):
            raise ValueError(
                f"rollout.load_format must be dummy, auto or safetensors, got {self.load_format!r}"
            )
        if self.sleep_level not in (1, 2):
            raise ValueError(f"rollout.sleep_level must be 1 or 2, got {self.sleep_level}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"rollout.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.max_model_len is not None:
            _positive("rollout.max_model_len", self.max_model_len)


@dataclass
class ActorRolloutRefConfig:
    """actor_rollout_ref: everything the hybrid worker needs."""

    model: ModelConfig
    actor: ActorConfig = field(default_factory=ActorConfig)
    ref: RefConfig = field(default_factory=RefConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], world_size: int = 1, total_training_steps: int = -1
    ) -> ActorRolloutRefConfig:
        """Build from a plain nested dict (the trainer config's `actor_rollout_ref`) and fill the derived
        fields for `world_size` data-parallel ranks and a run of `total_training_steps` steps. An unknown key
        raises ConfigError with its full name and the closest known ones."""
        config = build(cls, data, "actor_rollout_ref")
        actor = config.actor
        actor.optim.total_training_steps = total_training_steps
        actor.mini_batch_samples = actor.ppo_mini_batch_size * config.rollout.n
        actor.mini_batch_samples_per_rank = _per_rank(
            actor.mini_batch_samples, world_size, "actor_rollout_ref.actor.ppo_mini_batch_size"
        )
        return config


def _per_rank(samples: int, world_size: int, key: str) -> int:
    require(world_size > 0, f"the data-parallel world size must be > 0, got {world_size}")
    require(
        samples % world_size == 0,
        f"{key} * rollout.n ({samples} samples) must be divisible by the number of ranks "
        f"(trainer.nnodes * trainer.n_gpus_per_node = {world_size})",
    )
    return samples // world_size


@dataclass
class CriticOptimConfig(OptimConfig):
    """critic.optim: the critic's own AdamW and schedule (the paper trains the critic at lr 1e-5)."""

    KEY: ClassVar[str] = "critic.optim"

    lr: float = 1e-5


@dataclass
class CriticModelConfig:
    """critic.model: the folder the value model starts from, a policy (causal LM) folder whose backbone gets a
    new value head, or a critic checkpoint's huggingface/ folder. The trainer fills an empty path with the
    actor's model path (verl's `critic.model.path: null`)."""

    path: str = ""
    tokenizer_path: str | None = None
    dtype: str = "float32"
    enable_gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    fsdp_config: FSDPConfig = field(default_factory=FSDPConfig)

    def __post_init__(self):
        if not self.path:
            raise ValueError("critic.model.path is required (a Hugging Face model folder)")
        _dtype("critic.model.dtype", self.dtype)
        _attention("critic.model.attn_implementation", self.attn_implementation)


@dataclass
class CriticConfig:
    """critic: the PPO value model and its update (see verl/workers/critic.py). ppo_mini_batch_size counts
    prompts, like the actor's; the derived mini_batch_samples(_per_rank) count trajectories."""

    model: CriticModelConfig
    optim: CriticOptimConfig = field(default_factory=CriticOptimConfig)
    ppo_mini_batch_size: int = 64
    ppo_micro_batch_size_per_gpu: int = 4
    forward_micro_batch_size_per_gpu: int = 8
    ppo_epochs: int = 1
    cliprange_value: float = 0.5
    loss_agg_mode: str = "token-mean"
    loss_scale_factor: int | None = None
    grad_clip: float = 1.0
    mini_batch_samples: int = derived(0, "ppo_mini_batch_size x rollout.n: trajectories per optimizer step")
    mini_batch_samples_per_rank: int = derived(0, "mini_batch_samples / data-parallel ranks")

    def __post_init__(self):
        _positive("critic.ppo_mini_batch_size", self.ppo_mini_batch_size)
        _positive("critic.ppo_micro_batch_size_per_gpu", self.ppo_micro_batch_size_per_gpu)
        _positive("critic.forward_micro_batch_size_per_gpu", self.forward_micro_batch_size_per_gpu)
        _positive("critic.ppo_epochs", self.ppo_epochs)
        _non_negative("critic.cliprange_value", self.cliprange_value)
        _loss_aggregation("critic", self.loss_agg_mode, self.loss_scale_factor)
        _positive("critic.grad_clip", self.grad_clip)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], rollout_n: int = 1, world_size: int = 1, total_training_steps: int = -1
    ) -> CriticConfig:
        """Build from a plain nested dict (the `critic` section) and fill the derived fields: trajectories per
        optimizer step for `rollout_n` samples per prompt over `world_size` ranks, the schedule's length.
        An unknown key raises ConfigError with its full name and the closest known ones."""
        config = build(cls, data, "critic")
        config.optim.total_training_steps = total_training_steps
        config.mini_batch_samples = config.ppo_mini_batch_size * rollout_n
        config.mini_batch_samples_per_rank = _per_rank(
            config.mini_batch_samples, world_size, "critic.ppo_mini_batch_size"
        )
        return config
