"""The RL algorithms of the engine in one namespace: advantage estimators, policy/value/entropy/KL losses,
KL penalties and controllers, and loss aggregation.

The code lives in four small modules (masked_ops, advantages, kl, losses); import from here. The workers
(actor, critic) and the trainer's fit loop both use it, so it sits below both: nothing under verl/workers/
imports verl.trainer. All functions
are pure torch on [batch, response_len] tensors with a mask that is 1 on policy tokens and 0 on padding and
on observation tokens inserted by the environment mid-response.
"""

from __future__ import annotations

from verl.algorithms.advantages import (
    ADV_ESTIMATORS,
    compute_advantage,
    gae_advantage,
    get_adv_estimator,
    grpo_advantage,
    register_adv_estimator,
    reinforce_advantage,
    reinforce_plus_plus_advantage,
)
from verl.algorithms.kl import (
    KL_PENALTIES,
    AdaptiveKLController,
    FixedKLController,
    KLController,
    apply_kl_penalty,
    kl_penalty,
)
from verl.algorithms.losses import (
    actor_loss,
    compute_entropy_loss,
    compute_kl_loss,
    compute_policy_loss,
    compute_value_loss,
    entropy_from_logits,
)
from verl.algorithms.masked_ops import (
    LOSS_AGG_MODES,
    agg_loss,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    token_and_seq_counts,
)

__all__ = [
    "ADV_ESTIMATORS",
    "KL_PENALTIES",
    "LOSS_AGG_MODES",
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
    "actor_loss",
    "agg_loss",
    "apply_kl_penalty",
    "compute_advantage",
    "compute_entropy_loss",
    "compute_kl_loss",
    "compute_policy_loss",
    "compute_value_loss",
    "entropy_from_logits",
    "gae_advantage",
    "get_adv_estimator",
    "grpo_advantage",
    "kl_penalty",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "register_adv_estimator",
    "reinforce_advantage",
    "reinforce_plus_plus_advantage",
    "token_and_seq_counts",
]
