"""The data-parallel PPO critic: a value model's predictions for response tokens, and the value update.

The value model is the policy's backbone class with a scalar head: `AutoModelForTokenClassification` with
`num_labels=1` (for Qwen2, `Qwen2ForTokenClassification`: the decoder stack `model.*` of the causal LM plus a
`score` Linear(hidden, 1)). Loading a policy folder takes its backbone weights and adds a fresh head; loading a
critic checkpoint's huggingface/ folder restores the trained head too, so the critic saves and reloads in plain
Hugging Face format. Dropout is switched off: the update must see the same function that computed the values.

Positions. V_t, the value of the state before response token t, is read at the hidden state that *predicts*
token t, index P - 1 + t of the full sequence: the same shift as the actor's log-probs, so values, log-probs
and rewards line up column by column in [B, R].

Only policy tokens count. `response_mask` is 0 on padding and on observation tokens inserted by the
environment; values there are returned as exact zeros, and `returns`/`values` there never reach the loss or
its gradient (they are replaced by zeros before the loss, so even a nan there is harmless).

Exact gradient accumulation and data parallelism work as in the actor (verl/workers/actor.py): each
micro-batch's loss is divided by the mini-batch's token (or sequence) count summed over all ranks, and
multiplied by the world size to undo FSDP2's gradient averaging.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from verl import algorithms
from verl.protocol import DataProto
from verl.utils.fsdp import parse_dtype
from verl.workers.actor import _all_reduce_sum, _require, _world, clip_grad_and_step, trim_padding
from verl.workers.config import CriticConfig

logger = logging.getLogger(__name__)

VALUE_KEYS = ("input_ids", "attention_mask", "position_ids", "responses", "response_mask")
UPDATE_KEYS = VALUE_KEYS + ("values", "returns")
# The fresh value head is drawn from its own generator, so every rank (and every run) builds the same head:
# FSDP2 shards each rank's local copy, which must therefore agree.
HEAD_INIT_SEED = 0


def load_value_model(path: str, dtype: str = "float32", attn_implementation: str | None = None) -> nn.Module:
    """A value model from a Hugging Face folder: a causal LM's backbone with a new head, or a saved critic.

    A new head gets weights ~ N(0, initializer_range) from a fixed seed and a zero bias: small, so the first
    values are near 0, but not all zero, so the backbone gets gradients from the first step."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    hf_config = AutoConfig.from_pretrained(path)
    hf_config.num_labels = 1
    hf_config.classifier_dropout = 0.0
    model, info = AutoModelForTokenClassification.from_pretrained(
        path,
        config=hf_config,
        dtype=parse_dtype(dtype, "critic.model.dtype"),
        attn_implementation=attn_implementation,
        output_loading_info=True,
    )
    head = model.score
    head_keys = {f"score.{name}" for name, _ in head.named_parameters()}
    missing = head_keys & set(info["missing_keys"])
    if missing and missing != head_keys:
        raise ValueError(
            f"critic.model.path {path}: the value head is incomplete (missing {sorted(missing)})"
        )
    if missing:
        generator = torch.Generator().manual_seed(HEAD_INIT_SEED)
        std = float(getattr(hf_config, "initializer_range", 0.02))
        with torch.no_grad():
            weight = torch.randn(head.weight.shape, generator=generator, dtype=torch.float32) * std
            head.weight.copy_(weight.to(head.weight.dtype))
            if head.bias is not None:
                head.bias.zero_()
    other_missing = set(info["missing_keys"]) - head_keys
    if other_missing:
        raise ValueError(
            f"critic.model.path {path}: backbone weights missing from the folder: {sorted(other_missing)[:5]}"
        )
    return model


class DataParallelPPOCritic:
    """Computes values [B, R] of responses and runs PPO value updates of `module` (FSDP2-sharded or not).

    mini_batch_size: samples per rank per optimizer step (default: the config's derived
    mini_batch_samples_per_rank). optimizer: None for a critic that only computes values."""

    def __init__(
        self,
        config: CriticConfig,
        module: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        mini_batch_size: int | None = None,
        device: torch.device | None = None,
    ):
        self.config = config
        self.module = module
        self.optimizer = optimizer
        self.mini_batch_size = mini_batch_size or config.mini_batch_samples_per_rank
        # Where forwards run; with FSDP2 CPU offload the parameters rest in CPU memory (see the actor).
        self.device = device if device is not None else next(module.parameters()).device

    def _forward(self, micro: DataProto) -> torch.Tensor:
        """Values [b, R] (float32, on the module's device) for every response column, masked or not."""
        trimmed = trim_padding(micro)
        device = self.device
        output = self.module(
            input_ids=trimmed.input_ids.to(device),
            attention_mask=trimmed.attention_mask.to(device),
            position_ids=trimmed.position_ids.to(device),
            use_cache=False,
        )
        p, r = trimmed.prompt_len, trimmed.response_len
        return trimmed.pad_responses(output.logits[:, p - 1 : p - 1 + r, 0].float())

    @torch.no_grad()
    def compute_values(self, data: DataProto) -> torch.Tensor:
        """Values [B, R] on CPU, in micro-batches of forward_micro_batch_size_per_gpu; exact 0 wherever
        response_mask is 0 (padding and observation tokens)."""
        _require(data, VALUE_KEYS, "compute_values")
        self.module.eval()
        values = []
        for micro in data.split(self.config.forward_micro_batch_size_per_gpu):
            mask = micro.batch["response_mask"].bool()
            values.append(torch.where(mask, self._forward(micro).cpu(), 0.0))
        return torch.cat(values)

    def update_critic(self, data: DataProto) -> dict[str, float]:
        """ppo_epochs passes over `data` in mini-batches of `mini_batch_size` samples (one optimizer step
        each), each cut into micro-batches of ppo_micro_batch_size_per_gpu. `values` are the rollout-time
        predictions (the clipping anchor), `returns` the targets. Returns metrics averaged over the optimizer
        steps; loss metrics are exact full-mini-batch values (summed over ranks)."""
        if self.optimizer is None:
            raise RuntimeError("update_critic: this critic has no optimizer")
        _require(data, UPDATE_KEYS, "update_critic")
        if len(data) % self.mini_batch_size != 0:
            raise ValueError(
                f"critic.ppo_mini_batch_size: this rank holds {len(data)} samples, not a multiple of its "
                f"mini-batch of {self.mini_batch_size} samples"
            )
        world_size = _world()[1]
        self.module.train()
        history: dict[str, list[float]] = {}
        for _ in range(self.config.ppo_epochs):
            for mini in data.split(self.mini_batch_size):
                for key, value in self._update_mini_batch(mini, world_size).items():
                    history.setdefault(key, []).append(value)
        metrics = {key: sum(values) / len(values) for key, values in history.items()}
        metrics["critic/lr"] = self.optimizer.param_groups[0]["lr"]
        return metrics

    def _update_mini_batch(self, mini: DataProto, world_size: int) -> dict[str, float]:
        config = self.config
        token_count, seq_count = algorithms.token_and_seq_counts(mini.batch["response_mask"])
        counts = _all_reduce_sum(torch.tensor([token_count, seq_count], dtype=torch.float64))
        global_tokens, global_seqs = int(counts[0].item()), int(counts[1].item())
        # vf_loss, clip fraction and vpred mean, each as this rank's share of the mini-batch value.
        stats = torch.zeros(3, dtype=torch.float64)
        self.optimizer.zero_grad(set_to_none=True)
        for micro in mini.split(config.ppo_micro_batch_size_per_gpu):
            vpreds = self._forward(micro)
            mask = micro.batch["response_mask"].to(vpreds.device).bool()
            # Observation and padding positions never reach the loss, whatever they hold.
            returns = torch.where(mask, micro.batch["returns"].to(vpreds.device).float(), 0.0)
            values = torch.where(mask, micro.batch["values"].to(vpreds.device).float(), 0.0)
            vf_loss, vf_clipfrac = algorithms.compute_value_loss(
                vpreds,
                returns,
                values,
                mask,
                cliprange_value=config.cliprange_value,
                loss_agg_mode=config.loss_agg_mode,
                global_token_count=global_tokens,
                global_seq_count=global_seqs,
                seq_len_normalizer=config.loss_scale_factor,
            )
            # Undo FSDP2's mean over ranks in the gradient reduce-scatter (see the actor's docstring).
            (vf_loss * world_size).backward()
            tokens = int(mask.sum().item())
            share = tokens / max(global_tokens, 1)
            stats[0] += vf_loss.item()
            stats[1] += vf_clipfrac.item() * share
            stats[2] += algorithms.masked_sum(vpreds.detach(), mask).item() / max(global_tokens, 1)
        grad_norm, stepped = clip_grad_and_step(self.module, self.optimizer, config.grad_clip, "critic")
        vf_loss, vf_clipfrac, vpred_mean = _all_reduce_sum(stats).tolist()
        return {
            "critic/vf_loss": vf_loss,
            "critic/vf_clipfrac": vf_clipfrac,
            "critic/vpred_mean": vpred_mean,
            "critic/grad_norm": grad_norm,
            "critic/step_skipped": 0.0 if stepped else 1.0,
        }
