"""The GPU profile's worker settings on one CUDA rank (run by test_gpu_profile.py like dist_scenarios.py):

    RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python gpu_profile_scenarios.py MODEL_DIR OUT_DIR

Three workers take the same step on the same batch: fp32 as the reference; optimizer offload (state in CPU
memory between updates: the same numbers, less GPU memory held); and configs/profile/gpu.yaml's worker settings
(bf16 compute with fp32 reduction, gradient checkpointing, padding-free forwards, flash-attention where
installed). The offloaded worker also checkpoints, steps again and resumes to repeat that step.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from dist_scenarios import STEPS, config, make_batch, run_on_this_rank, train_step  # noqa: E402

from verl.utils.fsdp import full_state_dict_rank0  # noqa: E402
from verl.workers.config import ActorRolloutRefConfig  # noqa: E402
from verl.workers.fsdp_workers import ActorRolloutRefWorker  # noqa: E402

ATTENTION = "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"


def _worker(model_dir: str, edit) -> ActorRolloutRefWorker:
    cfg = copy.deepcopy(config(model_dir))
    edit(cfg)
    worker = ActorRolloutRefWorker(
        ActorRolloutRefConfig.from_dict(cfg, world_size=1, total_training_steps=STEPS),
        role="actor_rollout_ref",
    )
    worker.init_model()
    return worker


def _offload(cfg: dict) -> None:
    cfg["actor"]["fsdp_config"] = {"optimizer_offload": True}


def _profile(cfg: dict) -> None:
    cfg["model"].update(
        enable_gradient_checkpointing=True, use_remove_padding=True, attn_implementation=ATTENTION
    )
    mixed = {"param_dtype": "bfloat16", "reduce_dtype": "float32"}
    cfg["actor"]["fsdp_config"] = {**mixed, "optimizer_offload": True}
    cfg["ref"]["fsdp_config"] = dict(mixed)
    cfg["rollout"]["dtype"] = "bfloat16"


def _state_devices(worker: ActorRolloutRefWorker) -> set[str]:
    return {
        value.device.type
        for state in worker.optimizer.state.values()
        for key, value in state.items()
        if key != "step" and torch.is_tensor(value)
    }


def run(model_dir: str, out: Path, rank: int, world: int) -> dict:
    result: dict = {"attention": ATTENTION}
    for name, edit in (("fp32", lambda cfg: None), ("offload", _offload), ("profile", _profile)):
        worker = _worker(model_dir, edit)
        vocab = len(worker.tokenizer)
        torch.cuda.reset_peak_memory_stats()
        _, _, metrics = train_step(worker, make_batch(vocab, seed=0), rank, world)
        result[name] = {
            "metrics": metrics,
            "state_devices": sorted(_state_devices(worker)),
            "allocated_after_update": torch.cuda.memory_allocated(),
            "weights": full_state_dict_rank0(worker.actor.module),
        }
        if name == "offload":
            ckpt = out / "offload_ckpt"
            worker.save_checkpoint(str(ckpt), 1)
            _, _, result["offload"]["second"] = train_step(worker, make_batch(vocab, seed=1), rank, world)
            resumed = _worker(model_dir, edit)
            resumed.load_checkpoint(str(ckpt))
            result["offload"]["resumed_state_devices"] = sorted(_state_devices(resumed))
            _, _, result["offload"]["resumed_second"] = train_step(
                resumed, make_batch(vocab, seed=1), rank, world
            )
            del resumed
        del worker
        torch.cuda.empty_cache()
    return result


if __name__ == "__main__":
    run_on_this_rank(run)
