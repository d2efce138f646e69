"""The RL trainer's typed config tree (configs/ppo_trainer.yaml documents every key), built and validated
once in the driver before any worker starts; RayPPOTrainer and the workers receive it as it is.

Each YAML section is a dataclass: `data`, `actor_rollout_ref` and `critic` (the workers' own, in
verl/workers/config.py), `algorithm`, `reward`, `trainer`, `ray_init`. The `agent` section belongs to the
domain: the engine reads only its `_target_` and hands the rest to that class, which validates it (ZeroSearch's
agent checks its search backends and curriculum). Other top-level sections are the domain's too (they are
referenced from `agent` by interpolation) and travel untouched in `domain`.

Derived quantities are named fields filled here, never by hand: per-rank mini-batches in samples (the workers'
`mini_batch_samples(_per_rank)`), the lr schedules' length, the critic's model path when none is given.
Renamed keys still work through DEPRECATED_KEYS, with a message naming the new key.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl.algorithms import ADV_ESTIMATORS, KL_PENALTIES
from verl.algorithms.advantages import uses_critic
from verl.single_controller.ray_utils import MIN_OBJECT_STORE_BYTES
from verl.utils.config import ConfigError, build, rename_keys, require
from verl.utils.dataset import OVERLONG_POLICIES
from verl.utils.hub import ModelNotFoundError, resolve_model
from verl.utils.tracking import LOGGERS
from verl.workers.config import ActorRolloutRefConfig, CriticConfig
from verl.workers.reward import RewardConfig

# Old key -> new key (upstream verl's name). The old names keep working, with a deprecation message.
DEPRECATED_KEYS = {
    "actor_rollout_ref.actor.optim.warmup_steps": "actor_rollout_ref.actor.optim.lr_warmup_steps",
    "actor_rollout_ref.actor.optim.warmup_steps_ratio": "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio",
    "critic.optim.warmup_steps": "critic.optim.lr_warmup_steps",
    "critic.optim.warmup_steps_ratio": "critic.optim.lr_warmup_steps_ratio",
    "trainer.ray_num_cpus": "ray_init.num_cpus",
}

# The engine's sections; every other top-level key is the domain's.
ENGINE_SECTIONS = ("data", "actor_rollout_ref", "critic", "algorithm", "reward", "trainer", "ray_init")


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, str | Path) else [str(v) for v in value]


@dataclass
class DataConfig:
    """data: the prompt datasets (parquet, docs/design.md section 3) and how they are batched."""

    train_files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)
    train_batch_size: int = 64
    val_batch_size: int = 256
    max_prompt_length: int = 4096
    overlong_prompts: str = "error"
    shuffle: bool = True
    use_chat_template: bool | None = None
    row_check: str | None = None
    skip_bad_rows: bool = False

    def __post_init__(self) -> None:
        self.train_files, self.val_files = _files(self.train_files), _files(self.val_files)
        for key in ("train_files", "val_files"):
            for f in getattr(self, key):
                require(Path(f).is_file(), f"data.{key}: no such file: {f}")
        require(
            isinstance(self.skip_bad_rows, bool),
            f"data.skip_bad_rows must be true or false, got {self.skip_bad_rows!r}",
        )
        require(
            self.overlong_prompts in OVERLONG_POLICIES,
            f"data.overlong_prompts must be one of {', '.join(OVERLONG_POLICIES)}, got {self.overlong_prompts!r}",
        )
        for key in ("train_batch_size", "val_batch_size", "max_prompt_length"):
            require(int(getattr(self, key)) > 0, f"data.{key} must be > 0, got {getattr(self, key)}")


@dataclass
class KLControlConfig:
    """algorithm.kl_ctrl: the coefficient of the KL penalty in the reward, fixed or adaptive."""

    type: str = "fixed"
    kl_coef: float = 0.001
    target_kl: float = 0.1
    horizon: int = 10000

    def __post_init__(self) -> None:
        require(
            self.type in ("fixed", "adaptive"),
            f"algorithm.kl_ctrl.type must be fixed or adaptive, got {self.type!r}",
        )


@dataclass
class AlgorithmConfig:
    """algorithm: the advantage estimator and where the KL to the reference goes (configs/algorithm/)."""

    adv_estimator: str = "grpo"
    norm_adv_by_std_in_grpo: bool = True
    gamma: float = 1.0
    lam: float = 1.0
    use_kl_in_reward: bool = False
    kl_penalty: str = "kl"
    kl_ctrl: KLControlConfig = field(default_factory=KLControlConfig)
    skip_step_without_signal: bool = True

    def __post_init__(self) -> None:
        require(
            self.adv_estimator in ADV_ESTIMATORS,
            f"algorithm.adv_estimator: unknown {self.adv_estimator!r}; known: {', '.join(sorted(ADV_ESTIMATORS))}",
        )
        require(
            self.kl_penalty in KL_PENALTIES,
            f"algorithm.kl_penalty: unknown {self.kl_penalty!r}; known: {', '.join(KL_PENALTIES)}",
        )


@dataclass
class TrainerConfig:
    """trainer: the run (steps, validation and checkpoint cadence, logging, resume) and its ranks."""

    project_name: str = "zerosearch"
    experiment_name: str = "run"
    logger: list[str] = field(default_factory=lambda: ["console", "jsonl"])
    default_local_dir: str = "outputs/zerosearch/run"
    nnodes: int = 1
    n_gpus_per_node: int = 1
    device: str = "auto"
    cpu_threads_per_rank: int = 1
    total_training_steps: int | None = 203
    total_epochs: int | None = None
    test_freq: int = 10
    val_before_train: bool = True
    val_only: bool = False
    save_freq: int = 50
    max_actor_ckpt_to_keep: int | None = None
    resume_mode: str = "auto"
    seed: int = 1
    sample_table_freq: int = 10
    sample_table_rows: int = 4
    validation_data_dir: str | None = None
    log_val_generations: int = 8
    critic_warmup: int = 0

    def __post_init__(self) -> None:
        self.logger = list(self.logger)
        require(
            self.nnodes * self.n_gpus_per_node > 0, "trainer.nnodes * trainer.n_gpus_per_node must be > 0"
        )
        require(
            self.val_only or int(self.total_training_steps or 0) > 0 or bool(self.total_epochs),
            "trainer.total_training_steps (or trainer.total_epochs) must be > 0",
        )
        for key in ("test_freq", "save_freq"):
            value = int(getattr(self, key))
            require(
                value >= -1,
                f"trainer.{key} must be N > 0 (every N steps and at the end), 0 (only at the "
                f"end) or -1 (never), got {value}",
            )
        require(
            self.sample_table_freq >= 0,
            f"trainer.sample_table_freq must be >= 0, got {self.sample_table_freq}",
        )
        require(
            self.log_val_generations >= 0,
            f"trainer.log_val_generations must be >= 0, got {self.log_val_generations}",
        )
        unknown = [name for name in self.logger if name not in LOGGERS]
        require(
            not unknown, f"trainer.logger: unknown logger(s) {unknown}; known: {', '.join(sorted(LOGGERS))}"
        )
        require(
            self.cpu_threads_per_rank >= 1,
            f"trainer.cpu_threads_per_rank must be >= 1, got {self.cpu_threads_per_rank}",
        )
        require(
            self.device in ("auto", "cpu", "cuda"),
            f"trainer.device must be auto, cpu or cuda, got {self.device!r}",
        )
        mode = self.resume_mode
        require(
            mode in ("auto", "disable") or Path(str(mode)).is_dir(),
            f"trainer.resume_mode must be auto, disable or an existing checkpoint folder, got {mode!r}",
        )

    @property
    def validation_dir(self) -> Path:
        """Where each validation's records and report go: validation_data_dir, else <run folder>/validation."""
        return Path(self.validation_data_dir or Path(self.default_local_dir) / "validation")

    @property
    def world_size(self) -> int:
        """Data-parallel ranks: trainer.nnodes x trainer.n_gpus_per_node."""
        return self.nnodes * self.n_gpus_per_node

    def planned_validations(self, start_step: int = 0) -> int:
        """How many validations a run from `start_step` does: before training (when asked, from step 0),
        every test_freq steps and at the end; val_only: one."""
        if self.val_only:
            return 1
        steps = range(start_step + 1, int(self.total_training_steps or 0) + 1)
        before = 1 if self.val_before_train and start_step == 0 else 0
        return before + sum(self.due(self.test_freq, step) for step in steps)

    def due(self, freq: int, step: int) -> bool:
        """Whether validation (test_freq) or a checkpoint (save_freq) is due after `step`: every `freq` steps
        and after the last one; 0 = after the last step only; -1 = never."""
        if freq < 0:
            return False
        return step == self.total_training_steps or (freq > 0 and step % freq == 0)


@dataclass
class RayInitConfig:
    """ray_init: the Ray cluster the driver joins (address, else $RAY_ADDRESS) or starts (the other keys)."""

    address: str | None = None
    num_cpus: int | None = None
    object_store_memory: int | None = None

    def __post_init__(self):
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"ray_init.num_cpus must be >= 1 or null, got {self.num_cpus}")
        if self.object_store_memory is not None and self.object_store_memory < MIN_OBJECT_STORE_BYTES:
            raise ValueError(
                f"ray_init.object_store_memory must be at least {MIN_OBJECT_STORE_BYTES} (100 MB) or null, "
                f"got {self.object_store_memory}"
            )


@dataclass
class PPOTrainerConfig:
    """The whole trainer config; build it with `from_dict` (validation and derived fields happen there)."""

    data: DataConfig
    actor_rollout_ref: ActorRolloutRefConfig
    critic: CriticConfig | None
    algorithm: AlgorithmConfig
    reward: RewardConfig
    trainer: TrainerConfig
    ray_init: RayInitConfig
    agent: dict[str, Any]
    domain: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_critic(self) -> bool:
        """A value model is built only for estimators that read values (GAE)."""
        return uses_critic(self.algorithm.adv_estimator)

    @property
    def needs_reference(self) -> bool:
        """The frozen reference runs when a KL to it is used (as a loss term or in the reward)."""
        return self.actor_rollout_ref.actor.use_kl_loss or self.algorithm.use_kl_in_reward

    @property
    def needs_old_log_prob(self) -> bool:
        """Whether a step runs the actor's old-log-prob forward. Not when the actor's update is on-policy:
        one epoch over one mini-batch that is the whole step's batch, so its single optimizer step comes
        after every forward and each forward's detached log-probs are exactly the old ones (the PPO ratio
        is 1, its gradient the policy gradient); unless the KL in the reward reads them."""
        actor = self.actor_rollout_ref.actor
        on_policy = actor.ppo_epochs == 1 and actor.ppo_mini_batch_size == self.data.train_batch_size
        return not on_policy or self.algorithm.use_kl_in_reward

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> PPOTrainerConfig:
        """Build from the composed, resolved YAML (a plain dict). Raises ConfigError naming the key."""
        cfg = rename_keys(copy.deepcopy(cfg), DEPRECATED_KEYS)
        require("agent" in cfg and "_target_" in (cfg["agent"] or {}), "agent._target_ is required")
        trainer = build(TrainerConfig, cfg.get("trainer", {}), "trainer")
        data = build(DataConfig, cfg.get("data", {}), "data")
        require(
            bool(data.train_files) or trainer.val_only,
            "data.train_files is required (parquet file(s) in the dataset format)",
        )
        require(not trainer.val_only or bool(data.val_files), "trainer.val_only needs data.val_files")
        algorithm = build(AlgorithmConfig, cfg.get("algorithm", {}), "algorithm")
        steps = int(trainer.total_training_steps or 1)
        arr_dict = cfg.get("actor_rollout_ref", {})
        arr = ActorRolloutRefConfig.from_dict(arr_dict, trainer.world_size, steps)
        model = arr.model
        model.path = _resolve(model.path, "actor_rollout_ref.model.path")
        if model.tokenizer_path:
            model.tokenizer_path = _resolve(model.tokenizer_path, "actor_rollout_ref.model.tokenizer_path")
        batch, mini = data.train_batch_size, arr.actor.ppo_mini_batch_size
        require(
            trainer.val_only or batch % mini == 0,
            f"actor_rollout_ref.actor.ppo_mini_batch_size ({mini}) must divide data.train_batch_size ({batch})",
        )
        require(
            arr.rollout.prompt_length >= data.max_prompt_length,
            f"actor_rollout_ref.rollout.prompt_length ({arr.rollout.prompt_length}) must be >= "
            f"data.max_prompt_length ({data.max_prompt_length})",
        )
        config = cls(
            data=data,
            actor_rollout_ref=arr,
            critic=None,
            algorithm=algorithm,
            reward=build(RewardConfig, cfg.get("reward", {}), "reward"),
            trainer=trainer,
            ray_init=build(RayInitConfig, cfg.get("ray_init", {}), "ray_init"),
            agent=dict(cfg["agent"]),
            domain={k: v for k, v in cfg.items() if k not in ENGINE_SECTIONS and k != "agent"},
        )
        if config.needs_critic:  # GRPO and REINFORCE build no critic, so its section is not checked
            config.critic = _critic(cfg.get("critic", {}), config)
        return config

    def set_total_training_steps(self, steps: int) -> None:
        """The run's step count (known only once the data is loaded when trainer.total_epochs is used),
        and with it the lr schedules' length."""
        self.trainer.total_training_steps = steps
        self.actor_rollout_ref.actor.optim.total_training_steps = steps
        if self.critic is not None:
            self.critic.optim.total_training_steps = steps

    def to_dict(self) -> dict[str, Any]:
        """The config as plain nested data (what the trackers record), domain sections included."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "domain"}
        out = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in out.items()}
        return {**out, **copy.deepcopy(self.domain)}


def _resolve(name_or_path: str, key: str) -> str:
    """A model folder, or a hub id resolved to its folder in the Hugging Face cache (verl/utils/hub.py)."""
    try:
        return resolve_model(name_or_path, key)
    except ModelNotFoundError as e:
        raise ConfigError(str(e)) from e


def _critic(section: dict[str, Any], config: PPOTrainerConfig) -> CriticConfig:
    """critic: the actor's model path when none is given; mini-batches that divide the batch and the ranks."""
    section = copy.deepcopy(section)
    model = section.setdefault("model", {})
    model["path"] = model.get("path") or config.actor_rollout_ref.model.path
    critic = CriticConfig.from_dict(
        section,
        rollout_n=config.actor_rollout_ref.rollout.n,
        world_size=config.trainer.world_size,
        total_training_steps=int(config.trainer.total_training_steps or 1),
    )
    critic.model.path = _resolve(critic.model.path, "critic.model.path")
    warmup = config.trainer.critic_warmup
    require(warmup >= 0, f"trainer.critic_warmup must be >= 0, got {warmup}")
    batch = config.data.train_batch_size
    require(
        batch % critic.ppo_mini_batch_size == 0,
        f"critic.ppo_mini_batch_size ({critic.ppo_mini_batch_size} prompts) must divide data.train_batch_size "
        f"({batch})",
    )
    return critic
