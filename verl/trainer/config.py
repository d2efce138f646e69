"""Validation of the whole trainer config (configs/ppo_trainer.yaml) before any worker starts, and the
translation of its verl-style keys into the worker's typed config. Every error names the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from verl.algorithms.advantages import ADV_ESTIMATORS, uses_critic
from verl.utils.dataset import OVERLONG_POLICIES
from verl.utils.tracking import LOGGERS
from verl.workers.config import ActorRolloutRefConfig, CriticConfig


class ConfigError(ValueError):
    """A trainer config that cannot run; the message names the key."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, str | Path) else [str(v) for v in value]


def world_size(cfg: dict) -> int:
    return int(cfg["trainer"]["nnodes"]) * int(cfg["trainer"]["n_gpus_per_node"])


def validate_config(cfg: dict) -> None:
    """Check everything that can be checked without starting workers; raise ConfigError naming the key."""
    data, trainer, arr = cfg["data"], cfg["trainer"], cfg["actor_rollout_ref"]
    actor, rollout, algo = arr["actor"], arr["rollout"], cfg["algorithm"]

    train_files = _files(data["train_files"])
    _require(bool(train_files), "data.train_files is required (parquet file(s) in the dataset format)")
    for key, files in (("data.train_files", train_files), ("data.val_files", _files(data["val_files"]))):
        for f in files:
            _require(Path(f).is_file(), f"{key}: no such file: {f}")
    model_path = arr["model"]["path"]
    _require(bool(model_path), "actor_rollout_ref.model.path is required (a Hugging Face model folder)")
    _require(Path(model_path).is_dir(), f"actor_rollout_ref.model.path: no such folder: {model_path}")
    _require(
        isinstance(data["skip_bad_rows"], bool),
        f"data.skip_bad_rows must be true or false, got {data['skip_bad_rows']!r}",
    )
    _require(
        data["overlong_prompts"] in OVERLONG_POLICIES,
        f"data.overlong_prompts must be one of {', '.join(OVERLONG_POLICIES)}, got {data['overlong_prompts']!r}",
    )

    for key in ("train_batch_size", "val_batch_size", "max_prompt_length"):
        _require(int(data[key]) > 0, f"data.{key} must be > 0, got {data[key]}")
    ranks = world_size(cfg)
    _require(ranks > 0, "trainer.nnodes * trainer.n_gpus_per_node must be > 0")
    n, batch, mini = int(rollout["n"]), int(data["train_batch_size"]), int(actor["ppo_mini_batch_size"])
    _require(n >= 1, f"actor_rollout_ref.rollout.n must be >= 1, got {n}")
    _require(
        mini > 0 and batch % mini == 0,
        f"actor_rollout_ref.actor.ppo_mini_batch_size ({mini}) must divide data.train_batch_size ({batch})",
    )
    _require(
        (mini * n) % ranks == 0,
        f"actor_rollout_ref.actor.ppo_mini_batch_size * rollout.n ({mini * n} samples) must be divisible by "
        f"the number of ranks (trainer.nnodes * trainer.n_gpus_per_node = {ranks})",
    )
    _require(int(rollout["val_kwargs"]["n"]) == 1, "actor_rollout_ref.rollout.val_kwargs.n must be 1")

    _require(
        algo["adv_estimator"] in ADV_ESTIMATORS,
        f"algorithm.adv_estimator: unknown {algo['adv_estimator']!r}; known: {', '.join(sorted(ADV_ESTIMATORS))}",
    )
    _require(
        algo["kl_ctrl"]["type"] in ("fixed", "adaptive"),
        f"algorithm.kl_ctrl.type must be fixed or adaptive, got {algo['kl_ctrl']['type']!r}",
    )

    for key in ("start", "end"):
        value = cfg["curriculum"][key]
        _require(0.0 <= float(value) <= 1.0, f"curriculum.{key} must be in [0, 1], got {value}")

    _require(
        int(trainer["total_training_steps"] or 0) > 0 or trainer.get("total_epochs"),
        "trainer.total_training_steps (or trainer.total_epochs) must be > 0",
    )
    for key in ("test_freq", "save_freq", "sample_table_freq"):
        _require(int(trainer[key]) >= 0, f"trainer.{key} must be >= 0, got {trainer[key]}")
    unknown = [name for name in trainer["logger"] if name not in LOGGERS]
    _require(not unknown, f"trainer.logger: unknown logger(s) {unknown}; known: {', '.join(sorted(LOGGERS))}")
    _require(
        trainer["device"] in ("auto", "cpu", "cuda"),
        f"trainer.device must be auto, cpu or cuda, got {trainer['device']!r}",
    )
    mode = trainer["resume_mode"]
    _require(
        mode in ("auto", "disable") or Path(str(mode)).is_dir(),
        f"trainer.resume_mode must be auto, disable or an existing checkpoint folder, got {mode!r}",
    )
    worker_config(cfg)
    if needs_critic(cfg):
        critic_model = cfg["critic"]["model"]["path"]
        _require(
            not critic_model or Path(critic_model).is_dir(),
            f"critic.model.path: no such folder: {critic_model}",
        )
        _require(
            int(trainer["critic_warmup"]) >= 0,
            f"trainer.critic_warmup must be >= 0, got {trainer['critic_warmup']}",
        )
        critic_worker_config(cfg)


def needs_critic(cfg: dict) -> bool:
    """A value model is built only for estimators that read values (GAE)."""
    return uses_critic(cfg["algorithm"]["adv_estimator"])


def worker_config(cfg: dict) -> dict:
    """`actor_rollout_ref` as the worker wants it: mini-batches counted in samples (verl's YAML counts prompts),
    the schedule's total steps and the rollout's prompt budget filled in, trainer-only keys removed.
    Validated through the worker's typed config, so errors name the key."""
    arr = copy.deepcopy(cfg["actor_rollout_ref"])
    arr["rollout"].pop("val_kwargs", None)
    arr["actor"]["ppo_mini_batch_size"] = int(arr["actor"]["ppo_mini_batch_size"]) * int(arr["rollout"]["n"])
    # With trainer.total_epochs the step count is known only once the data is loaded (main_ppo fills it in).
    arr["actor"]["optim"]["total_training_steps"] = int(cfg["trainer"]["total_training_steps"] or 1)
    arr["rollout"]["prompt_length"] = int(cfg["data"]["max_prompt_length"])
    try:
        ActorRolloutRefConfig.from_dict(arr)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return arr


def critic_worker_config(cfg: dict) -> dict:
    """`critic` as CriticWorker wants it: the actor's model path when none is given, mini-batches counted in
    samples, the schedule's total steps filled in. Validated through CriticConfig, so errors name the key."""
    critic = copy.deepcopy(cfg["critic"])
    critic["model"]["path"] = critic["model"]["path"] or cfg["actor_rollout_ref"]["model"]["path"]
    n = int(cfg["actor_rollout_ref"]["rollout"]["n"])
    critic["ppo_mini_batch_size"] = int(critic["ppo_mini_batch_size"]) * n
    critic["optim"]["total_training_steps"] = int(cfg["trainer"]["total_training_steps"] or 1)
    batch = int(cfg["data"]["train_batch_size"])
    _require(
        batch * n % critic["ppo_mini_batch_size"] == 0,
        f"critic.ppo_mini_batch_size ({critic['ppo_mini_batch_size'] // n} prompts) must divide "
        f"data.train_batch_size ({batch})",
    )
    _require(
        critic["ppo_mini_batch_size"] % world_size(cfg) == 0,
        f"critic.ppo_mini_batch_size * rollout.n ({critic['ppo_mini_batch_size']} samples) must be divisible "
        f"by the number of ranks ({world_size(cfg)})",
    )
    try:
        CriticConfig.from_dict(critic)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return critic
