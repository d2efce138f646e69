"""What only a GPU shows of the vLLM backend: sleep really returns device memory, and the staged wake-up
(weights for the push, then the KV cache for the rollout) restores generation exactly."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from verl.workers.rollout.base import RolloutSamplingParams  # noqa: E402
from verl.workers.rollout.vllm import VLLMRollout  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.vllm,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

GREEDY = RolloutSamplingParams(temperature=0.0, max_tokens=12)


def _free_bytes() -> int:
    torch.cuda.synchronize()
    return torch.cuda.mem_get_info()[0]


def test_sleep_frees_memory_and_the_staged_wake_restores_generation(sharp_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(sharp_model_dir))
    weights = AutoModelForCausalLM.from_pretrained(str(sharp_model_dir)).state_dict()
    engine = VLLMRollout(
        sharp_model_dir, tokenizer=tokenizer, device="cuda", dtype="float32", gpu_memory_utilization=0.2
    )
    assert engine.sleep_enabled
    engine.update_weights(weights.items())
    prompts = [
        tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("Alice Smith was born", "Doc 1:")
    ]
    before = engine.generate(prompts, GREEDY)
    awake = _free_bytes()

    engine.sleep()
    asleep = _free_bytes()
    reserved = 0.2 * torch.cuda.get_device_properties(0).total_memory
    assert asleep - awake > 0.5 * reserved  # most of the engine's share came back

    engine.update_weights(weights.items())  # wakes the weights only, for the push
    weights_only = _free_bytes()
    assert weights_only > awake + 0.3 * reserved  # the KV cache is still released

    engine.wake_up()
    assert [[s.token_ids for s in o] for o in engine.generate(prompts, GREEDY)] == [
        [s.token_ids for s in o] for o in before
    ]
