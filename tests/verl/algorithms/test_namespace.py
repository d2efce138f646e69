"""The verl.algorithms namespace and the actor's total loss: the KL term is a penalty (added), entropy a bonus."""

from __future__ import annotations

import pytest
import torch

from verl import algorithms


def test_namespace_exports_every_listed_name():
    missing = [name for name in algorithms.__all__ if not hasattr(algorithms, name)]
    assert missing == []
    assert set(algorithms.ADV_ESTIMATORS) >= {"grpo", "gae", "reinforce", "reinforce_plus_plus"}


def _kl_setup() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy log-probs that differ from the reference on the policy tokens, with an observation hole."""
    log_prob = torch.tensor([[-0.5, -2.0, -9.0, -1.0]], requires_grad=True)
    ref_log_prob = torch.tensor([[-1.0, -1.0, -1.0, -1.5]])
    mask = torch.tensor([[1, 1, 0, 1]])
    return log_prob, ref_log_prob, mask


def test_raising_kl_coef_raises_the_loss_when_the_policy_drifted():
    log_prob, ref_log_prob, mask = _kl_setup()
    pg_loss = torch.tensor(0.3)
    kl_loss = algorithms.compute_kl_loss(log_prob, ref_log_prob, mask, kind="low_var_kl")
    losses = [
        algorithms.actor_loss(pg_loss, kl_loss=kl_loss, kl_coef=c).item() for c in (0.0, 0.001, 0.1, 1.0)
    ]
    assert kl_loss.item() > 0
    assert losses == sorted(losses) and losses[0] < losses[-1]
    assert losses[2] == pytest.approx(0.3 + 0.1 * kl_loss.item())


def test_a_gradient_step_on_the_kl_term_moves_the_policy_towards_the_reference():
    log_prob, ref_log_prob, mask = _kl_setup()
    kl_before = algorithms.compute_kl_loss(log_prob, ref_log_prob, mask)
    total = algorithms.actor_loss(torch.zeros(()), kl_loss=kl_before, kl_coef=1.0)
    total.backward()
    with torch.no_grad():
        stepped = log_prob - 0.1 * log_prob.grad
    kl_after = algorithms.compute_kl_loss(stepped, ref_log_prob, mask)
    assert kl_after.item() < kl_before.item()


def test_entropy_is_subtracted():
    entropy = torch.tensor(2.0)
    # 0.3 - 0.01 * 2 = 0.28
    assert algorithms.actor_loss(
        torch.tensor(0.3), entropy=entropy, entropy_coeff=0.01
    ).item() == pytest.approx(0.28)


def test_actor_loss_refuses_a_negative_kl_coef_and_missing_terms():
    with pytest.raises(ValueError, match="rewards drift"):
        algorithms.actor_loss(torch.tensor(0.0), kl_loss=torch.tensor(1.0), kl_coef=-0.1)
    with pytest.raises(ValueError, match="no kl_loss"):
        algorithms.actor_loss(torch.tensor(0.0), kl_coef=0.1)
    with pytest.raises(ValueError, match="no entropy"):
        algorithms.actor_loss(torch.tensor(0.0), entropy_coeff=0.1)


def test_grpo_step_end_to_end_lowers_the_loss_of_the_better_answer():
    # Two sampled answers of one prompt (same group id); the first scored 1, the second 0. A step on the
    # PPO-clip loss with GRPO advantages must raise the log-prob of the first answer's policy tokens.
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 1]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    advantages, _ = algorithms.compute_advantage("grpo", rewards, mask, index=["q1", "q1"])
    old = torch.full((2, 4), -1.0)
    log_prob = old.clone().requires_grad_(True)
    pg_loss, _, _ = algorithms.compute_policy_loss(old, log_prob, advantages, mask)
    algorithms.actor_loss(pg_loss).backward()
    step = -log_prob.grad  # gradient descent direction
    assert (step[0][mask[0].bool()] > 0).all()
    assert (step[1][mask[1].bool()] < 0).all()
    assert (step[~mask.bool()] == 0).all()
