"""Advantage estimators against values computed by hand, on responses with observation spans inside them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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

# Row 0: policy, policy, observation, observation, policy (score 1 here), padding.
# Row 1: policy, observation, policy, policy (score 0.5 here), padding, padding.
# Junk sits outside the mask: a reward of 5 and values of 9 / 7 on observation and padding tokens.
MASK = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 0, 1, 1, 0, 0]])
REWARDS = torch.tensor([[0.0, 0.0, 5.0, 0.0, 1.0, 0.0], [0.0, 5.0, 0.0, 0.5, 0.0, 0.0]])
VALUES = torch.tensor([[0.5, 0.6, 9.0, 9.0, 0.8, 9.0], [0.2, 7.0, 0.4, 0.3, 7.0, 7.0]])


def _policy_values(x: torch.Tensor, mask: torch.Tensor = MASK) -> list[float]:
    return x[mask.bool()].tolist()


def _assert_zero_outside(x: torch.Tensor, mask: torch.Tensor = MASK) -> None:
    assert (x[~mask.bool()] == 0).all()


def test_gae_gamma1_lam1_skips_observation_tokens():
    adv, ret = gae_advantage(REWARDS, MASK, VALUES, gamma=1.0, lam=1.0, whiten=False)
    # row 0, policy tokens t = 4, 1, 0 (t = 2, 3 skipped):
    #   t4: delta = 1 + 0 - 0.8 = 0.2                  A4 = 0.2
    #   t1: delta = 0 + V4 - V1 = 0.8 - 0.6 = 0.2      A1 = 0.2 + 0.2 = 0.4
    #   t0: delta = 0.6 - 0.5 = 0.1                    A0 = 0.1 + 0.4 = 0.5
    # row 1, policy tokens t = 3, 2, 0 (t = 1 skipped):
    #   t3: delta = 0.5 - 0.3 = 0.2                    A3 = 0.2
    #   t2: delta = 0.3 - 0.4 = -0.1                   A2 = -0.1 + 0.2 = 0.1
    #   t0: delta = 0.4 - 0.2 = 0.2                    A0 = 0.2 + 0.1 = 0.3
    assert _policy_values(adv) == pytest.approx([0.5, 0.4, 0.2, 0.3, 0.1, 0.2])
    # returns = A + V: with gamma = lam = 1 every policy token's return is the row's score
    assert _policy_values(ret) == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.5])
    _assert_zero_outside(adv)
    _assert_zero_outside(ret)


def test_gae_gamma09_lam08_skips_observation_tokens():
    adv, ret = gae_advantage(REWARDS, MASK, VALUES, gamma=0.9, lam=0.8, whiten=False)
    # gamma * lam = 0.72
    # row 0:
    #   t4: delta = 1 - 0.8 = 0.2                             A4 = 0.2
    #   t1: delta = 0.9 * 0.8 - 0.6 = 0.12                    A1 = 0.12 + 0.72 * 0.2 = 0.264
    #   t0: delta = 0.9 * 0.6 - 0.5 = 0.04                    A0 = 0.04 + 0.72 * 0.264 = 0.23008
    # row 1:
    #   t3: delta = 0.5 - 0.3 = 0.2                           A3 = 0.2
    #   t2: delta = 0.9 * 0.3 - 0.4 = -0.13                   A2 = -0.13 + 0.72 * 0.2 = 0.014
    #   t0: delta = 0.9 * 0.4 - 0.2 = 0.16                    A0 = 0.16 + 0.72 * 0.014 = 0.17008
    assert _policy_values(adv) == pytest.approx([0.23008, 0.264, 0.2, 0.17008, 0.014, 0.2])
    # returns = A + V: 0.73008, 0.864, 1.0 | 0.37008, 0.414, 0.5
    assert _policy_values(ret) == pytest.approx([0.73008, 0.864, 1.0, 0.37008, 0.414, 0.5])


def test_gae_skipping_differs_from_stepping_through_the_observation():
    # Same row 0 with plausible values on the observation tokens (0.7). Stepping through them as if they were
    # policy steps (mask filled in) gives, with gamma = 0.9, lam = 0.8:
    #   t4: 0.2
    #   t3: delta = 0.9 * 0.8 - 0.7 = 0.02     A3 = 0.02 + 0.72 * 0.2 = 0.164
    #   t2: delta = 0.9 * 0.7 - 0.7 = -0.07    A2 = -0.07 + 0.72 * 0.164 = 0.04808
    #   t1: delta = 0.9 * 0.7 - 0.6 = 0.03     A1 = 0.03 + 0.72 * 0.04808 = 0.0646176
    #   t0: delta = 0.9 * 0.6 - 0.5 = 0.04     A0 = 0.04 + 0.72 * 0.0646176 = 0.086524672
    # while skipping gives A0 = 0.23008, A1 = 0.264 (previous test).
    rewards = REWARDS[:1].clone()
    rewards[0, 2] = 0.0
    values = torch.tensor([[0.5, 0.6, 0.7, 0.7, 0.8, 0.0]])
    filled = torch.tensor([[1, 1, 1, 1, 1, 0]])
    naive, _ = gae_advantage(rewards, filled, values, gamma=0.9, lam=0.8, whiten=False)
    skipped, _ = gae_advantage(rewards, MASK[:1], values, gamma=0.9, lam=0.8, whiten=False)
    assert naive[0, :5].tolist() == pytest.approx([0.086524672, 0.0646176, 0.04808, 0.164, 0.2])
    assert skipped[0, [0, 1, 4]].tolist() == pytest.approx([0.23008, 0.264, 0.2])


def test_gae_whitens_advantages_over_the_batch_but_not_returns():
    adv, ret = gae_advantage(REWARDS, MASK, VALUES, gamma=1.0, lam=1.0)
    # raw A on policy tokens 0.5, 0.4, 0.2, 0.3, 0.1, 0.2: mean 1.7 / 6 = 0.283333,
    # squared deviations sum 0.108333, unbiased var 0.0216667, std 0.147196
    # whitened: 0.216667 / 0.147196 = 1.47196, 0.79259, -0.56614, 0.11323, -1.24550, -0.56614
    assert _policy_values(adv) == pytest.approx(
        [1.47196, 0.79259, -0.56614, 0.11323, -1.24550, -0.56614], abs=1e-4
    )
    assert _policy_values(ret) == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.5])
    _assert_zero_outside(adv)


# GRPO: three groups of sizes 3, 2 and 1, interleaved (ids are prompt-instance ids, not positions).
GROUP_IDS = np.array(["a", "b", "a", "c", "b", "a"], dtype=object)
GROUP_MASK = torch.tensor([[1, 1, 0, 0, 1, 0]] * 3 + [[1, 0, 1, 1, 0, 0]] * 3)
SCORES = [1.0, 0.2, 0.0, 0.7, 0.6, 0.5]


def _rewards_on_last_policy_token(scores: list[float]) -> torch.Tensor:
    rewards = torch.zeros(GROUP_MASK.shape)
    last = GROUP_MASK.shape[1] - 1 - GROUP_MASK.flip(-1).argmax(-1)
    rewards[torch.arange(len(scores)), last] = torch.tensor(scores)
    return rewards


def _with_junk_outside_the_mask(rewards: torch.Tensor) -> torch.Tensor:
    return rewards + torch.where(GROUP_MASK.bool(), 0.0, 3.0)


def test_grpo_hand_values_with_groups_of_different_sizes():
    rewards = _rewards_on_last_policy_token(SCORES)
    adv, ret = grpo_advantage(rewards, GROUP_MASK, GROUP_IDS, epsilon=1e-6)
    # group a (rows 0, 2, 5): scores 1, 0, 0.5; mean 0.5; unbiased std sqrt((0.25+0.25+0)/2) = 0.5
    #   -> 1, -1, 0
    # group b (rows 1, 4): scores 0.2, 0.6; mean 0.4; unbiased std sqrt((0.04+0.04)/1) = 0.282843
    #   -> -0.707107, 0.707107
    # group c (row 3): one member -> 0
    expected = [1.0, -0.707107, -1.0, 0.0, 0.707107, 0.0]
    for row, value in enumerate(expected):
        assert adv[row][GROUP_MASK[row].bool()].tolist() == pytest.approx([value] * 3, abs=1e-5)
    _assert_zero_outside(adv, GROUP_MASK)
    assert torch.equal(adv, ret)


def test_grpo_without_std_division():
    rewards = _rewards_on_last_policy_token(SCORES)
    adv, _ = grpo_advantage(rewards, GROUP_MASK, GROUP_IDS, norm_adv_by_std=False)
    # R - mean(group): a: 0.5, -0.5, 0; b: -0.2, 0.2; c: 0
    assert adv[:, 0].tolist() == pytest.approx([0.5, -0.2, -0.5, 0.0, 0.2, 0.0], abs=1e-6)


def test_grpo_ignores_rewards_on_observation_tokens():
    clean = _rewards_on_last_policy_token(SCORES)
    adv, _ = grpo_advantage(_with_junk_outside_the_mask(clean), GROUP_MASK, GROUP_IDS)
    clean_adv, _ = grpo_advantage(clean, GROUP_MASK, GROUP_IDS)
    assert torch.equal(adv, clean_adv)


def test_grpo_accepts_tuple_group_ids_and_rejects_a_wrong_count():
    ids = [("nq", 7), ("hotpot", 7), ("nq", 7)]  # same dataset index 7 in two sources: different groups
    rewards = torch.tensor([[1.0], [0.3], [0.0]])
    adv, _ = grpo_advantage(rewards, torch.ones(3, 1), ids, norm_adv_by_std=False)
    assert adv[:, 0].tolist() == pytest.approx([0.5, 0.0, -0.5])
    with pytest.raises(ValueError, match="2 group ids for 3 rows"):
        grpo_advantage(rewards, torch.ones(3, 1), ids[:2])


def test_reinforce_broadcasts_the_score_without_baseline():
    adv, ret = reinforce_advantage(REWARDS, MASK)
    # row 0 score 1 (the junk 5 on an observation token is ignored), row 1 score 0.5
    assert adv.tolist() == [[1.0, 1.0, 0.0, 0.0, 1.0, 0.0], [0.5, 0.0, 0.5, 0.5, 0.0, 0.0]]
    assert torch.equal(adv, ret)


# Reinforce++: rewards already hold -beta * kl on each policy token and the score on the last one.
PP_MASK = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0]])
PP_REWARDS = torch.tensor([[-0.1, -0.2, 3.0, 3.0, 0.9, 0.0], [-0.05, 3.0, 0.45, 0.0, 0.0, 0.0]])


def test_reinforce_plus_plus_returns_skip_observations():
    _, ret = reinforce_plus_plus_advantage(PP_REWARDS, PP_MASK, gamma=0.5)
    # row 0: G4 = 0.9; G1 = -0.2 + 0.5 * 0.9 = 0.25; G0 = -0.1 + 0.5 * 0.25 = 0.025
    # row 1: G2 = 0.45; G0 = -0.05 + 0.5 * 0.45 = 0.175   (junk 3.0 on observation tokens ignored)
    assert _policy_values(ret, PP_MASK) == pytest.approx([0.025, 0.25, 0.9, 0.175, 0.45])
    _assert_zero_outside(ret, PP_MASK)


def test_reinforce_plus_plus_whitens_over_the_whole_batch():
    adv, ret = reinforce_plus_plus_advantage(PP_REWARDS, PP_MASK, gamma=1.0)
    # G: row 0: 0.9, -0.2 + 0.9 = 0.7, -0.1 + 0.7 = 0.6; row 1: 0.45, -0.05 + 0.45 = 0.4
    # batch of 5 policy tokens 0.6, 0.7, 0.9, 0.4, 0.45: mean 0.61; squared deviations
    # 0.0001 + 0.0081 + 0.0841 + 0.0441 + 0.0256 = 0.162; unbiased var 0.0405; std 0.201246
    # whitened: -0.049690, 0.447214, 1.441028, -1.043498, -0.795050
    assert _policy_values(ret, PP_MASK) == pytest.approx([0.6, 0.7, 0.9, 0.4, 0.45])
    assert _policy_values(adv, PP_MASK) == pytest.approx(
        [-0.049690, 0.447214, 1.441028, -1.043498, -0.795050], abs=1e-5
    )
    _assert_zero_outside(adv, PP_MASK)


def test_registry_holds_every_estimator_and_names_them_on_a_miss():
    assert {"grpo", "gae", "reinforce", "reinforce_plus_plus"} <= set(ADV_ESTIMATORS)
    assert get_adv_estimator("gae") is gae_advantage
    with pytest.raises(ValueError, match="known: .*gae.*grpo.*reinforce"):
        get_adv_estimator("ppo")


def test_register_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register_adv_estimator("grpo")(reinforce_advantage)


def test_compute_advantage_passes_only_the_options_an_estimator_takes():
    options = dict(index=GROUP_IDS, values=None, gamma=0.9, lam=0.8, norm_adv_by_std=False)
    rewards = _rewards_on_last_policy_token(SCORES)
    via_registry, _ = compute_advantage("grpo", rewards, GROUP_MASK, **options)
    direct, _ = grpo_advantage(rewards, GROUP_MASK, GROUP_IDS, norm_adv_by_std=False)
    assert torch.equal(via_registry, direct)


def test_compute_advantage_names_a_missing_required_option():
    with pytest.raises(ValueError, match="'gae' needs `values`"):
        compute_advantage("gae", REWARDS, MASK, values=None, gamma=1.0)
