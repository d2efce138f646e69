"""KL estimators, the KL-in-reward controllers and apply_kl_penalty, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from verl.algorithms.kl import AdaptiveKLController, FixedKLController, apply_kl_penalty, kl_penalty

LOGP = torch.tensor([-1.0, -2.0])
REF = torch.tensor([-1.5, -1.0])


def test_k1_is_logp_minus_ref():
    assert kl_penalty(LOGP, REF, "kl").tolist() == pytest.approx([0.5, -1.0])


def test_abs_and_mse():
    assert kl_penalty(LOGP, REF, "abs").tolist() == pytest.approx([0.5, 1.0])
    # 0.5 * 0.25, 0.5 * 1
    assert kl_penalty(LOGP, REF, "mse").tolist() == pytest.approx([0.125, 0.5])


def test_low_var_kl_k3():
    # d = ref - logp = -0.5, 1.0
    # exp(-0.5) + 0.5 - 1 = 0.606531 - 0.5 = 0.106531; exp(1) - 1 - 1 = 0.718282
    assert kl_penalty(LOGP, REF, "low_var_kl").tolist() == pytest.approx([0.106531, 0.718282], abs=1e-6)


def test_low_var_kl_is_clamped_at_10_with_finite_gradients():
    # d = 15: exp(15) - 16 = 3269001 -> 10; d = -15: e^-15 + 15 - 1 = 14 -> 10; d = 100 would overflow exp
    logp = torch.tensor([0.0, 0.0, 0.0, -200.0], requires_grad=True)
    ref = torch.tensor([15.0, -15.0, 2.0, 0.0])
    out = kl_penalty(logp, ref, "low_var_kl")
    # d = 2: exp(2) - 3 = 4.389056, inside the clamp
    assert out.tolist() == pytest.approx([10.0, 10.0, 4.389056, 10.0], abs=1e-5)
    out.sum().backward()
    assert torch.isfinite(logp.grad).all()
    assert logp.grad[[0, 1, 3]].tolist() == [0.0, 0.0, 0.0]


def test_unknown_kind_lists_the_valid_ones():
    with pytest.raises(ValueError, match="kl, abs, mse, low_var_kl"):
        kl_penalty(LOGP, REF, "k2")


def test_fixed_controller_never_moves():
    ctrl = FixedKLController(kl_coef=0.05)
    ctrl.update(current_kl=100.0, n_steps=1000)
    assert ctrl.value == 0.05


def test_adaptive_controller_clips_the_error_both_ways():
    ctrl = AdaptiveKLController(init_kl_coef=0.1, target_kl=6.0, horizon=10000)
    # 9 / 6 - 1 = 0.5 -> clipped to 0.2; coef *= 1 + 0.2 * 500 / 10000 = 1.01 -> 0.101
    ctrl.update(current_kl=9.0, n_steps=500)
    assert ctrl.value == pytest.approx(0.101)
    # 3 / 6 - 1 = -0.5 -> clipped to -0.2; coef *= 1 - 0.2 * 1000 / 10000 = 0.98 -> 0.09898
    ctrl.update(current_kl=3.0, n_steps=1000)
    assert ctrl.value == pytest.approx(0.09898)


def test_adaptive_controller_proportional_inside_the_clip():
    ctrl = AdaptiveKLController(init_kl_coef=0.2, target_kl=6.0, horizon=100)
    # 6.6 / 6 - 1 = 0.1; coef *= 1 + 0.1 * 100 / 100 = 1.1 -> 0.22
    ctrl.update(current_kl=6.6, n_steps=100)
    assert ctrl.value == pytest.approx(0.22)


def test_adaptive_controller_rejects_bad_settings():
    with pytest.raises(ValueError, match="target_kl"):
        AdaptiveKLController(init_kl_coef=0.1, target_kl=0.0, horizon=10)
    with pytest.raises(ValueError, match="horizon"):
        AdaptiveKLController(init_kl_coef=0.1, target_kl=1.0, horizon=0)


def test_apply_kl_penalty_on_policy_tokens_only():
    # policy, policy, observation, observation, policy (score 1), padding
    mask = torch.tensor([[1, 1, 0, 0, 1, 0]])
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    logp = torch.tensor([[-1.0, -2.0, -3.0, -3.0, -0.5, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -1.0, -1.0, -0.5, -4.0]])
    rewards, metrics = apply_kl_penalty(scores, logp, ref, mask, FixedKLController(0.1), kind="kl")
    # k1 on policy tokens: 0.5, -1.0, 0.0 -> rewards -0.05, +0.1, 1.0; observation/padding untouched
    assert rewards.tolist()[0] == pytest.approx([-0.05, 0.1, 0.0, 0.0, 1.0, 0.0])
    # sequence mean KL over its 3 policy tokens: (0.5 - 1 + 0) / 3
    assert metrics["actor/reward_kl_penalty"] == pytest.approx(-0.5 / 3)
    assert metrics["actor/reward_kl_penalty_coeff"] == pytest.approx(0.1)


def test_apply_kl_penalty_feeds_the_adaptive_controller():
    mask = torch.ones(2, 3)
    logp = torch.zeros(2, 3)
    ref = torch.full((2, 3), -math.log(2.0))  # k1 = ln 2 = 0.693147 on every token
    ctrl = AdaptiveKLController(init_kl_coef=0.5, target_kl=0.630134, horizon=20)
    _, metrics = apply_kl_penalty(torch.zeros(2, 3), logp, ref, mask, ctrl)
    ctrl.update(metrics["actor/reward_kl_penalty"], n_steps=2)
    # 0.693147 / 0.630134 - 1 = 0.1; coef *= 1 + 0.1 * 2 / 20 = 1.01 -> 0.505
    assert ctrl.value == pytest.approx(0.505, abs=1e-5)


def test_apply_kl_penalty_rejects_a_batch_without_policy_tokens():
    zeros = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="no row of the batch has a policy token"):
        apply_kl_penalty(zeros, zeros, zeros, zeros, FixedKLController(0.1))
