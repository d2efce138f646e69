"""KL penalties between the policy and the reference model, and the KL-in-reward controllers (PPO).

The KL can enter training in two places:
* as a loss term (GRPO / REINFORCE; see `losses.compute_kl_loss`), where it is a penalty that is *added*;
* in the reward (PPO), where `apply_kl_penalty` subtracts coef * kl from every policy token's reward and a
  controller (fixed or adaptive) sets coef.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from verl.algorithms.masked_ops import masked_mean

# log-ratios beyond this are clamped before exp(); k3 saturates at 10 long before |d| = 20, so values are
# unchanged, but exp() can no longer overflow to inf (inf * 0 in backward would give nan gradients).
_MAX_LOG_RATIO = 20.0
_K3_CLAMP = 10.0


def _k1(logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    return logprob - ref_logprob


def _abs(logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    return (logprob - ref_logprob).abs()


def _mse(logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logprob - ref_logprob).square()


def _low_var_kl(logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """k3 (Schulman's low-variance estimator): exp(d) - d - 1 with d = ref - logp; non-negative, clamped."""
    d = (ref_logprob - logprob).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    return (torch.exp(d) - d - 1).clamp(-_K3_CLAMP, _K3_CLAMP)


KL_PENALTIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "kl": _k1,
    "abs": _abs,
    "mse": _mse,
    "low_var_kl": _low_var_kl,
}


def kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """Per-token KL estimate between the policy (logprob) and the reference (ref_logprob), same shape.

    kinds: ``kl`` (k1: logp - ref), ``abs`` (|logp - ref|), ``mse`` (0.5 (logp - ref)^2),
    ``low_var_kl`` (k3: exp(ref - logp) - (ref - logp) - 1, clamped to [-10, 10])."""
    if kind not in KL_PENALTIES:
        raise ValueError(f"kl_penalty: unknown kind {kind!r}; valid: {', '.join(KL_PENALTIES)}")
    if logprob.shape != ref_logprob.shape:
        raise ValueError(
            f"kl_penalty: ref_logprob shape {tuple(ref_logprob.shape)} != logprob shape {tuple(logprob.shape)}"
        )
    return KL_PENALTIES[kind](logprob, ref_logprob)


@dataclass
class FixedKLController:
    """A constant KL-in-reward coefficient."""

    kl_coef: float

    @property
    def value(self) -> float:
        return self.kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt; present so the trainer treats both controllers alike."""


class AdaptiveKLController:
    """Proportional controller that steers the measured KL towards `target_kl` (Ziegler et al., 2019).

    After each batch: error = clip(current_kl / target_kl - 1, -0.2, 0.2) and
    coef *= 1 + error * n_steps / horizon, with n_steps the number of sequences in the batch, so the
    coefficient moves by at most 20% per `horizon` sequences."""

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: int) -> None:
        if init_kl_coef < 0:
            raise ValueError(f"init_kl_coef must be >= 0, got {init_kl_coef}")
        if target_kl <= 0:
            raise ValueError(f"target_kl must be > 0, got {target_kl}")
        if horizon <= 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.target_kl = float(target_kl)
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


KLController = FixedKLController | AdaptiveKLController


def apply_kl_penalty(
    token_level_scores: torch.Tensor,
    logprob: torch.Tensor,
    ref_logprob: torch.Tensor,
    mask: torch.Tensor,
    kl_ctrl: KLController,
    kind: str = "kl",
) -> tuple[torch.Tensor, dict[str, float]]:
    """KL in the reward: rewards = scores - coef * kl on policy tokens (other tokens keep their score).

    Pure: it does not move the controller. The trainer calls
    ``kl_ctrl.update(metrics["actor/reward_kl_penalty"], n_steps=batch_size)`` afterwards; that metric is the
    mean over sequences of each sequence's mean KL over its policy tokens."""
    if token_level_scores.shape != mask.shape:
        raise ValueError(
            f"apply_kl_penalty: mask shape {tuple(mask.shape)} != scores shape {tuple(token_level_scores.shape)}"
        )
    keep = mask.bool()
    kl = torch.where(
        keep,
        kl_penalty(logprob, ref_logprob, kind),
        torch.zeros((), dtype=logprob.dtype, device=logprob.device),
    )
    rewards = token_level_scores - kl_ctrl.value * kl.to(token_level_scores.dtype)
    has_tokens = keep.any(dim=-1)
    if not has_tokens.any():
        raise ValueError("apply_kl_penalty: no row of the batch has a policy token")
    seq_kl = masked_mean(kl, keep, dim=-1)[has_tokens]
    metrics = {
        "actor/reward_kl_penalty": seq_kl.mean().item(),
        "actor/reward_kl_penalty_coeff": float(kl_ctrl.value),
    }
    return rewards, metrics
