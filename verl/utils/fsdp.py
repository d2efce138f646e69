"""FSDP2 helpers: the process group, sharding a Hugging Face causal LM, and getting full weights back out.

FSDP2 (`torch.distributed.fsdp.fully_shard`) stores every parameter as a DTensor sharded over dim 0 of a 1-D
mesh over all ranks. It runs on CUDA (nccl) and on CPU (gloo), so the same code is tested on a laptop.

Getting full weights out comes in two forms:
* `full_state_dict_rank0`: the whole model on rank 0's CPU, for `save_pretrained`;
* `iter_full_weights`: a lazy generator of (key, full tensor) pairs, one tensor at a time, for handing the
  weights to a rollout engine without ever holding a second full copy of the model in memory.

Checkpoints (the RL workers and the SFT trainer): `save_huggingface` (the gathered model in Hugging Face format)
and `save_training_state` / `load_training_state` (model and optimizer shards, reshardable, and the lr schedule).

Offload on GPU: `shard_model(offload=True)` keeps parameters (and so their gradients and optimizer state) in CPU
memory; `offload_optimizer_state` / `reload_optimizer_state` move only the optimizer's state out and back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.distributed.tensor import DTensor

from verl.utils import safe_dcp

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def parse_dtype(name: str, key: str = "dtype") -> torch.dtype:
    """A torch dtype from its config name; `key` names the config key in the error."""
    if name not in DTYPES:
        raise ValueError(f"{key}: unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def init_distributed() -> tuple[int, int]:
    """Join (or create) the default process group and return (rank, world_size). Idempotent.

    Ranks come from the torchrun-style env vars RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (Ray workers
    and the tests set them too). Without them, a 1-rank group is created over an in-memory store (no port,
    so nothing to race another process for): FSDP2 needs a device mesh even for one process, and this keeps
    single-process code on the same path as N ranks.
    Backend: nccl when CUDA is available, gloo otherwise.
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(f"init_distributed: RANK/WORLD_SIZE are set but {var} is not")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count())))
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    else:
        if torch.cuda.is_available():
            torch.cuda.set_device(0)
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return dist.get_rank(), dist.get_world_size()


def world_mesh() -> DeviceMesh:
    """A 1-D device mesh over every rank of the default group."""
    return init_device_mesh(device_type(), (dist.get_world_size(),))


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a Hugging Face causal LM (model.model.layers for Qwen2/Llama)."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(
            f"cannot find the decoder layers of {type(model).__name__}: expected model.model.layers"
        )
    return list(layers)


def shard_model(
    model: nn.Module,
    mesh: DeviceMesh | None = None,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = None,
    offload: bool = False,
) -> nn.Module:
    """Apply FSDP2 in place: each decoder layer is its own unit (its weights are gathered only while it runs),
    then the root takes what is left (embeddings, final norm, lm_head; tied weights stay one parameter).

    param_dtype/reduce_dtype: optional mixed precision (compute in param_dtype, reduce gradients in
    reduce_dtype); None keeps the stored dtype. offload: keep the shards (and so the optimizer state and
    gradients) in pinned CPU memory between uses, copying each unit to the GPU only while it computes."""
    device = next(model.parameters()).device
    if offload and device.type != "cuda":
        raise ValueError(
            "fsdp_config.param_offload moves parameters from the GPU to CPU memory between uses; "
            f"this rank computes on {device}, so there is nothing to offload (set it to false)"
        )
    mesh = mesh or world_mesh()
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    placement = CPUOffloadPolicy(pin_memory=True) if offload else OffloadPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy, offload_policy=placement)
    fully_shard(model, mesh=mesh, mp_policy=policy, offload_policy=placement)
    return model


def offload_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Optimizer offload: move the optimizer's state tensors (AdamW's moments, twice the model's size in fp32)
    to CPU memory, freeing the GPU for the rollout and the forward passes until the next update. The `step`
    counters stay where the optimizer keeps them."""
    _move_optimizer_state(optimizer, lambda param: torch.device("cpu"))


def reload_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Bring the state that `offload_optimizer_state` moved back beside each parameter (its device), before
    the optimizer steps or its state is saved or loaded."""
    _move_optimizer_state(optimizer, lambda param: param.device)


def _move_optimizer_state(optimizer: torch.optim.Optimizer, target) -> None:
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param)
            for key, value in (state or {}).items():
                if key != "step" and torch.is_tensor(value):
                    state[key] = value.to(target(param), non_blocking=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the non-blocking copies are done before anyone reads or frees memory


def full_state_dict_rank0(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on CPU on rank 0, {} on other ranks. Every rank must call it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def iter_full_weights(
    model: nn.Module, dtype: torch.dtype | None = None, device: str | torch.device | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (state_dict key, full tensor) one at a time, gathered on demand.

    Every rank must run the generator to the end, in step: each DTensor's `full_tensor()` is a collective,
    and keys come from `state_dict()`, whose order is the same on every rank. Tied weights (embed_tokens and
    lm_head) appear under both keys, so a receiver that loads by key gets both right.
    Only one gathered tensor exists at a time (plus whatever the consumer keeps).
    """
    state = model.state_dict()
    for key, value in state.items():
        tensor = value.full_tensor() if isinstance(value, DTensor) else value
        tensor = tensor.detach()
        if dtype is not None:
            tensor = tensor.to(dtype)
        if device is not None:
            tensor = tensor.to(device)
        yield key, tensor


def save_huggingface(module: torch.nn.Module, auto_cls: type, dtype: str, tokenizer: Any, path: Path) -> None:
    """Gather the sharded `module` and write it (and the tokenizer) to `path` in Hugging Face format, on rank
    0. Every rank must call it. `auto_cls` rebuilds the model class from its config (AutoModelForCausalLM
    for the actor, AutoModelForTokenClassification for the critic)."""
    state = full_state_dict_rank0(module)
    if dist.get_rank() != 0:
        return
    # A plain (unsharded) copy built from the config receives the gathered weights, so save_pretrained
    # sees ordinary tensors and handles tied weights and generation_config as usual.
    with torch.device("meta"):
        plain = auto_cls.from_config(module.config, dtype=parse_dtype(dtype))
    plain.load_state_dict(state, assign=True)
    plain.tie_weights()
    generation_config = getattr(module, "generation_config", None)
    if generation_config is not None:
        plain.generation_config = generation_config
    plain.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def save_training_state(folder: Path, module: torch.nn.Module, optimizer, lr_scheduler) -> None:
    """Model and optimizer shards under folder/dist (torch.distributed.checkpoint, reshardable) and the lr
    schedule in folder/lr_scheduler.json. Every rank must call it."""
    model_state, optim_state = get_state_dict(module, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(folder / "dist"))
    if dist.get_rank() == 0:
        (folder / "lr_scheduler.json").write_text(json.dumps(lr_scheduler.state_dict()))


def load_training_state(folder: Path, module: torch.nn.Module, optimizer, lr_scheduler) -> None:
    """Restore what save_training_state wrote into the (identically built) module, optimizer and schedule."""
    model_state, optim_state = get_state_dict(module, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    safe_dcp.load(state, folder / "dist")  # refuses pickled code a handed-over checkpoint might hide
    set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    lr_scheduler.load_state_dict(json.loads((folder / "lr_scheduler.json").read_text()))
