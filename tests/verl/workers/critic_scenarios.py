"""The CriticWorker scenario for test_critic_fsdp.py, run as one process per rank (torchrun style, launched by
conftest.run_scenario):

    RANK=r WORLD_SIZE=w MASTER_ADDR=127.0.0.1 MASTER_PORT=p python critic_scenarios.py MODEL_DIR OUT_DIR

Each rank takes its DP_COMPUTE_PROTO chunk of the same batch (the actor scenario's batch, with observation
holes, plus random returns), computes values, takes one critic step, saves a checkpoint, and a fresh worker
resumes from it; rank 0 writes the results to OUT_DIR/result.pt.
"""

from __future__ import annotations

from pathlib import Path

import torch

from verl.protocol import DataProto
from verl.utils.fsdp import full_state_dict_rank0
from verl.workers.config import CriticConfig
from verl.workers.fsdp_workers import CriticWorker


def add_returns(batch: DataProto, seed: int) -> DataProto:
    """dist_scenarios.make_batch's batch plus `returns` [B, R], random everywhere (masked positions too)."""
    gen = torch.Generator().manual_seed(seed)
    batch.batch["returns"] = torch.randn(batch.batch["responses"].shape, generator=gen)
    return batch


STEPS = 10  # the lr schedule's length


def config(model_dir: str) -> dict:
    """12 samples over 2 ranks = 6 each, micro-batches of 4: uneven (4 + 2) on every rank."""
    return {
        "model": {"path": model_dir},
        "ppo_mini_batch_size": 12,
        "ppo_micro_batch_size_per_gpu": 4,
        "forward_micro_batch_size_per_gpu": 5,
        "cliprange_value": 0.2,
        "optim": {"lr": 1e-3, "lr_warmup_steps": 2, "lr_scheduler": "cosine"},
    }


def run(model_dir: str, out: Path, rank: int, world: int) -> dict:
    # Imported here: dist_scenarios sits beside this script, importable when the script runs; the tests load
    # this module by path only for add_returns and config.
    from dist_scenarios import gather, make_batch

    worker = CriticWorker(
        CriticConfig.from_dict(config(model_dir), world_size=world, total_training_steps=STEPS)
    )
    worker.init_model()
    batch = add_returns(make_batch(len(worker.tokenizer), seed=0), seed=0)
    chunk = batch.chunk(world)[rank]
    values = worker.compute_values(chunk).batch["values"]
    chunk.batch["values"] = values
    metrics = worker.update_critic(chunk).meta_info["metrics"]
    grads = {name: p.grad.full_tensor() for name, p in worker.critic.module.named_parameters()}
    weights = full_state_dict_rank0(worker.critic.module)
    values_after = worker.compute_values(chunk).batch["values"]

    ckpt = out / "global_step_1"
    path = worker.save_checkpoint(str(ckpt), 1)
    resumed = CriticWorker(
        CriticConfig.from_dict(config(model_dir), world_size=world, total_training_steps=STEPS)
    )
    resumed.init_model()
    critic_state = resumed.load_checkpoint(str(ckpt))
    values_resumed = resumed.compute_values(chunk).batch["values"]
    return {
        "batch": dict(batch.batch),
        "values": torch.cat(gather(values)),
        "metrics": metrics,
        "grads": grads,
        "weights": weights,
        "values_after": torch.cat(gather(values_after)),
        "values_resumed": torch.cat(gather(values_resumed)),
        "checkpoint": path,
        "critic_state": critic_state,
        "lr_after_resume": resumed.optimizer.param_groups[0]["lr"],
        "lr_after_step": worker.optimizer.param_groups[0]["lr"],
    }


if __name__ == "__main__":
    from dist_scenarios import run_on_this_rank

    run_on_this_rank(run)
