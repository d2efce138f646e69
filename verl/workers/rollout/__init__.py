"""Rollout engines behind one token-in / token-out interface (`base`). Importing the package registers
the built-in backends, so `get_rollout_class(config.rollout.name)` finds them."""

from verl.workers.rollout.base import (
    RolloutEngine,
    RolloutOutput,
    RolloutSamplingParams,
    get_rollout_class,
    register_rollout,
    resolve_rollout_name,
)
from verl.workers.rollout.hf import HFRollout

__all__ = [
    "HFRollout",
    "RolloutEngine",
    "RolloutOutput",
    "RolloutSamplingParams",
    "get_rollout_class",
    "register_rollout",
    "resolve_rollout_name",
]
