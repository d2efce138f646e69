"""Multi-process scenarios for the FSDP2 worker tests, run as one process per rank (torchrun style):

    RANK=r WORLD_SIZE=w MASTER_ADDR=127.0.0.1 MASTER_PORT=p python dist_scenarios.py MODEL_DIR OUT_DIR

Each rank drives an ActorRolloutRefWorker the way a worker group would (the same batch on every rank, each
rank taking its DP_COMPUTE_PROTO chunk); rank 0 writes the results to OUT_DIR/result.pt for the test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from verl.protocol import DataProto
from verl.utils.fsdp import full_state_dict_rank0, init_distributed
from verl.workers.config import ActorRolloutRefConfig
from verl.workers.fsdp_workers import ActorRolloutRefWorker

PROMPT_LEN, RESPONSE_LEN, BATCH = 6, 8, 12


def make_batch(vocab_size: int, seed: int) -> DataProto:
    """12 samples: left-padded prompts of 3..6 tokens, right-padded responses of 3..8 tokens, observation
    holes (response_mask 0 inside the response) in every third row, random advantages and log-prob noise."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab_size, (BATCH, PROMPT_LEN + RESPONSE_LEN), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    response_mask = torch.zeros(BATCH, RESPONSE_LEN, dtype=torch.long)
    for row in range(BATCH):
        prompt_len = 3 + row % 4
        response_len = 3 + (row * 5) % 6
        attention_mask[row, : PROMPT_LEN - prompt_len] = 0
        attention_mask[row, PROMPT_LEN + response_len :] = 0
        response_mask[row, :response_len] = 1
        if row % 3 == 0 and response_len > 4:
            response_mask[row, 1:3] = 0  # an observation the environment inserted: in context, not trained
    input_ids = input_ids * attention_mask
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    advantages = torch.randn(BATCH, 1, generator=gen).expand(-1, RESPONSE_LEN) * response_mask
    return DataProto.from_dict(
        tensors={
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "prompts": input_ids[:, :PROMPT_LEN],
            "responses": input_ids[:, PROMPT_LEN:],
            "response_mask": response_mask,
            "advantages": advantages.contiguous(),
            "log_prob_noise": 0.3 * torch.randn(BATCH, RESPONSE_LEN, generator=gen),
        },
        meta_info={"temperature": 0.7},
    )


STEPS = 10  # the lr schedule's length


def config(model_dir: str) -> dict:
    return {
        "model": {"path": model_dir},
        "actor": {
            "ppo_mini_batch_size": BATCH,
            "ppo_micro_batch_size_per_gpu": 4,
            "use_kl_loss": True,
            "kl_loss_coef": 0.1,
            "entropy_coeff": 0.01,
            "optim": {"lr": 1e-3, "lr_warmup_steps": 2, "lr_scheduler": "cosine"},
        },
        "ref": {"log_prob_micro_batch_size_per_gpu": 4},
        "rollout": {"name": "hf", "log_prob_micro_batch_size_per_gpu": 5},
    }


def _built(model_dir: str, world: int) -> ActorRolloutRefConfig:
    return ActorRolloutRefConfig.from_dict(config(model_dir), world_size=world, total_training_steps=STEPS)


def gather(obj):
    """Every rank's `obj`, in rank order."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def train_step(worker: ActorRolloutRefWorker, batch: DataProto, rank: int, world: int):
    """What the trainer does for one step on this rank's chunk: old (and ref) log-probs, then the update."""
    chunk = batch.chunk(world)[rank]
    old = worker.compute_log_prob(chunk)
    chunk.batch["old_log_probs"] = old.batch["old_log_probs"] + chunk.batch["log_prob_noise"]
    if worker.ref is not None:
        chunk = chunk.union(worker.compute_ref_log_prob(chunk))
    else:
        chunk.batch["ref_log_prob"] = old.batch["old_log_probs"]
    metrics = worker.update_actor(chunk).meta_info["metrics"]
    return old, chunk, metrics


def run(model_dir: str, out: Path, rank: int, world: int) -> dict:
    """One training step (checked against a single process by the test), generation with the synced
    rollout, a checkpoint, a second step, then a fresh worker that resumes from the checkpoint and repeats
    the second step."""
    worker = ActorRolloutRefWorker(_built(model_dir, world), role="actor_rollout_ref")
    worker.init_model()
    vocab = len(worker.tokenizer)
    batch = make_batch(vocab, seed=0)
    old, chunk, metrics = train_step(worker, batch, rank, world)
    grads = {name: p.grad.full_tensor().cpu() for name, p in worker.actor.module.named_parameters()}
    weights = full_state_dict_rank0(worker.actor.module)
    rollout_state = {k: v.cpu().clone() for k, v in worker.rollout.model.state_dict().items()}
    prompts = DataProto.from_dict(
        non_tensors={"prompt_token_ids": [row[row > 0].tolist() for row in chunk.batch["prompts"]]},
        meta_info={"sampling_params": {"n": 2, "temperature": 0.0, "max_tokens": 4, "logprobs": True}},
    )
    generated = worker.generate_sequences(prompts)
    # Each prompt with its own params (the agent loop's calls): a budget of 1, 2 or 3 tokens by row.
    own = {"sampling_params": [{"temperature": 0.0, "max_tokens": 1 + k % 3} for k in range(len(prompts))]}
    generated_own = worker.generate_sequences(
        DataProto.from_dict(non_tensors={**prompts.non_tensor_batch, **own})
    )

    ckpt = out / "global_step_1"
    worker.save_checkpoint(str(ckpt), 1, {"data_position": 3})
    draw_after_save = torch.rand(4)
    second = make_batch(vocab, seed=1)
    _, _, metrics_a = train_step(worker, second, rank, world)
    weights_a = full_state_dict_rank0(worker.actor.module)

    resumed = ActorRolloutRefWorker(_built(model_dir, world), role="actor_rollout_ref")
    resumed.init_model()
    trainer_state = resumed.load_checkpoint(str(ckpt))
    draw_after_load = torch.rand(4)
    resumed_rollout_diff = (
        max((resumed.rollout.model.state_dict()[k].cpu() - v).abs().max().item() for k, v in weights.items())
        if weights
        else None
    )
    _, _, metrics_b = train_step(resumed, second, rank, world)
    weights_b = full_state_dict_rank0(resumed.actor.module)
    return {
        "batch": dict(batch.batch),
        "old_log_probs": torch.cat(gather(old.batch["old_log_probs"])),
        "entropys": torch.cat(gather(old.batch["entropys"])),
        "ref_log_prob": torch.cat(gather(chunk.batch["ref_log_prob"])),
        "metrics": metrics,
        "grads": grads,
        "weights": weights,
        "rollout_max_diff": max((rollout_state[k] - v).abs().max().item() for k, v in weights.items())
        if weights
        else None,
        "generated": gather({k: list(v) for k, v in generated.non_tensor_batch.items()}),
        "generated_own": gather(list(generated_own.non_tensor_batch["response_token_ids"])),
        "prompt_token_ids": gather(list(prompts.non_tensor_batch["prompt_token_ids"])),
        "checkpoint": str(ckpt),
        "trainer_state": trainer_state,
        "draws": (draw_after_save, draw_after_load),
        "resumed_rollout_diff": resumed_rollout_diff,
        "resume_metrics": (metrics_a, metrics_b),
        "resume_weights": (weights_a, weights_b),
    }


def run_on_this_rank(scenario) -> None:
    """The body of every scenario script: join the process group (from RANK, WORLD_SIZE, ...), run
    `scenario(model_dir, out_dir, rank, world)` with argv's MODEL_DIR OUT_DIR, and save rank 0's result."""
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    rank, world = init_distributed()
    result = scenario(model_dir, out, rank, world)
    if rank == 0:
        torch.save(result, out / "result.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    run_on_this_rank(run)
