"""Two ranks, the hybrid engine on vLLM (run by test_fsdp_vllm.py through conftest.run_scenario, one process per
rank over gloo): FSDP2 train step -> weight push -> generate -> train step -> push -> generate, each
generation checked against the transformers model holding the same full weights; then the engines are closed
and the trainer's process group must still work.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from verl.protocol import DataProto  # noqa: E402
from verl.utils.fsdp import iter_full_weights  # noqa: E402
from verl.workers.config import ActorRolloutRefConfig  # noqa: E402
from verl.workers.fsdp_workers import ActorRolloutRefWorker  # noqa: E402
from verl.workers.rollout.hf import HFRollout  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from dist_scenarios import STEPS, config, gather, make_batch, run_on_this_rank, train_step  # noqa: E402

PROMPTS = [[5, 9, 14, 3], [7, 7, 20], [11, 4, 30, 8, 2], [6, 12]]
GREEDY = {"n": 1, "temperature": 0.0, "max_tokens": 6, "logprobs": True}


def _generate(worker: ActorRolloutRefWorker, rank: int, world: int) -> list:
    mine = PROMPTS[rank::world]
    data = DataProto.from_dict(non_tensors={"prompt_token_ids": mine}, meta_info={"sampling_params": GREEDY})
    worker.wake_rollout()
    try:
        out = worker.generate_sequences(data).non_tensor_batch
    finally:
        worker.sleep_rollout()
    return [
        (list(ids), list(lp))
        for ids, lp in zip(out["response_token_ids"], out["response_logprobs"], strict=True)
    ]


def _reference(worker: ActorRolloutRefWorker, model_dir: str, rank: int, world: int) -> list:
    """The same prompts through the transformers backend holding the actor's full weights (gathered here)."""
    from transformers import AutoModelForCausalLM

    full = dict(iter_full_weights(worker.actor.module))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.load_state_dict(full)
    hf = HFRollout(model, tokenizer=worker.tokenizer, device="cpu")
    from verl.workers.rollout.base import RolloutSamplingParams

    outs = hf.generate(PROMPTS[rank::world], RolloutSamplingParams(**GREEDY))
    return [(o[0].token_ids, o[0].logprobs) for o in outs]


def run(model_dir: str, out: Path, rank: int, world: int) -> dict:
    cfg = config(model_dir)
    cfg["rollout"] = {"name": "vllm", "log_prob_micro_batch_size_per_gpu": 5, "max_model_len": 256}
    built = ActorRolloutRefConfig.from_dict(cfg, world_size=world, total_training_steps=STEPS)
    worker = ActorRolloutRefWorker(built, role="actor_rollout")
    worker.init_model()
    vocab = len(worker.tokenizer)
    results = {}
    for step in (1, 2):
        train_step(worker, make_batch(vocab, seed=step), rank, world)  # update_actor pushes the weights
        results[f"vllm_{step}"] = gather(_generate(worker, rank, world))
        results[f"hf_{step}"] = gather(_reference(worker, model_dir, rank, world))
    worker.rollout.close()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)  # the trainer's group still works after the engines are gone
    results["all_reduce_after_close"] = total.item()
    return results


if __name__ == "__main__":
    run_on_this_rank(run)
