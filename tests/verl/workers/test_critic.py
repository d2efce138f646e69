"""DataParallelPPOCritic in one process on a plain tiny value model: the value positions, policy-token-only
values and loss, learning on a fixed batch, and the critic config's errors."""

from __future__ import annotations

import pytest
import torch

from verl.protocol import DataProto
from verl.utils.optim import build_adamw
from verl.workers.config import CriticConfig, CriticModelConfig, CriticOptimConfig
from verl.workers.critic import DataParallelPPOCritic, load_value_model


def _critic(model_dir, lr=1e-3, **config) -> DataParallelPPOCritic:
    model = load_value_model(str(model_dir))
    critic_config = CriticConfig(
        model=CriticModelConfig(path=str(model_dir)),
        optim=CriticOptimConfig(lr=lr),
        ppo_mini_batch_size=12,
        forward_micro_batch_size_per_gpu=5,
        **config,
    )
    return DataParallelPPOCritic(
        critic_config, model, build_adamw(model.parameters(), lr), mini_batch_size=12
    )


def _data(scenarios, critic) -> DataProto:
    data = scenarios.make_batch(critic.module.config.vocab_size, seed=0)
    gen = torch.Generator().manual_seed(1)
    data.batch["returns"] = torch.randn(data.batch["responses"].shape, generator=gen)
    data.batch["values"] = critic.compute_values(data)
    return data


def test_values_are_the_head_at_the_position_predicting_each_response_token(scenarios, tiny_model_dir):
    critic = _critic(tiny_model_dir)
    data = _data(scenarios, critic)
    batch = data.batch
    mask = batch["response_mask"].bool()
    with torch.no_grad():
        hidden = critic.module.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
        ).last_hidden_state
        per_position = critic.module.score(hidden)[..., 0]
    prompt_len = batch["prompts"].shape[1]
    expected = per_position[:, prompt_len - 1 : -1]
    torch.testing.assert_close(batch["values"][mask], expected[mask], atol=1e-6, rtol=0)
    assert batch["values"].shape == batch["responses"].shape
    assert (batch["values"][~mask] == 0).all()
    assert (expected[~mask] != 0).all()  # the zeros are the mask's doing, not the model's
    assert batch["values"][mask].abs().max() > 0  # the fresh head is small but not zero


def test_loss_and_gradients_ignore_observation_and_padding_positions(scenarios, tiny_model_dir):
    results = []
    for poison in (False, True):
        critic = _critic(tiny_model_dir)
        data = _data(scenarios, critic)
        if poison:
            holes = data.batch["response_mask"] == 0
            data.batch["returns"][holes] = 1e3
            data.batch["values"][holes] = float("nan")
        metrics = critic.update_critic(data)
        grads = {name: p.grad.clone() for name, p in critic.module.named_parameters()}
        results.append((metrics, grads))
    (clean_metrics, clean_grads), (poisoned_metrics, poisoned_grads) = results
    assert poisoned_metrics == clean_metrics
    for name, grad in clean_grads.items():
        torch.testing.assert_close(poisoned_grads[name], grad, atol=0, rtol=0, msg=name)


def test_updates_on_a_fixed_batch_reduce_the_value_loss(scenarios, tiny_model_dir):
    critic = _critic(tiny_model_dir, cliprange_value=10.0)
    data = _data(scenarios, critic)
    losses = [critic.update_critic(data)["critic/vf_loss"] for _ in range(4)]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.8 * losses[0], losses


def test_value_clipping_limits_the_first_steps_move(scenarios, tiny_model_dir):
    """Once the critic moved away from its rollout-time values, tokens whose update would overshoot are
    clipped and reported in vf_clipfrac."""
    critic = _critic(tiny_model_dir, lr=5e-3, cliprange_value=0.01, ppo_epochs=3)
    metrics = critic.update_critic(_data(scenarios, critic))
    assert 0.0 < metrics["critic/vf_clipfrac"] <= 1.0
    assert metrics["critic/lr"] == 5e-3 and metrics["critic/step_skipped"] == 0.0


def test_non_finite_returns_skip_the_step(scenarios, tiny_model_dir):
    critic = _critic(tiny_model_dir)
    data = _data(scenarios, critic)
    row, col = torch.nonzero(data.batch["response_mask"])[0].tolist()
    data.batch["returns"][row, col] = float("inf")
    before = {k: v.clone() for k, v in critic.module.state_dict().items()}
    metrics = critic.update_critic(data)
    assert metrics["critic/step_skipped"] == 1.0
    for name, value in critic.module.state_dict().items():
        torch.testing.assert_close(value, before[name], atol=0, rtol=0, msg=name)


def test_update_names_missing_columns_and_bad_mini_batches(scenarios, tiny_model_dir):
    critic = _critic(tiny_model_dir)
    data = _data(scenarios, critic)
    data.pop(batch_keys=["returns"])
    with pytest.raises(KeyError, match="returns"):
        critic.update_critic(data)
    critic.mini_batch_size = 5
    with pytest.raises(ValueError, match="critic.ppo_mini_batch_size"):
        critic.update_critic(_data(scenarios, critic))


def test_from_dict_builds_the_critic_config():
    config = CriticConfig.from_dict(
        {
            "model": {"path": "/models/policy", "fsdp_config": {"param_dtype": "bf16"}},
            "optim": {"lr_warmup_steps_ratio": 0.1, "betas": [0.9, 0.95]},
            "ppo_mini_batch_size": 320,
            "cliprange_value": 0.5,
        }
    )
    assert config.model.fsdp_config.param_dtype == "bf16"
    assert config.optim.lr == 1e-5 and config.optim.betas == (0.9, 0.95)
    assert config.optim.lr_warmup_steps_ratio == 0.1 and config.ppo_mini_batch_size == 320


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"model": {"path": ""}}, "critic.model.path"),
        ({"model": {"path": "m", "dtype": "int8"}}, "critic.model.dtype"),
        ({"model": {"path": "m"}, "optim": {"lr": 0}}, "critic.optim.lr"),
        (
            {"model": {"path": "m"}, "optim": {"lr_warmup_steps_ratio": 2}},
            "critic.optim.lr_warmup_steps_ratio",
        ),
        ({"model": {"path": "m"}, "optim": {"learning_rate": 1}}, "critic.optim.learning_rate"),
        ({"model": {"path": "m"}, "cliprange_value": -0.1}, "critic.cliprange_value"),
        ({"model": {"path": "m"}, "loss_agg_mode": "sum"}, "critic.loss_agg_mode"),
        ({"model": {"path": "m"}, "ppo_micro_batch_size_per_gpu": 0}, "critic.ppo_micro_batch_size_per_gpu"),
        ({"model": {"path": "m"}, "forward_micro_batch_size_per_gpu": 0}, "critic.forward_micro_batch_size"),
        ({"model": {"path": "m"}, "grad_clip": 0}, "critic.grad_clip"),
    ],
)
def test_bad_critic_config_names_its_key(data, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        CriticConfig.from_dict(data)
