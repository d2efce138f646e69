"""The data-parallel PPO/GRPO actor: log-probs and entropy of responses, and the policy update.

Works on any causal LM module, FSDP2-sharded or not; with a process group, every rank holds its own slice of
the batch and runs the same number of forwards (the worker splits batches evenly). All losses are over
`response_mask`, which is 0 on padding *and* on observation tokens the environment inserted mid-response.

Exact gradient accumulation. A mini-batch is cut into micro-batches on every rank. Each micro-batch's loss is
its own sum divided by the *mini-batch's* token (or sequence) count summed over all ranks (`agg_loss` with
global counts), so the micro-batch losses of all ranks add up to the loss of the whole mini-batch, however
uneven the micro-batches are. FSDP2's reduce-scatter averages gradients over ranks, so each rank's loss is
multiplied by the world size before backward: the summed gradient is then exactly that of one full-batch
step on one process.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor

from verl import algorithms
from verl.protocol import DataProto
from verl.workers.config import ActorConfig

logger = logging.getLogger(__name__)

LOG_PROB_KEYS = ("input_ids", "attention_mask", "position_ids", "responses")
# `old_log_probs` is optional: without it the update is on-policy (see update_policy).
UPDATE_KEYS = LOG_PROB_KEYS + ("response_mask", "advantages")


@dataclass
class TrimmedBatch:
    """A micro-batch without the columns that are padding in every row (see trim_padding)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_len: int  # prompt columns kept
    response_len: int  # response columns kept (the first ones; the rest were padding everywhere)
    full_response_len: int

    def pad_responses(self, x: torch.Tensor) -> torch.Tensor:
        """[b, response_len] -> [b, full_response_len], zeros in the dropped right-padding columns."""
        return F.pad(x, (0, self.full_response_len - self.response_len))


def trim_padding(micro: DataProto) -> TrimmedBatch:
    """Drop the left-padding prompt columns and right-padding response columns that no row of `micro` uses.

    Batches are padded to their longest prompt and response, so a micro-batch of short rows is mostly
    padding; cutting it leaves every real token's attention and position (position_ids count real tokens)
    unchanged, so outputs at real tokens are the same, at a fraction of the cost."""
    batch = micro.batch
    full_response_len = batch["responses"].shape[1]
    prompt_width = batch["input_ids"].shape[1] - full_response_len
    if prompt_width < 1:
        raise ValueError(
            f"input_ids has {batch['input_ids'].shape[1]} columns for {full_response_len} response tokens: "
            "every sequence needs at least one prompt token"
        )
    used = batch["attention_mask"].bool().any(0)
    prompt_used = torch.nonzero(used[:prompt_width])
    start = int(prompt_used[0]) if len(prompt_used) else prompt_width - 1
    response_used = torch.nonzero(used[prompt_width:])
    response_len = int(response_used[-1]) + 1 if len(response_used) else 1
    stop = prompt_width + response_len
    return TrimmedBatch(
        batch["input_ids"][:, start:stop],
        batch["attention_mask"][:, start:stop],
        batch["position_ids"][:, start:stop],
        prompt_width - start,
        response_len,
        full_response_len,
    )


@dataclass
class PackedBatch:
    """A trimmed micro-batch with its padding removed: every row's real tokens one after another in a single
    row, positions restarting at 0 for each sequence (so attention stays within each sequence: see pack)."""

    input_ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T]
    predicting: torch.Tensor  # [n] positions in the packed row whose logits predict a real response token
    rows: torch.Tensor  # [n] the micro-batch row of each of them
    columns: torch.Tensor  # [n] the response column of each of them


def pack(trimmed: TrimmedBatch) -> PackedBatch:
    """Pack a trimmed micro-batch (padding-free forward, verl's use_remove_padding).

    Why it is exact: position_ids count each row's real tokens from 0, and transformers reads a reset of
    position_ids in one row without an attention mask as the start of a new sequence (block-diagonal causal
    attention in sdpa/eager, varlen kernels in flash attention). The logit predicting response token t of a
    row sits at that row's token prompt_len + t - 1, found through the running index of real tokens."""
    mask = trimmed.attention_mask.bool()
    index = mask.flatten().cumsum(0).view(mask.shape) - 1  # packed position of each real token
    response_real = mask[:, trimmed.prompt_len : trimmed.prompt_len + trimmed.response_len]
    rows, columns = torch.nonzero(response_real, as_tuple=True)
    return PackedBatch(
        trimmed.input_ids[mask].unsqueeze(0),
        trimmed.position_ids[mask].unsqueeze(0),
        index[rows, trimmed.prompt_len + columns - 1],
        rows,
        columns,
    )


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if _world()[1] > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _require(data: DataProto, keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in data.batch]
    if missing:
        raise KeyError(f"{what}: the batch lacks column(s) {missing}; it has {sorted(data.batch)}")


def _temperature(data: DataProto) -> float:
    """The rollout temperature the responses were sampled at (meta_info["temperature"], default 1).
    0 (greedy) has no sampling distribution to match, so the model's own distribution is used."""
    temperature = float(data.meta_info.get("temperature", 1.0))
    if temperature < 0:
        raise ValueError(f"meta_info['temperature'] must be >= 0, got {temperature}")
    return temperature if temperature > 0 else 1.0


@dataclass
class _MiniBatchStats:
    """Per-mini-batch sums that add up across micro-batches and ranks to full-mini-batch values."""

    pg_loss: float = 0.0
    kl_loss: float = 0.0
    entropy: float = 0.0
    pg_clipfrac: float = 0.0
    ppo_kl: float = 0.0

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor(
            [self.pg_loss, self.kl_loss, self.entropy, self.pg_clipfrac, self.ppo_kl], dtype=torch.float64
        )


class DataParallelPPOActor:
    """Computes log-probs/entropy and runs PPO-style updates of `module`.

    mini_batch_size: samples per rank per optimizer step (default: the config's derived
    mini_batch_samples_per_rank). log_prob_micro_batch_size: samples per forward in compute_log_prob.
    optimizer: None for a frozen model (the reference), which then only computes log-probs.
    """

    def __init__(
        self,
        config: ActorConfig,
        module: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        mini_batch_size: int | None = None,
        log_prob_micro_batch_size: int = 8,
        remove_padding: bool = False,
        device: torch.device | None = None,
    ):
        if log_prob_micro_batch_size < 1:
            raise ValueError(f"log_prob_micro_batch_size must be >= 1, got {log_prob_micro_batch_size}")
        self.config = config
        self.module = module
        self.optimizer = optimizer
        self.mini_batch_size = mini_batch_size or config.mini_batch_samples_per_rank
        self.log_prob_micro_batch_size = log_prob_micro_batch_size
        self.remove_padding = remove_padding
        # Where forwards run. Not the parameters' device: with FSDP2 CPU offload they rest in CPU memory
        # while the computation (and so every input and target) is on the GPU.
        self.device = device if device is not None else next(module.parameters()).device

    def _forward(
        self, micro: DataProto, temperature: float, calculate_entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs [b, R] of the response tokens (and entropy [b, R]) under the current module.

        The logit predicting response token t sits at position P - 1 + t of the full sequence, so the last
        R + 1 positions less the final one are kept (after trim_padding, whose dropped columns get 0). Logits
        are divided by the sampling temperature, as the sampler did."""
        trimmed = trim_padding(micro)
        responses = micro.batch["responses"][:, : trimmed.response_len]
        device = self.device
        if self.remove_padding:
            return self._forward_packed(trimmed, responses, device, temperature, calculate_entropy)
        # Only the logits that predict response tokens are computed: the vocabulary projection of every
        # prompt position would be thrown away.
        output = self.module(
            input_ids=trimmed.input_ids.to(device),
            attention_mask=trimmed.attention_mask.to(device),
            position_ids=trimmed.position_ids.to(device),
            use_cache=False,
            logits_to_keep=trimmed.response_len + 1,
        )
        logits = output.logits[:, :-1].float() / temperature
        log_probs = F.log_softmax(logits, dim=-1).gather(-1, responses.to(device).unsqueeze(-1)).squeeze(-1)
        entropy = algorithms.entropy_from_logits(logits) if calculate_entropy else None
        log_probs = trimmed.pad_responses(log_probs)
        entropy = None if entropy is None else trimmed.pad_responses(entropy)
        return log_probs, entropy

    def _forward_packed(
        self,
        trimmed: TrimmedBatch,
        responses: torch.Tensor,
        device,
        temperature: float,
        calculate_entropy: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """_forward without padding: one packed row, logits only at the positions that predict real response
        tokens, scattered back to [b, R] (0 at padding, which response_mask excludes anyway)."""
        packed = pack(trimmed)
        output = self.module(
            input_ids=packed.input_ids.to(device),
            position_ids=packed.position_ids.to(device),
            use_cache=False,
            logits_to_keep=packed.predicting.to(device),
        )
        logits = output.logits[0].float() / temperature
        rows, columns = packed.rows.to(device), packed.columns.to(device)
        targets = responses.to(device)[rows, columns]
        picked = F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        shape = (trimmed.input_ids.shape[0], trimmed.response_len)
        log_probs = torch.zeros(shape, device=device, dtype=picked.dtype).index_put((rows, columns), picked)
        entropy = None
        if calculate_entropy:
            values = algorithms.entropy_from_logits(logits)
            entropy = torch.zeros(shape, device=device, dtype=values.dtype).index_put((rows, columns), values)
        return trimmed.pad_responses(log_probs), None if entropy is None else trimmed.pad_responses(entropy)

    @torch.no_grad()
    def compute_log_prob(
        self, data: DataProto, calculate_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log_probs [B, R], entropy [B, R] or None) of `responses`, in micro-batches, on CPU."""
        _require(data, LOG_PROB_KEYS, "compute_log_prob")
        temperature = _temperature(data)
        self.module.eval()
        log_probs, entropies = [], []
        for micro in data.split(self.log_prob_micro_batch_size):
            log_prob, entropy = self._forward(micro, temperature, calculate_entropy)
            log_probs.append(log_prob.cpu())
            if entropy is not None:
                entropies.append(entropy.cpu())
        return torch.cat(log_probs), torch.cat(entropies) if calculate_entropy else None

    def update_policy(self, data: DataProto) -> dict[str, float]:
        """ppo_epochs passes over `data` in mini-batches of `mini_batch_size` samples (one optimizer step
        each), each cut into micro-batches of ppo_micro_batch_size_per_gpu. Returns metrics averaged over
        the optimizer steps; loss metrics are exact full-mini-batch values (summed over ranks); this rank's
        seconds in forwards and backwards (`timing_s/actor/forward_backward`) and in gradient clipping and
        optimizer steps (`timing_s/actor/optimizer`), summed over the call.

        Without an `old_log_probs` column the update is on-policy: one epoch over one mini-batch (anything
        else is refused), so no weight has changed before any forward, and each micro-batch's own log-probs,
        detached, are the old ones: the PPO ratio is 1 and its gradient the policy gradient, as with a
        separate old-log-prob pass over the same weights, without that pass."""
        if self.optimizer is None:
            raise RuntimeError("update_policy: this actor has no optimizer (a frozen reference model)")
        keys = UPDATE_KEYS + (("ref_log_prob",) if self.config.use_kl_loss else ())
        _require(data, keys, "update_policy")
        if len(data) % self.mini_batch_size != 0:
            raise ValueError(
                f"actor.ppo_mini_batch_size: this rank holds {len(data)} samples, not a multiple of its "
                f"mini-batch of {self.mini_batch_size} samples"
            )
        if "old_log_probs" not in data.batch and (
            self.config.ppo_epochs != 1 or len(data) > self.mini_batch_size
        ):
            raise ValueError(
                "update_policy: the batch has no old_log_probs, which only an on-policy update (one epoch, "
                f"one mini-batch) can do without; here ppo_epochs={self.config.ppo_epochs} over "
                f"{len(data)} samples in mini-batches of {self.mini_batch_size}"
            )
        temperature = _temperature(data)
        world_size = _world()[1]
        self.module.train()
        history: dict[str, list[float]] = {}
        timings = {"timing_s/actor/forward_backward": 0.0, "timing_s/actor/optimizer": 0.0}
        for _ in range(self.config.ppo_epochs):
            for mini in data.split(self.mini_batch_size):
                for key, value in self._update_mini_batch(mini, temperature, world_size, timings).items():
                    history.setdefault(key, []).append(value)
        metrics = {key: sum(values) / len(values) for key, values in history.items()}
        metrics.update(timings)
        metrics["actor/lr"] = self.optimizer.param_groups[0]["lr"]
        return metrics

    def _update_mini_batch(
        self, mini: DataProto, temperature: float, world_size: int, timings: dict[str, float]
    ) -> dict[str, float]:
        config = self.config
        start = time.perf_counter()
        token_count, seq_count = algorithms.token_and_seq_counts(mini.batch["response_mask"])
        counts = _all_reduce_sum(torch.tensor([token_count, seq_count], dtype=torch.float64))
        global_tokens, global_seqs = int(counts[0].item()), int(counts[1].item())
        agg = {
            "global_token_count": global_tokens,
            "global_seq_count": global_seqs,
            "seq_len_normalizer": config.loss_scale_factor,
        }
        stats = _MiniBatchStats()
        self.optimizer.zero_grad(set_to_none=True)
        for micro in mini.split(config.ppo_micro_batch_size_per_gpu):
            batch = micro.batch
            mask = batch["response_mask"]
            log_prob, entropy = self._forward(micro, temperature, calculate_entropy=True)
            old = batch.get("old_log_probs")
            old_log_prob = log_prob.detach() if old is None else old.to(log_prob.device)
            pg_loss, pg_clipfrac, ppo_kl = algorithms.compute_policy_loss(
                old_log_prob,
                log_prob,
                batch["advantages"].to(log_prob.device),
                mask.to(log_prob.device),
                clip_ratio_low=config.clip_ratio_low,
                clip_ratio_high=config.clip_ratio_high,
                loss_agg_mode=config.loss_agg_mode,
                clip_ratio_c=config.clip_ratio_c,
                **agg,
            )
            mask = mask.to(log_prob.device)
            entropy_loss = algorithms.compute_entropy_loss(entropy, mask, config.loss_agg_mode, **agg)
            kl_loss = None
            if config.use_kl_loss:
                ref = batch["ref_log_prob"].to(log_prob.device)
                kl_loss = algorithms.compute_kl_loss(
                    log_prob, ref, mask, config.kl_loss_type, config.loss_agg_mode, **agg
                )
                stats.kl_loss += kl_loss.item()
            loss = algorithms.actor_loss(
                pg_loss,
                kl_loss=kl_loss,
                kl_coef=config.kl_loss_coef if config.use_kl_loss else 0.0,
                entropy=entropy_loss,
                entropy_coeff=config.entropy_coeff,
            )
            # Undo FSDP2's mean over ranks in the gradient reduce-scatter (see the module docstring).
            (loss * world_size).backward()
            # Clip fraction and ppo_kl are token means over the micro-batch: weight them by its share of the
            # mini-batch's tokens so the sum over micro-batches and ranks is the mini-batch's token mean.
            share = int(mask.bool().sum().item()) / max(global_tokens, 1)
            stats.pg_loss += pg_loss.item()
            stats.entropy += entropy_loss.item()
            stats.pg_clipfrac += pg_clipfrac.item() * share
            stats.ppo_kl += ppo_kl.item() * share
        optimizer_start = time.perf_counter()
        timings["timing_s/actor/forward_backward"] += optimizer_start - start
        grad_norm, stepped = self._optimizer_step()
        timings["timing_s/actor/optimizer"] += time.perf_counter() - optimizer_start
        pg_loss, kl_loss, entropy, pg_clipfrac, ppo_kl = _all_reduce_sum(stats.as_tensor()).tolist()
        metrics = {
            "actor/pg_loss": pg_loss,
            "actor/entropy": entropy,
            "actor/pg_clipfrac": pg_clipfrac,
            "actor/ppo_kl": ppo_kl,
            "actor/grad_norm": grad_norm,
            "actor/step_skipped": 0.0 if stepped else 1.0,
        }
        if config.use_kl_loss:
            metrics["actor/kl_loss"] = kl_loss
        return metrics

    def _optimizer_step(self) -> tuple[float, bool]:
        return clip_grad_and_step(self.module, self.optimizer, self.config.grad_clip, "actor")


def clip_grad_and_step(
    module: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float, who: str
) -> tuple[float, bool]:
    """Clip gradients and step; returns (grad norm before clipping, whether the step was taken).

    The step is skipped when the norm is not finite (one bad batch must not poison the weights) and when
    it is exactly 0: all advantages 0 and no other loss term, e.g. every GRPO group tied; Adam's momentum
    would otherwise keep moving the weights with no signal. The norm is global, so every rank agrees.
    `who` names the model in the log lines (actor, critic)."""
    params = [p for p in module.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=grad_clip)
    if isinstance(grad_norm, DTensor):
        grad_norm = grad_norm.full_tensor()
    norm = float(grad_norm.item())
    if not math.isfinite(norm):
        logger.warning("%s: gradient norm is %s; optimizer step skipped", who, norm)
        optimizer.zero_grad(set_to_none=True)
        return norm, False
    if norm == 0.0:
        logger.info("%s: gradient is exactly zero (no learning signal); optimizer step skipped", who)
        return norm, False
    optimizer.step()
    return norm, True
