"""The hybrid engine on vLLM with two FSDP2 ranks (vLLM's CPU build; skipped where vLLM is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("vllm")

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

SCRIPT = Path(__file__).with_name("vllm_scenarios.py")


@pytest.fixture(scope="module")
def two_ranks(scenario_runner, sharp_model_dir, tmp_path_factory):
    return scenario_runner(
        2, sharp_model_dir, tmp_path_factory.mktemp("vllm-2ranks"), timeout=800, script=SCRIPT
    )


@pytest.mark.parametrize("step", [1, 2])
def test_after_each_train_step_and_push_vllm_generates_what_the_trained_weights_do(two_ranks, step):
    vllm, hf = two_ranks[f"vllm_{step}"], two_ranks[f"hf_{step}"]
    for rank_vllm, rank_hf in zip(vllm, hf, strict=True):
        for (ids, logprobs), (ref_ids, ref_logprobs) in zip(rank_vllm, rank_hf, strict=True):
            assert ids == ref_ids
            assert logprobs == pytest.approx(ref_logprobs, abs=1e-4)
    assert vllm[0] != vllm[1]  # each rank generated its own prompts


def test_the_trainer_process_group_survives_the_engines(two_ranks):
    assert two_ranks["all_reduce_after_close"] == 3.0  # 1 + 2
