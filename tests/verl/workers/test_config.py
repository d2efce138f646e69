"""Worker configs from their verl-style dict form, and validation errors that name the key."""

from __future__ import annotations

import pytest

from verl.utils.config import ConfigError
from verl.workers.config import (
    ActorConfig,
    ActorRolloutRefConfig,
    CriticConfig,
    CriticModelConfig,
    ModelConfig,
    OptimConfig,
    RolloutConfig,
)


def test_from_dict_builds_nested_typed_configs():
    config = ActorRolloutRefConfig.from_dict(
        {
            "model": {"path": "/models/policy", "enable_gradient_checkpointing": True},
            "actor": {
                "ppo_mini_batch_size": 64,
                "use_kl_loss": True,
                "optim": {"lr": 1e-6, "betas": [0.9, 0.95]},
                "fsdp_config": {"param_dtype": "bf16"},
            },
            "rollout": {"n": 5, "temperature": 1.0},
        }
    )
    assert config.model.enable_gradient_checkpointing
    assert config.actor.ppo_mini_batch_size == 64 and config.actor.use_kl_loss
    assert config.actor.optim.lr == 1e-6 and config.actor.optim.betas == (0.9, 0.95)
    assert config.actor.fsdp_config.param_dtype == "bf16"
    assert config.rollout.n == 5 and config.ref.log_prob_micro_batch_size_per_gpu == 8


def test_unknown_keys_are_named_in_full_with_the_closest_known_ones():
    with pytest.raises(
        ConfigError, match=r"unknown config key actor_rollout_ref\.actor\.optim\.learning_rate"
    ):
        ActorRolloutRefConfig.from_dict({"model": {"path": "m"}, "actor": {"optim": {"learning_rate": 1.0}}})
    with pytest.raises(
        ConfigError, match=r"ppo_epoch \(did you mean actor_rollout_ref\.actor\.ppo_epochs\?\)"
    ):
        ActorRolloutRefConfig.from_dict({"model": {"path": "m"}, "actor": {"ppo_epoch": 2}})


def test_derived_batch_sizes_count_samples_overall_and_per_rank():
    config = ActorRolloutRefConfig.from_dict(
        {"model": {"path": "m"}, "actor": {"ppo_mini_batch_size": 16}, "rollout": {"n": 5}},
        world_size=4,
        total_training_steps=203,
    )
    assert config.actor.ppo_mini_batch_size == 16  # prompts, as typed
    assert config.actor.mini_batch_samples == 80 and config.actor.mini_batch_samples_per_rank == 20
    assert config.actor.optim.total_training_steps == 203


def test_derived_fields_cannot_be_set_and_must_split_over_the_ranks():
    with pytest.raises(ConfigError, match=r"actor_rollout_ref\.actor\.mini_batch_samples is derived"):
        ActorRolloutRefConfig.from_dict({"model": {"path": "m"}, "actor": {"mini_batch_samples": 8}})
    with pytest.raises(ConfigError, match=r"ppo_mini_batch_size \* rollout\.n \(15 samples\).*3 ranks|= 2\)"):
        ActorRolloutRefConfig.from_dict(
            {"model": {"path": "m"}, "actor": {"ppo_mini_batch_size": 3}, "rollout": {"n": 5}}, world_size=2
        )


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: ModelConfig(path=""), "actor_rollout_ref.model.path"),
        (lambda: ModelConfig(path="m", dtype="float8"), "actor_rollout_ref.model.dtype"),
        (lambda: ActorConfig(loss_agg_mode="sum"), "actor.loss_agg_mode"),
        (lambda: ActorConfig(kl_loss_type="k2"), "actor.kl_loss_type"),
        (lambda: ActorConfig(clip_ratio_c=1.0), "actor.clip_ratio_c"),
        (lambda: ActorConfig(ppo_micro_batch_size_per_gpu=0), "actor.ppo_micro_batch_size_per_gpu"),
        (lambda: OptimConfig(lr_scheduler="step"), "actor.optim.lr_scheduler"),
        (lambda: OptimConfig(lr_warmup_steps_ratio=1.5), "actor.optim.lr_warmup_steps_ratio"),
        (lambda: RolloutConfig(top_p=0.0), "rollout.top_p"),
        (lambda: ActorConfig(loss_agg_mode="seq-mean-token-sum-norm"), "actor.loss_scale_factor"),
        (lambda: ActorConfig(loss_scale_factor=0), "actor.loss_scale_factor"),
        (
            lambda: CriticConfig(model=CriticModelConfig(path="m"), loss_agg_mode="seq-mean-token-sum-norm"),
            "critic.loss_scale_factor",
        ),
    ],
)
def test_bad_values_name_their_key(build, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build()


def test_worker_rejects_an_unknown_role():
    from verl.workers.fsdp_workers import ActorRolloutRefWorker

    with pytest.raises(ValueError, match="critic"):
        ActorRolloutRefWorker(ActorRolloutRefConfig.from_dict({"model": {"path": "m"}}), role="critic")
