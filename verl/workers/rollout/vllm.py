"""The vLLM rollout backend ("vllm"): one engine per training rank, colocated with FSDP (the hybrid engine).

Why each rank owns an engine: under FSDP every rank holds a shard of the policy; the engine holds a full
copy for generation, in the same process, so no weights cross process boundaries. The engine runs
in-process (vLLM's `external_launcher` executor on the process group FSDP already built, or its
single-process executor without one), which is what lets `update_weights` stream tensors from the FSDP
all-gathers straight into the engine's `load_weights`, one tensor at a time, with no serialization and
never a whole state dict on one rank. With tensor parallelism, the ranks of one TP group form one engine
and must submit the same prompts: `generate` gathers the group's prompts, every rank generates them all,
and each returns its own share.

Life cycle (the worker drives it):
    engine built with dummy weights -> update_weights (the actor's) -> [wake_up -> generate ... -> sleep]
    -> update_weights after every actor update -> ...
On GPU with `enable_sleep_mode`, `sleep` frees the KV cache (and, at level 2, the weights) so training can
use the memory; waking is staged: `update_weights` wakes the weights alone before loading them, `wake_up`
then restores the KV cache, so weights and cache never need memory at the same moment as the optimizer.
The prefix cache is reset after every push: cached KV blocks were computed by the old weights.

Import this module only where vLLM is installed (it is an optional extra with its own environment);
`get_rollout_class("vllm")` imports it on demand.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from verl.workers.rollout.base import (
    Params,
    RolloutEngine,
    RolloutOutput,
    group_samples,
    per_prompt,
    register_rollout,
    sample_seed,
)

logger = logging.getLogger(__name__)

_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _dtype_name(dtype: str | torch.dtype) -> str:
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    if dtype not in _DTYPES:
        raise ValueError(f"VLLMRollout: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return dtype


@register_rollout("vllm")
class VLLMRollout(RolloutEngine):
    """Token-in / token-out generation with a colocated vLLM engine.

    model: the Hugging Face folder the engine takes its architecture (and, with load_format="auto", its
    weights) from. tensor_parallel_size: ranks per engine (must divide the process group's size).
    load_format: "dummy" (default: random weights, the trainer pushes the real ones before the first
    rollout, and loading a checkpoint twice is avoided) or "auto". enable_sleep_mode: None = on CUDA only
    (vLLM's CPU backend has no sleep mode); sleep_level 1 offloads weights and drops the KV cache, 2 drops
    both. gpu_memory_utilization: the share of device memory the engine may take (weights + KV cache).
    The output contract is the transformers backend's (see `RolloutSamplingParams` / `HFRollout`): ids
    exactly as sampled (EOS, stop token or the tokens completing a stop string included), processed
    log-probs, sample j of prompt i seeded by (seed, i, j).
    """

    def __init__(
        self,
        model: str | Path,
        tokenizer=None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        *,
        tensor_parallel_size: int = 1,
        load_format: str = "dummy",
        enable_sleep_mode: bool | None = None,
        sleep_level: int = 1,
        gpu_memory_utilization: float = 0.5,
        max_model_len: int | None = None,
        enforce_eager: bool = True,
        seed: int = 0,
    ):
        from vllm import LLM

        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"VLLMRollout: no such model folder: {path}")
        if sleep_level not in (1, 2):
            raise ValueError(f"VLLMRollout: sleep_level must be 1 or 2, got {sleep_level}")
        on_cuda = torch.cuda.is_available() and str(device) != "cpu"
        self.sleep_enabled = on_cuda if enable_sleep_mode is None else bool(enable_sleep_mode)
        if self.sleep_enabled and not on_cuda:
            raise ValueError(
                "VLLMRollout: enable_sleep_mode needs CUDA (vLLM's CPU backend has no sleep mode)"
            )
        self.sleep_level = sleep_level
        self.needs_initial_weights = load_format == "dummy"
        self.tokenizer = tokenizer
        world = dist.get_world_size() if dist.is_initialized() else 1
        if world % tensor_parallel_size:
            raise ValueError(
                f"VLLMRollout: tensor_parallel_size={tensor_parallel_size} does not divide the {world} ranks"
            )
        self.tp_size = tensor_parallel_size
        self._tp_group = _tensor_parallel_group(tensor_parallel_size) if tensor_parallel_size > 1 else None
        engine_args: dict[str, Any] = {
            "model": str(path),
            "dtype": _dtype_name(dtype),
            "load_format": load_format,
            "tensor_parallel_size": tensor_parallel_size,
            "enforce_eager": enforce_eager,
            "enable_sleep_mode": self.sleep_enabled,
            "logprobs_mode": "processed_logprobs",
            "seed": seed,
            "enable_prefix_caching": True,
        }
        if on_cuda:
            engine_args["gpu_memory_utilization"] = gpu_memory_utilization
        else:
            # A chunked prefill discards the sample drawn for the unfinished prompt and rewinds that
            # request's seeded generator, which CPU generators cannot do ("CPU Generator does not use
            # offset"): on CPU, prompts are prefilled whole.
            engine_args["enable_chunked_prefill"] = False
        if max_model_len is not None:
            engine_args["max_model_len"] = max_model_len
        if world > 1:
            # One engine per TP group, on the process group FSDP built: data-parallel engines side by side.
            engine_args["distributed_executor_backend"] = "external_launcher"
            engine_args["data_parallel_size"] = world // tensor_parallel_size
        else:
            # One process (a test, an evaluation script, a 1-rank run): the engine stays in-process, so weights
            # can be streamed in; it sets up (or reuses) a 1-rank process group of its own.
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        with _modules_hidden_from_vllm_scan():
            self.llm = LLM(**engine_args)
        self._asleep_tags: set[str] = set()

    @classmethod
    def from_config(cls, model_path, tokenizer, device, config) -> VLLMRollout:
        return cls(
            model_path,
            tokenizer=tokenizer,
            device=device,
            dtype=config.dtype,
            tensor_parallel_size=config.tensor_model_parallel_size,
            load_format=config.load_format,
            enable_sleep_mode=config.free_cache_engine,
            sleep_level=config.sleep_level,
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_model_len=config.max_model_len,
            enforce_eager=config.enforce_eager,
            seed=config.seed or 0,
        )

    # ----- generation -----------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Sequence[int]], params: Params) -> list[list[RolloutOutput]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        each, shared = per_prompt(prompts, params)
        mine = [(list(map(int, prompt)), p) for prompt, p in zip(prompts, each, strict=True)]
        everyone, start = self._gather_tp(mine)
        # One request per (prompt, sample), each with its own derived seed: a sample's draws never depend
        # on what else is in the batch, as in the transformers backend.
        requests, sampling = [], []
        for i, (prompt, p) in enumerate(everyone):
            for j in range(p.n):
                requests.append(TokensPrompt(prompt_token_ids=prompt))
                sampling.append(
                    SamplingParams(
                        n=1,
                        temperature=p.temperature,
                        top_p=p.top_p,
                        max_tokens=p.max_tokens,
                        stop=list(p.stop) or None,
                        stop_token_ids=list(p.stop_token_ids) or None,
                        include_stop_str_in_output=True,
                        seed=sample_seed(p, i, j, shared),
                        logprobs=0 if p.logprobs else None,
                        detokenize=bool(p.stop),
                        skip_special_tokens=False,
                    )
                )
        outputs = self.llm.generate(requests, sampling, use_tqdm=False) if requests else []
        flat = [(out.outputs[0], sp.logprobs is not None) for out, sp in zip(outputs, sampling, strict=True)]
        grouped = group_samples([self._sample(c, want) for c, want in flat], [p for _, p in everyone])
        return grouped[start : start + len(mine)]

    @staticmethod
    def _sample(completion, want_logprobs: bool) -> RolloutOutput:
        ids = list(completion.token_ids)
        if completion.finish_reason == "length":
            reason = "length"
        elif completion.stop_reason is None:
            reason = "eos"
        else:
            reason = "stop"
        logprobs = None
        if want_logprobs:
            logprobs = [
                float(step[token].logprob) for step, token in zip(completion.logprobs, ids, strict=True)
            ]
        return RolloutOutput(ids, reason, logprobs)

    def _gather_tp(self, prompts: list) -> tuple[list, int]:
        """The prompts of this rank's whole TP group, in rank order, and where this rank's own begin."""
        if self._tp_group is None:
            return prompts, 0
        parts: list[Any] = [None] * self.tp_size
        dist.all_gather_object(parts, prompts, group=self._tp_group)
        start = sum(len(p) for p in parts[: dist.get_rank(self._tp_group)])
        return [p for part in parts for p in part], start

    # ----- weights and memory ---------------------------------------------------------------------------

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load (state_dict key, full tensor) pairs into the engine as they come, then drop the prefix cache.

        Keys are the Hugging Face ones (vLLM's loader maps them onto its fused layers); a tied lm_head is
        taken from the embedding, whichever key arrives. Pushing a subset updates just those tensors."""
        if "weights" in self._asleep_tags:
            self.llm.wake_up(tags=["weights"])
            self._asleep_tags.discard("weights")
        # reload_weights, not the model's load_weights: backends repack weights after loading (vLLM's CPU
        # GEMMs drop the checkpoint-format tensors), and the reload restores that format, loads, repacks.
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(named_tensors)})
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self.sleep_enabled and not self._asleep_tags:
            self.llm.sleep(level=self.sleep_level)
            self._asleep_tags = {"weights", "kv_cache"}

    def wake_up(self) -> None:
        if self._asleep_tags:
            self.llm.wake_up(tags=sorted(self._asleep_tags))
            self._asleep_tags.clear()

    def close(self) -> None:
        """Shut the engine down and free it; the trainer's process group stays usable.

        vLLM's engine shutdown ends by destroying torch's default process group, which in a colocated
        worker is the trainer's own (FSDP's): that one step is skipped; vLLM's own groups are destroyed."""
        with _default_process_group_kept():
            self.llm.llm_engine.engine_core.shutdown()
        del self.llm


@contextmanager
def _default_process_group_kept():
    from vllm.distributed import parallel_state

    original = parallel_state.destroy_distributed_environment

    def destroy_vllm_world_only() -> None:
        world = getattr(parallel_state, "_WORLD", None)
        if world is not None:
            world.destroy()
        parallel_state._WORLD = None

    parallel_state.destroy_distributed_environment = destroy_vllm_world_only
    try:
        yield
    finally:
        parallel_state.destroy_distributed_environment = original


# vLLM's CPU platform walks every loaded module at start-up, looking for Triton kernels to replace. llvmlite's
# FFI module (loaded with numba, which bm25s and others import when it is installed) answers every attribute
# lookup, `__dict__` included, with a function wrapper, and that walk then fails. It is hidden from
# sys.modules while the engine starts and put back right after.
_UNSCANNABLE_MODULES = ("llvmlite.binding.ffi",)


@contextmanager
def _modules_hidden_from_vllm_scan():
    hidden = {name: sys.modules.pop(name) for name in _UNSCANNABLE_MODULES if name in sys.modules}
    try:
        yield
    finally:
        sys.modules.update(hidden)


def _tensor_parallel_group(tp: int):
    """This rank's TP group: consecutive blocks of `tp` ranks (every rank creates every group, in order)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = None
    for start in range(0, world, tp):
        group = dist.new_group(list(range(start, start + tp)))
        if start <= rank < start + tp:
            mine = group
    return mine
