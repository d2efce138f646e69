"""PPO-clip policy loss, clipped value loss, entropy and KL loss terms, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from verl.algorithms.losses import (
    compute_entropy_loss,
    compute_kl_loss,
    compute_policy_loss,
    compute_value_loss,
    entropy_from_logits,
)
from verl.algorithms.masked_ops import token_and_seq_counts

# One row: four policy tokens around an observation token (position 2), then padding.
MASK = torch.tensor([[1, 1, 0, 1, 1, 0]])
OLD = torch.zeros(1, 6)
# ratios 1.5, 0.5, (obs), 0.5, 1.5, (pad)
NEW = torch.tensor([[math.log(1.5), math.log(0.5), 5.0, math.log(0.5), math.log(1.5), 5.0]])
ADV = torch.tensor([[1.0, -1.0, 100.0, 1.0, -1.0, 100.0]])


def test_policy_loss_clips_on_both_sides():
    pg_loss, clipfrac, ppo_kl = compute_policy_loss(OLD, NEW, ADV, MASK)
    # per token max(-A r, -A clip(r, 0.8, 1.2)):
    #   A=+1, r=1.5: max(-1.5, -1.2) = -1.2   (clipped above)
    #   A=-1, r=0.5: max( 0.5,  0.8) =  0.8   (clipped below)
    #   A=+1, r=0.5: max(-0.5, -0.8) = -0.5   (not clipped: pessimistic side)
    #   A=-1, r=1.5: max( 1.5,  1.2) =  1.5   (not clipped)
    # token-mean: (-1.2 + 0.8 - 0.5 + 1.5) / 4 = 0.15
    assert pg_loss.item() == pytest.approx(0.15, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.5)
    # mean(old - new) = (-ln 1.5 - ln 0.5 - ln 0.5 - ln 1.5) / 4 = (0.693147 - 0.405465) / 2 = 0.143841
    assert ppo_kl.item() == pytest.approx(0.143841, abs=1e-6)


def test_clipped_tokens_get_no_gradient():
    new = NEW.clone().requires_grad_(True)
    pg_loss, _, _ = compute_policy_loss(OLD, new, ADV, MASK)
    pg_loss.backward()
    # d/dlogp of -A r / 4 is -A r / 4 on unclipped tokens: -0.5/4 = -0.125 at t3, 1.5/4 = 0.375 at t4
    assert new.grad[0].tolist() == pytest.approx([0.0, 0.0, 0.0, -0.125, 0.375, 0.0])


def test_asymmetric_clip_range():
    old = torch.zeros(1, 2)
    new = torch.full((1, 2), math.log(1.25))
    adv = torch.tensor([[1.0, 1.0]])
    mask = torch.ones(1, 2)
    # high = 0.28: r = 1.25 is inside, loss -1.25; high = 0.2: clipped to 1.2, loss -1.2
    wide, frac_wide, _ = compute_policy_loss(old, new, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.28)
    narrow, frac_narrow, _ = compute_policy_loss(old, new, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.2)
    assert (wide.item(), frac_wide.item()) == pytest.approx((-1.25, 0.0))
    assert (narrow.item(), frac_narrow.item()) == pytest.approx((-1.2, 1.0))


def test_dual_clip_caps_negative_advantage_losses():
    old = torch.zeros(1, 2)
    new = torch.full((1, 2), math.log(5.0))
    adv = torch.tensor([[-1.0, 1.0]])
    mask = torch.ones(1, 2)
    # A=-1, r=5: max(5, 1.2) = 5, capped at -A * 3 = 3; A=+1, r=5: max(-5, -1.2) = -1.2 (no cap for A > 0)
    loss, _, _ = compute_policy_loss(old, new, adv, mask, clip_ratio_c=3.0)
    assert loss.item() == pytest.approx((3.0 - 1.2) / 2)
    plain, _, _ = compute_policy_loss(old, new, adv, mask)
    assert plain.item() == pytest.approx((5.0 - 1.2) / 2)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        compute_policy_loss(old, new, adv, mask, clip_ratio_c=1.0)


def test_policy_loss_forwards_global_counts_to_aggregation():
    pg_loss, _, _ = compute_policy_loss(OLD, NEW, ADV, MASK, global_token_count=8)
    # sum 0.6 over the global 8 tokens instead of the local 4
    assert pg_loss.item() == pytest.approx(0.075, abs=1e-6)
    assert token_and_seq_counts(MASK) == (4, 1)


def test_value_loss_clipping():
    # policy, observation (junk), policy, policy
    mask = torch.tensor([[1, 0, 1, 1]])
    values = torch.tensor([[0.5, 9.0, 0.5, 0.5]])
    vpreds = torch.tensor([[0.9, -9.0, 0.55, 0.1]])
    returns = torch.tensor([[1.0, 9.0, 0.0, 0.8]])
    vf_loss, vf_clipfrac = compute_value_loss(vpreds, returns, values, mask, cliprange_value=0.2)
    # clipped preds: 0.5 + clip(0.4) = 0.7, 0.55 (inside), 0.5 + clip(-0.4) = 0.3
    # unclipped sq errors: 0.01, 0.3025, 0.49; clipped: 0.09, 0.3025, 0.25
    # 0.5 * max: 0.045, 0.15125, 0.245; mean over 3 tokens = 0.44125 / 3 = 0.147083
    assert vf_loss.item() == pytest.approx(0.147083, abs=1e-6)
    # only the first token's clipped error is strictly larger
    assert vf_clipfrac.item() == pytest.approx(1 / 3)


def test_entropy_from_logits_and_entropy_loss():
    # uniform over 4 classes: ln 4 = 1.386294; one-hot-ish logits (0, -inf...) approximated by a peaked one
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1e9, -1e9], [3.0, 1.0, 0.0, 0.0]]])
    ent = entropy_from_logits(logits)
    # second token: uniform over 2 = ln 2 = 0.693147
    assert ent[0, :2].tolist() == pytest.approx([1.386294, 0.693147], abs=1e-5)
    mask = torch.tensor([[1, 1, 0]])
    # mean over the two policy tokens: (1.386294 + 0.693147) / 2 = 1.039721
    assert compute_entropy_loss(logits, mask).item() == pytest.approx(1.039721, abs=1e-5)
    assert compute_entropy_loss(ent, mask).item() == pytest.approx(1.039721, abs=1e-5)


def test_entropy_loss_rejects_a_wrong_rank():
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        compute_entropy_loss(torch.zeros(3), torch.ones(3))


def test_kl_loss_is_the_aggregated_kl_penalty():
    logp = torch.tensor([[-1.0, 7.0, -2.0]])
    ref = torch.tensor([[-1.5, 0.0, -1.0]])
    mask = torch.tensor([[1, 0, 1]])
    # k3 on the policy tokens: 0.106531 and 0.718282 (see test_kl_penalty); mean 0.412406
    assert compute_kl_loss(logp, ref, mask).item() == pytest.approx(0.412406, abs=1e-6)
    # k1: 0.5 and -1.0, mean -0.25
    assert compute_kl_loss(logp, ref, mask, kind="kl").item() == pytest.approx(-0.25)
