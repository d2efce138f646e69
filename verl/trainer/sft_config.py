"""The SFT trainer's config (configs/sft_trainer.yaml documents every key): typed sections whose checks name
the offending key, built from a plain dict by `SFTConfig.from_dict`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from verl.trainer.sft_data import TRUNCATION_MODES, SFTKeys
from verl.utils.config import build, rename_keys
from verl.utils.config import require as check
from verl.utils.fsdp import DTYPES
from verl.workers.config import OptimConfig

# Old key -> new key (the RL trainer's optim names); the old names keep working, with a deprecation message.
SFT_DEPRECATED_KEYS = {
    "optim.warmup_steps": "optim.lr_warmup_steps",
    "optim.warmup_steps_ratio": "optim.lr_warmup_steps_ratio",
}


def require(ok: bool, key: str, message: str) -> None:
    """ConfigError "key: message" unless ok (the SFT checks name their key first)."""
    check(ok, f"{key}: {message}")


@dataclass
class FSDPSection:
    """model.fsdp_config: FSDP2 mixed precision (None computes in the stored dtype) and, on GPU, parameter
    (and so gradient and optimizer state) offload to CPU memory between uses."""

    param_dtype: str | None = None
    reduce_dtype: str | None = None
    param_offload: bool = False

    def __post_init__(self) -> None:
        for key in ("param_dtype", "reduce_dtype"):
            value = getattr(self, key)
            require(value is None or value in DTYPES, f"model.fsdp_config.{key}", f"unknown dtype {value!r}")


@dataclass
class ModelSection:
    path: str | None = None
    tokenizer_path: str | None = None
    dtype: str = "float32"
    enable_gradient_checkpointing: bool = False
    fsdp_config: FSDPSection = field(default_factory=FSDPSection)

    def __post_init__(self) -> None:
        require(bool(self.path), "model.path", "missing (the Hugging Face model folder to fine-tune)")
        require(
            self.dtype in DTYPES, "model.dtype", f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}"
        )


@dataclass
class DataSection:
    train_files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)
    prompt_key: str = "prompt"
    response_key: str = "response"
    segments_key: str = "response_segments"
    text_key: str = "text"
    use_chat_template: bool | None = None
    max_length: int = 1024
    truncation: str = "error"
    train_batch_size: int = 16
    micro_batch_size_per_gpu: int = 4
    shuffle: bool = True

    def __post_init__(self) -> None:
        for key in ("train_files", "val_files"):
            value = getattr(self, key) or []
            setattr(self, key, [value] if isinstance(value, str) else [str(v) for v in value])
        require(bool(self.train_files), "data.train_files", "missing (parquet or jsonl files to train on)")
        require(self.max_length > 1, "data.max_length", f"must be > 1, got {self.max_length}")
        require(
            self.truncation in TRUNCATION_MODES,
            "data.truncation",
            f"unknown mode {self.truncation!r}; valid: {', '.join(TRUNCATION_MODES)}",
        )
        require(
            self.train_batch_size > 0, "data.train_batch_size", f"must be > 0, got {self.train_batch_size}"
        )
        require(
            self.micro_batch_size_per_gpu > 0,
            "data.micro_batch_size_per_gpu",
            f"must be > 0, got {self.micro_batch_size_per_gpu}",
        )

    @property
    def keys(self) -> SFTKeys:
        return SFTKeys(self.prompt_key, self.response_key, self.segments_key, self.text_key)


@dataclass
class OptimSection(OptimConfig):
    """optim: AdamW and its schedule, with the actor's checks (verl/workers/config.py), plus gradient clipping.
    The step count is the trainer's (trainer.total_training_steps), not a key of this section."""

    KEY: ClassVar[str] = "optim"

    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.95)
    lr_scheduler: str = "cosine"
    clip_grad: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.clip_grad > 0, "optim.clip_grad", f"must be > 0, got {self.clip_grad}")


@dataclass
class TrainerSection:
    project_name: str = "zerosearch-sft"
    experiment_name: str = "sft"
    logger: list[str] = field(default_factory=lambda: ["console", "jsonl"])
    default_local_dir: str = "checkpoints/sft"
    output_dir: str | None = None
    total_training_steps: int | None = None
    total_epochs: int = 1
    save_freq: int = -1
    test_freq: int = -1
    max_ckpt_to_keep: int | None = None
    resume_mode: str = "auto"
    seed: int = 1

    def __post_init__(self) -> None:
        self.logger = [self.logger] if isinstance(self.logger, str) else list(self.logger)
        steps = self.total_training_steps
        require(
            steps is None or steps > 0, "trainer.total_training_steps", f"must be > 0 or null, got {steps}"
        )
        require(self.total_epochs > 0, "trainer.total_epochs", f"must be > 0, got {self.total_epochs}")
        require(
            self.max_ckpt_to_keep is None or self.max_ckpt_to_keep > 0,
            "trainer.max_ckpt_to_keep",
            f"must be > 0 or null, got {self.max_ckpt_to_keep}",
        )
        mode = self.resume_mode
        require(
            mode in ("auto", "disable") or Path(str(mode)).is_dir(),
            "trainer.resume_mode",
            f"must be auto, disable or an existing checkpoint folder, got {mode!r}",
        )


@dataclass
class SFTConfig:
    """The whole SFT config (configs/sft_trainer.yaml documents every key)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)

    def check_world_size(self, world_size: int) -> None:
        """The global batch must split evenly over the data-parallel ranks."""
        batch = self.data.train_batch_size
        require(
            batch % world_size == 0,
            "data.train_batch_size",
            f"{batch} is not divisible by the {world_size} data-parallel ranks",
        )

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> SFTConfig:
        """Validate a plain dict (e.g. the Hydra config as a container); errors name the offending key."""
        config = rename_keys({k: v for k, v in config.items() if k != "hydra"}, SFT_DEPRECATED_KEYS)
        return build(cls, config, "")
