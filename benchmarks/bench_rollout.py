"""Rollout throughput: the vLLM backend (vLLM's CPU build) vs the transformers backend, same model and prompts.

The toy world's tiny policy size (hidden 128, 2 layers, a 2048-token vocabulary) is built in a temp folder;
both backends get the same weights (vLLM's by a push, as in training) and the same 64 prompts of about 120
tokens, sampled at temperature 1 with a seed, up to 128 new tokens each: the shape of one agent turn.
Generated tokens per second are measured side by side in this run, after one warm-up call each.
No target: the ratio is reported as measured (at this size CPU vLLM's per-step overhead may dominate).
Run it where vLLM is installed: `.venv-vllm/bin/python -m benchmarks bench_rollout`.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

PROMPTS, MAX_TOKENS = 64, 128


def _model(workdir: Path) -> Path:
    from toyworld.tiny import build_tiny_model, train_tokenizer

    texts = [
        f"Doc {i}: Person {i} was born in City {i % 17} and works for Company {i % 11}." for i in range(400)
    ]
    return build_tiny_model(train_tokenizer(texts, workdir / "tokenizer", vocab_size=2048), workdir / "model")


def _tokens_per_s(engine, prompts, params) -> tuple[float, int]:
    engine.generate(prompts[:4], params)  # warm-up (first-call compilation and allocation)
    start = time.perf_counter()
    outputs = engine.generate(prompts, params)
    elapsed = time.perf_counter() - start
    tokens = sum(len(s.token_ids) for samples in outputs for s in samples)
    return tokens / elapsed, tokens


def main() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        print(
            "not run: vLLM is not installed here (make test-vllm-cpu builds .venv-vllm; run it with that python)"
        )
        return True
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl.workers.rollout.base import RolloutSamplingParams
    from verl.workers.rollout.hf import HFRollout
    from verl.workers.rollout.vllm import VLLMRollout

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = _model(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        base = "Question: where was person {i} born? Answer with a search first. " * 6
        prompts = [tokenizer(base.format(i=i), add_special_tokens=False)["input_ids"] for i in range(PROMPTS)]
        params = RolloutSamplingParams(temperature=1.0, max_tokens=MAX_TOKENS, seed=0)
        hf_rate, hf_tokens = _tokens_per_s(HFRollout(model_dir, device="cpu"), prompts, params)
        engine = VLLMRollout(
            model_dir, tokenizer=tokenizer, device="cpu", dtype="float32", max_model_len=1024
        )
        engine.update_weights(AutoModelForCausalLM.from_pretrained(str(model_dir)).state_dict().items())
        vllm_rate, vllm_tokens = _tokens_per_s(engine, prompts, params)
    print(f"prompts: {PROMPTS} x ~{len(prompts[0])} tokens, up to {MAX_TOKENS} new tokens, temperature 1")
    print(f"transformers backend: {hf_rate:8.0f} tokens/s ({hf_tokens} tokens)")
    print(f"vLLM CPU backend:     {vllm_rate:8.0f} tokens/s ({vllm_tokens} tokens)")
    print(f"ratio vLLM / transformers: {vllm_rate / hf_rate:.2f}")
    return True
