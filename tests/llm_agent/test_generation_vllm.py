"""The generation manager driving the vLLM backend (vLLM's CPU build; skipped where vLLM is absent): under
greedy decoding the whole multi-turn rollout (actions, searches, observations, masks) equals the one the
transformers backend produces from the same weights."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from transformers import AutoModelForCausalLM  # noqa: E402

from llm_agent.generation import LLMGenerationManager  # noqa: E402
from tests.agent_model import CASES, CONFIG, chat_prompt  # noqa: E402
from verl.workers.rollout.base import RolloutSamplingParams  # noqa: E402
from verl.workers.rollout.hf import HFRollout  # noqa: E402
from verl.workers.rollout.vllm import VLLMRollout  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]


def _run(rollout, backend):
    tokenizer = rollout.tokenizer
    manager = LLMGenerationManager(rollout, backend, tokenizer, CONFIG)
    return manager.run(
        [chat_prompt(tokenizer, q) for q, _, _ in CASES],
        [{"question": q, "golden_answers": (a,)} for q, _, a in CASES],
        RolloutSamplingParams(temperature=0, logprobs=True),
    )


def test_multi_turn_rollouts_on_vllm_equal_the_transformers_ones(agent_model_dir, agent_backend):
    hf = HFRollout(agent_model_dir, device="cpu")
    engine = VLLMRollout(
        agent_model_dir, tokenizer=hf.tokenizer, device="cpu", dtype="float32", max_model_len=512
    )
    engine.update_weights(AutoModelForCausalLM.from_pretrained(str(agent_model_dir)).state_dict().items())
    expected, got = _run(hf, agent_backend), _run(engine, agent_backend)
    for want, have in zip(expected.trajectories, got.trajectories, strict=True):
        assert (have.stats.turns, have.stats.searches, have.stats.answered) == (2, 1, True)
        assert have.response_ids == want.response_ids
        assert have.response_mask == want.response_mask
        assert have.response_logprobs == pytest.approx(want.response_logprobs, abs=1e-4)
