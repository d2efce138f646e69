"""ActorRolloutRefWorker: the actor (FSDP2 + AdamW), the rollout engine and the frozen reference model in one
process, the hybrid engine. One instance runs per rank; a worker group (Ray, or plain processes in tests)
calls the @register-tagged methods on every rank with the dispatch mode's arguments.

Why the rollout holds its own full copy of the weights: under FSDP every forward all-gathers parameters, a
collective that all ranks must join, but ranks generate different numbers of tokens, so generating with the
sharded module would deadlock. After every actor update (and checkpoint load) the worker streams the full
weights into the rollout one tensor at a time (`rollout.update_weights`), the same explicit hand-off a vLLM
engine needs.

Checkpoint layout (`save_checkpoint(local_dir, ...)` writes into `local_dir`, which the caller creates as a
staging folder and renames into place when every role has written its part (verl.utils.checkpoint), so a crash
never leaves a half checkpoint under a complete name; ranks must share the file system):
    local_dir/actor/huggingface/   the actor in Hugging Face format (safetensors) + tokenizer
    local_dir/actor/dist/          model and optimizer shards (torch.distributed.checkpoint; reshardable)
    local_dir/actor/lr_scheduler.json
    local_dir/actor/rng_rank{r}.pt one per rank (verl.utils.seed, loadable with weights_only=True)
    local_dir/trainer_state.json   {"global_step": ..., "extra_state": ...} (extra_state must be JSON)

CriticWorker: the PPO value model on FSDP2, in its own worker group; its checkpoint goes to local_dir/critic/
(huggingface/, dist/, lr_scheduler.json, critic_state.json), into the same staging folder.
The helpers below the classes (sharding on this rank's device, Hugging Face export, training-state save/load)
serve both workers.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from verl.protocol import DataProto
from verl.single_controller.decorator import Dispatch, register
from verl.utils.fsdp import (
    device_type,
    init_distributed,
    iter_full_weights,
    load_training_state,
    offload_optimizer_state,
    parse_dtype,
    reload_optimizer_state,
    save_huggingface,
    save_training_state,
    shard_model,
)
from verl.utils.optim import build_optimizer
from verl.utils.seed import load_rng_state, save_rng_state
from verl.workers.actor import DataParallelPPOActor
from verl.workers.config import ActorConfig, ActorRolloutRefConfig, CriticConfig, FSDPConfig
from verl.workers.critic import DataParallelPPOCritic, load_value_model
from verl.workers.rollout import RolloutSamplingParams, get_rollout_class, resolve_rollout_name
from verl.workers.rollout.base import RolloutRequest
from verl.workers.rollout.stream import BackgroundServer

logger = logging.getLogger(__name__)

ROLES = ("actor", "rollout", "actor_rollout", "actor_rollout_ref", "ref")


class ActorRolloutRefWorker:
    """config: the typed `actor_rollout_ref` section (ActorRolloutRefConfig.from_dict, derived fields filled
    for this group's world size). role: which of actor / rollout / reference this process hosts (ROLES)."""

    def __init__(self, config: ActorRolloutRefConfig, role: str):
        if role not in ROLES:
            raise ValueError(f"ActorRolloutRefWorker: unknown role {role!r}; valid: {', '.join(ROLES)}")
        self.config = config
        self.role = role
        self.has_actor = role in ("actor", "actor_rollout", "actor_rollout_ref")
        self.has_rollout = role in ("rollout", "actor_rollout", "actor_rollout_ref")
        self.has_ref = role in ("ref", "actor_rollout_ref")
        self.actor: DataParallelPPOActor | None = None
        self.ref: DataParallelPPOActor | None = None
        self.rollout = None
        self._server: BackgroundServer | None = None  # streamed rollouts (rollout_exchange)

    # ----- setup ---------------------------------------------------------------------------------------

    def _load_sharded(self, fsdp_config: FSDPConfig, trainable: bool) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        model_config = self.config.model
        check_attention(model_config.attn_implementation, self.device, "actor_rollout_ref.model")
        module = AutoModelForCausalLM.from_pretrained(
            model_config.path,
            dtype=parse_dtype(model_config.dtype, "actor_rollout_ref.model.dtype"),
            attn_implementation=model_config.attn_implementation,
        )
        return shard_on_device(
            module, self.device, fsdp_config, trainable, model_config.enable_gradient_checkpointing
        )

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        """Join the process group, then build this role's parts: the sharded actor with AdamW and its lr
        schedule, the sharded frozen reference, and the rollout engine (its own full copy of the weights)."""
        from transformers import AutoTokenizer

        self.rank, self.world_size = init_distributed()
        self.device = local_device()
        model_config = self.config.model
        self.tokenizer = AutoTokenizer.from_pretrained(model_config.tokenizer_path or model_config.path)
        if self.has_rollout:  # first: an engine reserving device memory must do it before training takes any
            rollout_cls = get_rollout_class(resolve_rollout_name(self.config.rollout.name, self.device.type))
            self.rollout = rollout_cls.from_config(
                model_config.path, self.tokenizer, self.device, self.config.rollout
            )
        if self.has_actor:
            actor_config = self.config.actor
            _check_split("actor_rollout_ref.actor", actor_config, self.world_size)
            module = self._load_sharded(actor_config.fsdp_config, trainable=True)
            self.optimizer, self.lr_scheduler = build_optimizer(module.parameters(), actor_config.optim)
            self.actor = DataParallelPPOActor(
                actor_config,
                module,
                self.optimizer,
                mini_batch_size=actor_config.mini_batch_samples_per_rank,
                log_prob_micro_batch_size=self.config.rollout.log_prob_micro_batch_size_per_gpu,
                remove_padding=model_config.use_remove_padding,
                device=self.device,
            )
        if self.has_ref:
            module = self._load_sharded(self.config.ref.fsdp_config, trainable=False)
            self.ref = DataParallelPPOActor(
                self.config.actor,
                module,
                log_prob_micro_batch_size=self.config.ref.log_prob_micro_batch_size_per_gpu,
                remove_padding=model_config.use_remove_padding,
                device=self.device,
            )
        if self.rollout is not None and self.rollout.needs_initial_weights:  # vLLM's dummy start
            self._sync_rollout_weights()

    def _require(self, part: str) -> None:
        if getattr(self, part) is None:
            raise RuntimeError(f"this worker (role {self.role!r}) has no {part}; did init_model run?")

    # ----- rollout -------------------------------------------------------------------------------------

    def _sampling_params(self, overrides: dict[str, Any] | None, shared: bool) -> RolloutSamplingParams:
        """rollout config defaults, overridden by `overrides` (a RolloutSamplingParams as a dict). A seed
        shared by the call's prompts is mixed with the rank so ranks draw different samples for their
        different prompts; a prompt's own seed is used as given (see `sample_seed`)."""
        rollout = self.config.rollout
        fields: dict[str, Any] = {
            "n": rollout.n,
            "temperature": rollout.temperature,
            "top_p": rollout.top_p,
            "max_tokens": rollout.response_length,
            "seed": rollout.seed,
        }
        fields.update(overrides or {})
        for key in ("stop", "stop_token_ids"):
            if key in fields:
                fields[key] = tuple(fields[key])
        if shared and fields.get("seed") is not None:
            fields["seed"] = int(fields["seed"]) * 1_000_003 + self.rank
        return RolloutSamplingParams(**fields)

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def generate_sequences(self, data: DataProto) -> DataProto:
        """Sample from prompts given as token ids (non-tensor column `prompt_token_ids`), with
        meta_info["sampling_params"] for every prompt, or each prompt's own in the non-tensor column
        `sampling_params` (dicts of RolloutSamplingParams fields).

        Returns one row per sample, prompt i's samples at rows i*n .. i*n+n-1 (the layout of
        DataProto.repeat(n, interleave=True)), with columns `response_token_ids` (lists of ints, exactly as
        sampled), `finish_reason`, and `response_logprobs` when sampling_params.logprobs is set."""
        self._require("rollout")
        if "prompt_token_ids" not in data.non_tensor_batch:
            raise KeyError(
                f"generate_sequences: the batch lacks the non-tensor column 'prompt_token_ids'; "
                f"it has {sorted(data.non_tensor_batch)}"
            )
        prompts = [[int(t) for t in ids] for ids in data.non_tensor_batch["prompt_token_ids"]]
        own = data.non_tensor_batch.get("sampling_params")
        if own is None:
            params = self._sampling_params(data.meta_info.get("sampling_params"), shared=True)
            each = [params] * len(prompts)
        else:
            params = each = [self._sampling_params(dict(fields), shared=False) for fields in own]
        outputs = [sample for samples in self.rollout.generate(prompts, params) for sample in samples]
        columns: dict[str, Any] = {
            "response_token_ids": [list(o.token_ids) for o in outputs],
            "finish_reason": [o.finish_reason for o in outputs],
        }
        if any(p.logprobs for p in each):
            columns["response_logprobs"] = [list(o.logprobs or []) for o in outputs]
        return DataProto.from_dict(non_tensors=columns)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def rollout_serves_alone(self) -> bool:
        """Whether this rank's engine can serve streamed requests (`rollout_exchange`)."""
        self._require("rollout")
        return self.rollout.serves_alone

    @register(dispatch_mode=Dispatch.ALL_TO_ALL)
    def rollout_exchange(self, requests: list, wait_s: float) -> list:
        """Streamed generation (verl/workers/rollout/stream.py): queue `requests`, each (key, prompt ids,
        sampling params as a dict, its seed used as given), on this rank's engine serving in the background
        (started on first use), and return the finished ones as (key, RolloutOutput), waiting up to
        `wait_s` for the first."""
        self._require("rollout")
        if self._server is None:
            self._server = BackgroundServer(self.rollout)
        keyed = [
            (key, RolloutRequest(prompt, self._sampling_params(fields, shared=False)))
            for key, prompt, fields in requests
        ]
        return self._server.exchange(keyed, wait_s)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def rollout_stream_stop(self) -> None:
        """End the background serving (before the weights change); raises what failed in it, if anything."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def wake_rollout(self) -> None:
        """Give the rollout engine its memory back before a rollout phase (all turns of a batch)."""
        self._require("rollout")
        self.rollout.wake_up()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def sleep_rollout(self) -> None:
        """Free the rollout engine's memory for training until the next rollout phase."""
        self._require("rollout")
        self.rollout.sleep()

    def _sync_rollout_weights(self) -> None:
        """Stream the actor's full weights into the rollout engine, one tensor at a time."""
        if self.rollout is None or self.actor is None:
            return
        weights = iter_full_weights(self.actor.module, dtype=parse_dtype(self.config.rollout.dtype))
        self.rollout.update_weights(weights)
        # Every rank must take part in every all-gather: drain whatever the engine did not consume.
        for _ in weights:
            pass

    # ----- actor and reference -------------------------------------------------------------------------

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_log_prob(self, data: DataProto) -> DataProto:
        """The actor's log-probs of `responses` (`old_log_probs`) and their entropy (`entropys`), [B, R]."""
        self._require("actor")
        log_probs, entropy = self.actor.compute_log_prob(data, calculate_entropy=True)
        return DataProto.from_dict(tensors={"old_log_probs": log_probs, "entropys": entropy})

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_ref_log_prob(self, data: DataProto) -> DataProto:
        """The frozen reference model's log-probs of `responses` (`ref_log_prob`), [B, R]."""
        self._require("ref")
        log_probs, _ = self.ref.compute_log_prob(data, calculate_entropy=False)
        return DataProto.from_dict(tensors={"ref_log_prob": log_probs})

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def update_actor(self, data: DataProto) -> DataProto:
        """One training step of the actor (see DataParallelPPOActor.update_policy), then the lr schedule
        step and the weight sync to the rollout. meta_info["metrics"]: the step's metrics, averaged over ranks
        (so every rank returns the same values), with the sync's seconds (`timing_s/actor/weight_sync`) and
        the rank's peak resident memory so far (`perf/peak_rss_mib`, the process's high-water mark)."""
        self._require("actor")
        with optimizer_state_on_device(self.optimizer, self.config.actor.fsdp_config.optimizer_offload):
            metrics = self.actor.update_policy(data)
        self.lr_scheduler.step()
        start = time.perf_counter()
        self._sync_rollout_weights()
        metrics["timing_s/actor/weight_sync"] = time.perf_counter() - start
        metrics["perf/peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return DataProto(meta_info={"metrics": _mean_over_ranks(metrics)})

    # ----- checkpoints ---------------------------------------------------------------------------------

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, local_dir: str, global_step: int, extra_state: dict | None = None) -> str:
        """Write the checkpoint described in the module docstring; returns local_dir."""
        from transformers import AutoModelForCausalLM

        self._require("actor")
        folder = Path(local_dir)
        if self.rank == 0:
            (folder / "actor").mkdir(parents=True, exist_ok=True)
        _barrier()
        save_huggingface(
            self.actor.module,
            AutoModelForCausalLM,
            self.config.model.dtype,
            self.tokenizer,
            folder / "actor" / "huggingface",
        )
        with optimizer_state_on_device(self.optimizer, self.config.actor.fsdp_config.optimizer_offload):
            save_training_state(folder / "actor", self.actor.module, self.optimizer, self.lr_scheduler)
        save_rng_state(folder / "actor" / f"rng_rank{self.rank}.pt")
        if self.rank == 0:
            state = {"global_step": int(global_step), "extra_state": extra_state or {}}
            (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))
        _barrier()
        return str(folder)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, local_dir: str) -> dict[str, Any]:
        """Restore actor weights, optimizer, lr schedule and this rank's RNG from `save_checkpoint`'s folder,
        push the weights to the rollout, and return {"global_step", "extra_state"}."""
        self._require("actor")
        root = Path(local_dir)
        state_file = root / "trainer_state.json"
        if not state_file.is_file():
            raise FileNotFoundError(f"load_checkpoint: {state_file} not found (not a complete checkpoint)")
        with optimizer_state_on_device(self.optimizer, self.config.actor.fsdp_config.optimizer_offload):
            load_training_state(root / "actor", self.actor.module, self.optimizer, self.lr_scheduler)
        rng_file = root / "actor" / f"rng_rank{self.rank}.pt"
        if rng_file.is_file():
            load_rng_state(rng_file)
        else:
            logger.warning("load_checkpoint: %s missing (different world size?); RNG not restored", rng_file)
        self._sync_rollout_weights()
        return json.loads(state_file.read_text())


def local_device() -> torch.device:
    """This rank's device: its current CUDA device (init_distributed selected it), else the CPU."""
    if device_type() == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_attention(implementation: str | None, device: torch.device, key: str) -> None:
    """flash_attention_2 computes on CUDA only: say so by key instead of failing inside transformers."""
    if implementation == "flash_attention_2" and device.type != "cuda":
        raise ValueError(
            f"{key}.attn_implementation=flash_attention_2 needs a CUDA device; this rank computes on {device} "
            f"(set {key}.attn_implementation=sdpa, or null)"
        )


@contextmanager
def optimizer_state_on_device(optimizer: torch.optim.Optimizer, offloaded: bool) -> Iterator[None]:
    """With fsdp_config.optimizer_offload, the optimizer's state rests in CPU memory: bring it beside the
    parameters for the block (an update, a checkpoint save or load), then send it back."""
    if offloaded:
        reload_optimizer_state(optimizer)
    try:
        yield
    finally:
        if offloaded:
            offload_optimizer_state(optimizer)


def shard_on_device(
    module: torch.nn.Module,
    device: torch.device,
    fsdp_config: FSDPConfig,
    trainable: bool,
    gradient_checkpointing: bool = False,
) -> torch.nn.Module:
    """Move a loaded Hugging Face model to `device` and shard it with FSDP2 (mixed precision from
    fsdp_config). A frozen model (trainable=False) gets no gradients and stays in eval mode."""
    if fsdp_config.optimizer_offload and device.type != "cuda":
        raise ValueError(
            "fsdp_config.optimizer_offload moves the optimizer's state from the GPU to CPU memory between "
            f"updates; this rank computes on {device}, so there is nothing to offload (set it to false)"
        )
    if trainable and gradient_checkpointing:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not trainable:
        module.requires_grad_(False)
        module.eval()
    module.to(device)
    param_dtype = parse_dtype(fsdp_config.param_dtype) if fsdp_config.param_dtype else None
    reduce_dtype = parse_dtype(fsdp_config.reduce_dtype) if fsdp_config.reduce_dtype else None
    return shard_model(
        module, param_dtype=param_dtype, reduce_dtype=reduce_dtype, offload=fsdp_config.param_offload
    )


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """Average every metric over the data-parallel ranks (sorted keys, so every rank packs the same order)."""
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return dict(zip(keys, values.tolist(), strict=True))


def _check_split(key: str, config: ActorConfig | CriticConfig, world_size: int) -> None:
    """The config's per-rank mini-batch was derived for this group's world size (from_dict(world_size=...))."""
    if config.mini_batch_samples_per_rank * world_size != config.mini_batch_samples:
        raise ValueError(
            f"{key}: mini_batch_samples_per_rank={config.mini_batch_samples_per_rank} was derived for another "
            f"world size than this group's {world_size} ranks (mini_batch_samples={config.mini_batch_samples})"
        )


class CriticWorker:
    """The PPO critic on FSDP2: a value model (verl/workers/critic.py) with its own AdamW and lr schedule.
    One instance runs per rank, like ActorRolloutRefWorker, in its own worker group.

    config: the typed `critic` section (CriticConfig.from_dict, derived fields filled for this group's world
    size, model.path filled in).

    Checkpoint: `save_checkpoint(local_dir, step)` writes local_dir/critic/ (huggingface/ that
    AutoModelForTokenClassification reloads, dist/ shards, lr_scheduler.json) into the caller's staging folder
    local_dir, beside the actor's part."""

    def __init__(self, config: CriticConfig):
        self.config = config
        self.critic: DataParallelPPOCritic | None = None

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        """Join the process group, load the value model (see load_value_model), shard it, build AdamW and
        the lr schedule."""
        from transformers import AutoTokenizer

        self.rank, self.world_size = init_distributed()
        self.device = local_device()
        config = self.config
        _check_split("critic", config, self.world_size)
        model_config = config.model
        self.tokenizer = AutoTokenizer.from_pretrained(model_config.tokenizer_path or model_config.path)
        check_attention(model_config.attn_implementation, self.device, "critic.model")
        module = shard_on_device(
            load_value_model(model_config.path, model_config.dtype, model_config.attn_implementation),
            self.device,
            model_config.fsdp_config,
            trainable=True,
            gradient_checkpointing=model_config.enable_gradient_checkpointing,
        )
        self.optimizer, self.lr_scheduler = build_optimizer(module.parameters(), config.optim)
        self.critic = DataParallelPPOCritic(
            config,
            module,
            self.optimizer,
            mini_batch_size=config.mini_batch_samples_per_rank,
            device=self.device,
        )

    def _require_critic(self) -> DataParallelPPOCritic:
        if self.critic is None:
            raise RuntimeError("CriticWorker: the critic is not built; did init_model run?")
        return self.critic

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_values(self, data: DataProto) -> DataProto:
        """`values` [B, R] of the responses; 0 wherever response_mask is 0."""
        return DataProto.from_dict(tensors={"values": self._require_critic().compute_values(data)})

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def update_critic(self, data: DataProto) -> DataProto:
        """One training step of the critic on `values` and `returns` (see DataParallelPPOCritic.update_critic),
        then the lr schedule step. meta_info["metrics"]: the step's metrics, averaged over ranks."""
        offloaded = self.config.model.fsdp_config.optimizer_offload
        with optimizer_state_on_device(self.optimizer, offloaded):
            metrics = self._require_critic().update_critic(data)
        self.lr_scheduler.step()
        return DataProto(meta_info={"metrics": _mean_over_ranks(metrics)})

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, local_dir: str, global_step: int) -> str:
        """Write local_dir/critic/ (see the class docstring); returns its path."""
        from transformers import AutoModelForTokenClassification

        critic = self._require_critic()
        folder = Path(local_dir) / "critic"
        if self.rank == 0:
            folder.mkdir(parents=True, exist_ok=True)
        _barrier()
        save_huggingface(
            critic.module,
            AutoModelForTokenClassification,
            self.config.model.dtype,
            self.tokenizer,
            folder / "huggingface",
        )
        with optimizer_state_on_device(self.optimizer, self.config.model.fsdp_config.optimizer_offload):
            save_training_state(folder, critic.module, self.optimizer, self.lr_scheduler)
        if self.rank == 0:
            (folder / "critic_state.json").write_text(json.dumps({"global_step": int(global_step)}))
        _barrier()
        return str(folder)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, local_dir: str) -> dict[str, Any]:
        """Restore the critic's weights, optimizer and lr schedule from local_dir/critic/; returns its
        {"global_step"}."""
        critic = self._require_critic()
        folder = Path(local_dir) / "critic"
        state_file = folder / "critic_state.json"
        if not state_file.is_file():
            raise FileNotFoundError(
                f"critic load_checkpoint: {state_file} not found (no complete critic checkpoint)"
            )
        with optimizer_state_on_device(self.optimizer, self.config.model.fsdp_config.optimizer_offload):
            load_training_state(folder, critic.module, self.optimizer, self.lr_scheduler)
        return json.loads(state_file.read_text())
