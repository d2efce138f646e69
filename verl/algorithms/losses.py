"""Policy, value, entropy and KL losses over policy tokens, and the actor's total loss.

Each loss builds a per-token matrix [batch, response_len] and reduces it with `agg_loss` over the loss mask
(1 on policy tokens; 0 on padding and on observation tokens). Extra keyword arguments of every loss
(`global_token_count`, `global_seq_count`, `seq_len_normalizer`) go to `agg_loss` unchanged: pass the
mini-batch's counts to make accumulated micro-batch gradients equal a full-batch step. Metrics (clip
fractions, ppo_kl) are plain token means over the micro-batch and carry no gradient.
"""

from __future__ import annotations

import torch

from verl.algorithms.kl import kl_penalty
from verl.algorithms.masked_ops import agg_loss

# exp() of a log-ratio beyond this overflows float32 / bf16 ranges; no trust region needs more room.
_MAX_LOG_RATIO = 20.0


def _token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A detached metric; 0 for a micro-batch without policy tokens."""
    return agg_loss(x.detach().to(torch.float32), mask, "token-mean")


def compute_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    loss_agg_mode: str = "token-mean",
    clip_ratio_c: float | None = None,
    **agg_options,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO-clip: per token max(-A * ratio, -A * clip(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high)),
    with ratio = exp(log_prob - old_log_prob).

    `clip_ratio_c` (> 1) turns on dual clip (Ye et al., 2020): for A < 0 the loss is also capped at
    -A * clip_ratio_c, so one token whose probability exploded cannot dominate the batch.
    Returns (pg_loss, pg_clipfrac, ppo_kl): the aggregated loss, the share of policy tokens where the
    clipped term was the active one, and the mean of old_log_prob - log_prob (a k1 estimate of the step's KL).
    """
    if clip_ratio_low < 0 or clip_ratio_high < 0:
        raise ValueError(f"clip ratios must be >= 0, got low={clip_ratio_low}, high={clip_ratio_high}")
    if clip_ratio_c is not None and clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be > 1 for dual clip, got {clip_ratio_c}")
    log_ratio = (log_prob - old_log_prob).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    pg_losses = torch.maximum(unclipped, clipped)
    if clip_ratio_c is not None:
        capped = torch.minimum(pg_losses, -advantages * clip_ratio_c)
        pg_losses = torch.where(advantages < 0, capped, pg_losses)
    pg_loss = agg_loss(pg_losses, response_mask, loss_agg_mode, **agg_options)
    pg_clipfrac = _token_mean((clipped > unclipped).float(), response_mask)
    ppo_kl = _token_mean(-log_ratio, response_mask)
    return pg_loss, pg_clipfrac, ppo_kl


def compute_value_loss(
    vpreds: torch.Tensor,
    returns: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange_value: float = 0.5,
    loss_agg_mode: str = "token-mean",
    **agg_options,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: 0.5 * max((vpred - R)^2, (vclip - R)^2), vclip = values + clip(vpred - values, ±c).

    `values` are the critic's predictions at rollout time, `vpreds` the current ones. Taking the max keeps
    the critic from profiting by moving far from its rollout-time predictions in one update.
    Returns (vf_loss, vf_clipfrac), the latter the share of policy tokens where the clipped error was larger."""
    if cliprange_value < 0:
        raise ValueError(f"cliprange_value must be >= 0, got {cliprange_value}")
    vpred_clipped = values + (vpreds - values).clamp(-cliprange_value, cliprange_value)
    unclipped = (vpreds - returns).square()
    clipped = (vpred_clipped - returns).square()
    vf_losses = 0.5 * torch.maximum(unclipped, clipped)
    vf_loss = agg_loss(vf_losses, response_mask, loss_agg_mode, **agg_options)
    vf_clipfrac = _token_mean((clipped > unclipped).float(), response_mask)
    return vf_loss, vf_clipfrac


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical over the last dim: logsumexp(z) - sum(softmax(z) * z)."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def compute_entropy_loss(
    entropy_or_logits: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    **agg_options,
) -> torch.Tensor:
    """Aggregated entropy of the policy over policy tokens, from per-token entropy [B, T] or logits [B, T, V].

    This is the entropy itself (higher = more exploratory); `actor_loss` subtracts it with its coefficient."""
    if entropy_or_logits.dim() == 3:
        entropy = entropy_from_logits(entropy_or_logits)
    elif entropy_or_logits.dim() == 2:
        entropy = entropy_or_logits
    else:
        raise ValueError(
            f"compute_entropy_loss: expected entropy [B, T] or logits [B, T, V], got shape "
            f"{tuple(entropy_or_logits.shape)}"
        )
    return agg_loss(entropy, response_mask, loss_agg_mode, **agg_options)


def compute_kl_loss(
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    kind: str = "low_var_kl",
    loss_agg_mode: str = "token-mean",
    **agg_options,
) -> torch.Tensor:
    """KL to the reference model as a loss term (GRPO / REINFORCE): kl_penalty per token, then agg_loss."""
    return agg_loss(kl_penalty(log_prob, ref_log_prob, kind), response_mask, loss_agg_mode, **agg_options)


def actor_loss(
    pg_loss: torch.Tensor,
    *,
    kl_loss: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    entropy: torch.Tensor | None = None,
    entropy_coeff: float = 0.0,
) -> torch.Tensor:
    """The actor's total loss, the one place its signs live: pg_loss + kl_coef * kl_loss - entropy_coeff * entropy.

    The KL term is a penalty, so it is added: minimising the loss pulls the policy towards the reference
    (the ZeroSearch reference code subtracted it, which rewards drifting away). The entropy is subtracted,
    so a positive entropy_coeff rewards exploration. A term is left out when its coefficient is 0."""
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0 (a negative coefficient rewards drift), got {kl_coef}")
    total = pg_loss
    if kl_coef != 0:
        if kl_loss is None:
            raise ValueError(f"actor_loss: kl_coef={kl_coef} but no kl_loss given")
        total = total + kl_coef * kl_loss
    if entropy_coeff != 0:
        if entropy is None:
            raise ValueError(f"actor_loss: entropy_coeff={entropy_coeff} but no entropy given")
        total = total - entropy_coeff * entropy
    return total
