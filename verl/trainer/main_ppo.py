"""Entry point: `python -m verl.trainer.main_ppo key=value ...` (Hydra; configs/ppo_trainer.yaml).

Order matters for users: everything that can be wrong in the config or the data (files, rows, keys, batch
sizes, the search backend's options) is checked in the driver before a single worker process starts. The
domain comes in through the config only: `agent._target_` (the multi-turn loop, with its search backends) and
`reward.score_fn` / `reward.metrics_fn` (import paths).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from verl.trainer.config import DEPRECATED_KEYS, PPOTrainerConfig
from verl.trainer.ray_trainer import RayPPOTrainer
from verl.utils.config import ConfigError, check_overrides
from verl.utils.dataset import RLHFDataset
from verl.utils.seed import set_seed
from verl.utils.tracking import Tracking
from verl.workers.reward import RewardManager, import_callable

logger = logging.getLogger(__name__)

# configs/ lives at the repository root (the package is installed editable, as the Makefile does).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def _device(cfg: PPOTrainerConfig) -> str:
    import torch

    if cfg.trainer.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.trainer.device


def run(raw: dict) -> dict[str, float]:
    """Train with the composed, resolved config (a plain dict, as Hydra gives it); returns the final
    validation metrics. The typed config is built first: nothing starts if any key is wrong."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from transformers import AutoTokenizer

    from verl.single_controller.ray_utils import init_ray
    from verl.single_controller.resource_pool import RayResourcePool

    cfg = PPOTrainerConfig.from_dict(raw)
    trainer, data, model = cfg.trainer, cfg.data, cfg.actor_rollout_ref.model
    set_seed(trainer.seed)
    tokenizer = AutoTokenizer.from_pretrained(model.tokenizer_path or model.path)
    try:
        row_check = import_callable(data.row_check) if data.row_check else None
    except ValueError as e:
        raise ConfigError(f"data.row_check: {e}") from e

    def dataset(files):
        return RLHFDataset(
            files,
            tokenizer,
            data.max_prompt_length,
            data.overlong_prompts,
            data.use_chat_template,
            row_check=row_check,
            skip_bad_rows=data.skip_bad_rows,
        )

    train = dataset(data.train_files) if data.train_files else None
    val = dataset(data.val_files) if data.val_files else None
    if train is not None and not trainer.val_only and len(train) < data.train_batch_size:
        raise ConfigError(
            f"data.train_files hold {len(train)} usable prompts, fewer than data.train_batch_size "
            f"({data.train_batch_size})"
        )
    if trainer.total_epochs and train is not None:
        cfg.set_total_training_steps(int(trainer.total_epochs) * (len(train) // data.train_batch_size))
    reward = RewardManager.from_config(tokenizer, cfg.reward)
    try:
        agent = instantiate(
            cfg.agent,
            tokenizer=tokenizer,
            total_training_steps=trainer.total_training_steps,
            max_prompt_length=data.max_prompt_length,
            _convert_="all",
        )
    except InstantiationException as e:
        # Hydra wraps the agent's own error (e.g. an unknown search backend); show that one.
        raise ConfigError(f"agent ({cfg.agent['_target_']}): {e.__cause__ or e}") from e

    plan = getattr(agent, "plan_validation", None)
    if val is not None and plan is not None:
        try:
            plan(len(val), trainer.planned_validations())
        except ConfigError:
            agent.close()
            raise
    device = _device(cfg)
    init_ray(
        num_cpus=cfg.ray_init.num_cpus,
        object_store_memory=cfg.ray_init.object_store_memory,
        env_vars={"TOKENIZERS_PARALLELISM": "false"},
        address=cfg.ray_init.address,
    )
    threads = trainer.cpu_threads_per_rank if device == "cpu" else 1
    pool = RayResourcePool(
        trainer.world_size,
        num_cpus_per_worker=threads,
        num_gpus_per_worker=1 if device == "cuda" else 0,
        name="actor_rollout_ref",
        nnodes=trainer.nnodes,
    )
    role = "actor_rollout_ref" if cfg.needs_reference else "actor_rollout"
    # trainer.device=cpu on a GPU host: hide the GPUs too, or the workers would pick CUDA and nccl anyway.
    worker_env = {"OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}
    tracker = None
    wg, actor_rollout_wg, critic_wg = _worker_groups(cfg, pool, role, worker_env)
    try:
        record_placement(wg.placements, Path(trainer.default_local_dir))
        actor_rollout_wg.init_model()
        if critic_wg is not None:
            critic_wg.init_model()
        tracker = Tracking(
            trainer.project_name,
            trainer.experiment_name,
            list(trainer.logger),
            trainer.default_local_dir,
            config=cfg.to_dict(),
        )
        return RayPPOTrainer(
            cfg, tokenizer, actor_rollout_wg, agent, reward, train, val, tracker, critic_wg=critic_wg
        ).fit()
    finally:
        if tracker is not None:
            tracker.finish()
        agent.close()
        wg.shutdown()
        pool.remove()


def record_placement(placements: list[dict], run_dir: Path) -> None:
    """Log where every rank runs and write it to <run>/placement.json (rank, Ray node id, IP, pid, GPUs, local rank):
    the first thing to read when a multi-node run hangs or lands on the wrong GPUs."""
    rows = [{"rank": rank, **place} for rank, place in enumerate(placements)]
    nodes = sorted({row["node_id"] for row in rows})
    for row in rows:
        logger.info(
            "rank %d (local rank %d) on node %d/%d (%s, ip %s), pid %d, GPUs %s",
            row["rank"],
            row["local_rank"],
            nodes.index(row["node_id"]) + 1,
            len(nodes),
            row["node_id"][:12],
            row["node_ip"],
            row["pid"],
            row["gpus"] or "none",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "placement.json").write_text(json.dumps(rows, indent=2) + "\n")


def _worker_groups(cfg: PPOTrainerConfig, pool, role: str, worker_env: dict):
    """(the group to shut down, the actor/rollout/ref handle, the critic handle or None).

    With a critic (PPO), actor and critic are colocated: one process per rank hosts both roles, sharing the
    process group and the device, as verl's hybrid engine does; without one, the actor's group is plain."""
    from verl.single_controller.colocated import RoleSpec, create_colocated_worker_cls
    from verl.single_controller.worker_group import RayWorkerGroup
    from verl.workers.fsdp_workers import ActorRolloutRefWorker, CriticWorker

    if cfg.critic is None:
        wg = RayWorkerGroup(pool, ActorRolloutRefWorker, cfg.actor_rollout_ref, role, worker_env=worker_env)
        return wg, wg, None
    cls = create_colocated_worker_cls(
        {
            "actor": RoleSpec(ActorRolloutRefWorker, (cfg.actor_rollout_ref, role)),
            "critic": RoleSpec(CriticWorker, (cfg.critic,)),
        }
    )
    wg = RayWorkerGroup(pool, cls, worker_env=worker_env)
    views = wg.spawn()
    return wg, views["actor"], views["critic"]


@hydra.main(config_path=CONFIG_DIR, config_name="ppo_trainer", version_base=None)
def hydra_main(cfg: DictConfig) -> None:
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"), format="%(asctime)s %(name)s: %(message)s")
    run(OmegaConf.to_container(cfg, resolve=True))


def main() -> None:
    """Check the command line's keys (renamed ones are translated, unknown ones refused with the closest
    known names) before Hydra composes the config, then train."""
    try:
        sys.argv[1:] = check_overrides(sys.argv[1:], CONFIG_DIR, "ppo_trainer", DEPRECATED_KEYS)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
