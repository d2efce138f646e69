"""Advantage estimators behind a registry: GRPO, GAE, REINFORCE and Reinforce++.

Inputs are [batch, response_len] tensors. `response_mask` is 1 on policy tokens and 0 on padding and on
observation tokens that the environment inserted mid-response. Every estimator returns
(advantages, returns), both exactly 0 outside the mask, and ignores rewards and values found outside it.

Sequence-level estimators (GRPO, REINFORCE) score a row by the sum of its rewards on policy tokens (the
reward function puts the scalar on the last policy token) and broadcast one advantage over its policy tokens.
Token-level estimators (GAE, Reinforce++) run backwards over the *policy tokens only*: an observation span is
skipped, not treated as time steps, so "the next step" of the token before an observation is the first policy
token after it. This is the ZeroSearch rule that retrieved text is the environment's, not the policy's.

`compute_advantage(name, ...)` is the one entry the trainer needs: it passes each estimator the options it
declares, so the trainer can hand over its whole algorithm config whatever the estimator.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence

import torch

from verl.algorithms.masked_ops import masked_sum, masked_whiten

AdvantageFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
ADV_ESTIMATORS: dict[str, AdvantageFn] = {}


def register_adv_estimator(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator that files an estimator under `name` (a name can be taken once).

    An estimator takes (token_level_rewards, response_mask) first, then its options as named parameters,
    and returns (advantages, returns), both 0 outside the mask."""

    def decorator(fn: AdvantageFn) -> AdvantageFn:
        if name in ADV_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADV_ESTIMATORS[name] = fn
        return fn

    return decorator


def get_adv_estimator(name: str) -> AdvantageFn:
    if name not in ADV_ESTIMATORS:
        raise ValueError(
            f"adv_estimator: unknown estimator {name!r}; known: {', '.join(sorted(ADV_ESTIMATORS))}"
        )
    return ADV_ESTIMATORS[name]


def uses_critic(name: str) -> bool:
    """Whether estimator `name` reads a critic's `values` (then the trainer builds a CriticWorker)."""
    return "values" in inspect.signature(get_adv_estimator(name)).parameters


def compute_advantage(
    name: str, token_level_rewards: torch.Tensor, response_mask: torch.Tensor, **options
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run estimator `name`, giving it those of `options` its signature names (others are for other
    estimators, e.g. `values` means nothing to GRPO). An option the estimator requires but that is missing
    or None is an error naming it."""
    fn = get_adv_estimator(name)
    params = inspect.signature(fn).parameters
    kwargs = {}
    # the first two parameters are token_level_rewards and response_mask (the estimator contract)
    for pname, param in list(params.items())[2:]:
        value = options.get(pname)
        if value is not None:
            kwargs[pname] = value
        elif param.default is inspect.Parameter.empty:
            raise ValueError(f"advantage estimator {name!r} needs `{pname}`, which was not given")
    return fn(token_level_rewards, response_mask, **kwargs)


def _check_inputs(rewards: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None = None) -> None:
    if rewards.dim() != 2:
        raise ValueError(
            f"token_level_rewards must be [batch, response_len], got shape {tuple(rewards.shape)}"
        )
    if mask.shape != rewards.shape:
        raise ValueError(
            f"response_mask shape {tuple(mask.shape)} does not match token_level_rewards {tuple(rewards.shape)}"
        )
    if values is not None and values.shape != rewards.shape:
        raise ValueError(
            f"values shape {tuple(values.shape)} does not match token_level_rewards {tuple(rewards.shape)}"
        )


def _zero_outside(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma * G_next over policy tokens, where "next" is the next policy token of the row."""
    keep = mask.bool()
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    returns = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        # the carry only moves on policy tokens, so an observation span is invisible to the recursion
        running = torch.where(keep[:, t], rewards[:, t] + gamma * running, running)
        returns[:, t] = running
    return _zero_outside(returns, mask)


@register_adv_estimator("grpo")
@torch.no_grad()
def grpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Sequence[Hashable],
    epsilon: float = 1e-6,
    norm_adv_by_std: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative advantage: A_i = (R_i - mean(group)) / (std(group) + epsilon), over policy tokens.

    `index` holds one hashable group id per row (the id of the prompt instance the row was sampled from;
    never a dataset index, which repeats across data sources). Groups need not be contiguous or equal-sized.
    std is the unbiased sample std (n - 1, torch.std's default, as in the reference implementations, so
    their hyper-parameters carry over). A group of one row has no baseline to compare with: its advantage is 0.
    norm_adv_by_std=False skips the division (Dr. GRPO), leaving R_i - mean(group).
    Returns are the advantages (there is no critic to train).
    """
    _check_inputs(token_level_rewards, response_mask)
    if len(index) != token_level_rewards.shape[0]:
        raise ValueError(f"index has {len(index)} group ids for {token_level_rewards.shape[0]} rows")
    scores = masked_sum(token_level_rewards, response_mask, dim=-1)
    rows_by_group: dict[Hashable, list[int]] = defaultdict(list)
    for row, group_id in enumerate(index):
        rows_by_group[group_id].append(row)
    seq_adv = torch.zeros_like(scores)
    for rows in rows_by_group.values():
        if len(rows) < 2:
            continue
        group = scores[rows]
        centred = group - group.mean()
        seq_adv[rows] = centred / (group.std() + epsilon) if norm_adv_by_std else centred
    advantages = _zero_outside(seq_adv[:, None].expand_as(token_level_rewards), response_mask)
    return advantages, advantages.clone()


@register_adv_estimator("gae")
@torch.no_grad()
def gae_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    values: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over policy tokens (PPO).

    delta_t = r_t + gamma * V_next - V_t and A_t = delta_t + gamma * lam * A_next, where "next" is the next
    policy token of the row (the value bootstraps across an observation span) and V_next = A_next = 0 after
    the last policy token. returns = A + V (before whitening) are the critic's targets. The advantages are
    then whitened over all policy tokens of the batch unless whiten=False.
    """
    _check_inputs(token_level_rewards, response_mask, values)
    keep = response_mask.bool()
    batch, length = token_level_rewards.shape
    next_value = torch.zeros(batch, dtype=values.dtype, device=values.device)
    next_adv = torch.zeros_like(next_value)
    advantages = torch.zeros_like(token_level_rewards)
    for t in reversed(range(length)):
        delta = token_level_rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        # on an observation or padding token the carried (next value, next advantage) pass through unchanged
        next_value = torch.where(keep[:, t], values[:, t], next_value)
        next_adv = torch.where(keep[:, t], adv_t, next_adv)
        advantages[:, t] = adv_t
    advantages = _zero_outside(advantages, response_mask)
    returns = _zero_outside(advantages + values, response_mask)
    if whiten:
        advantages = masked_whiten(advantages, response_mask)
    return advantages, returns


@register_adv_estimator("reinforce")
@torch.no_grad()
def reinforce_advantage(
    token_level_rewards: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain REINFORCE as the ZeroSearch reference runs it: A = R, the row's score broadcast over its policy
    tokens, with no baseline and no normalisation. Returns equal the advantages."""
    _check_inputs(token_level_rewards, response_mask)
    scores = masked_sum(token_level_rewards, response_mask, dim=-1)
    advantages = _zero_outside(scores[:, None].expand_as(token_level_rewards), response_mask)
    return advantages, advantages.clone()


@register_adv_estimator("reinforce_plus_plus")
@torch.no_grad()
def reinforce_plus_plus_advantage(
    token_level_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reinforce++: token-level discounted returns G_t = r_t + gamma * G_next over policy tokens (observation
    spans skipped), whitened over all policy tokens of the batch to give the advantages; returns = G.

    The caller builds `token_level_rewards` with the per-token KL penalty already in it (-beta * kl on each
    policy token, see `apply_kl_penalty`) and the score on the last policy token."""
    _check_inputs(token_level_rewards, response_mask)
    returns = _discounted_returns(token_level_rewards, response_mask, gamma)
    return masked_whiten(returns, response_mask), returns
