"""A tiny model with larger random weights: the untrained tiny model repeats one token under greedy
decoding, which would hide padding, position and cache bugs; this one varies token by token."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def rollout(sharp_model_dir):
    from verl.workers.rollout.hf import HFRollout

    return HFRollout(sharp_model_dir, device="cpu")


@pytest.fixture(scope="session")
def prompts(rollout):
    texts = [
        "Alice Smith was born",
        "Question: Where was Bob Jones born? <think> I should search.",
        "Doc 1:",
        "The user is trying to answer the question whose answer is Paris. Useful Output:",
    ]
    return [rollout.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
