"""HFRollout against transformers itself: greedy vs `generate`, batching, stop conditions, seeds,
log-probs against a full forward pass, and the weight hand-off."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.tiny_fit import sharpen
from verl.workers.rollout import HFRollout, RolloutSamplingParams, get_rollout_class

GREEDY = RolloutSamplingParams(temperature=0, max_tokens=16)


def hf_generate_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens
        )
    return out[0, len(prompt) :].tolist()


def full_forward_logprobs(model, prompt: list[int], generated: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + generated])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, dim=-1)


def test_registered_as_hf():
    assert get_rollout_class("hf") is HFRollout


def test_greedy_equals_hf_generate(rollout, prompts, sharp_model_dir):
    reference = AutoModelForCausalLM.from_pretrained(str(sharp_model_dir)).eval()
    outputs = rollout.generate(prompts, GREEDY)
    for prompt, (out,) in zip(prompts, outputs, strict=True):
        assert out.token_ids == hf_generate_greedy(reference, prompt, 16)
        assert len(set(out.token_ids)) > 3  # the sharpened model really varies, so the check has teeth


def test_greedy_batched_with_mixed_lengths_equals_single(rollout, prompts):
    lengths = {len(p) for p in prompts}
    assert len(lengths) == len(prompts)
    batched = rollout.generate(prompts, GREEDY)
    for prompt, (out,) in zip(prompts, batched, strict=True):
        (alone,) = rollout.generate([prompt], GREEDY)[0]
        assert out.token_ids == alone.token_ids
        assert out.finish_reason == alone.finish_reason == "length"


def test_budget_ends_with_length(rollout, prompts):
    (out,) = rollout.generate(prompts[:1], RolloutSamplingParams(temperature=0, max_tokens=5))[0]
    assert len(out.token_ids) == 5 and out.finish_reason == "length"


def test_stop_string_keeps_the_tokens_that_completed_it(rollout, prompts):
    (free,) = rollout.generate(prompts[:1], GREEDY)[0]
    tok = rollout.tokenizer
    # A stop string that the free run produces across tokens 4..6 (so it spans several tokens).
    stop = tok.decode(free.token_ids[4:7])
    assert stop.strip() and stop not in tok.decode(free.token_ids[:6])
    (out,) = rollout.generate(prompts[:1], RolloutSamplingParams(temperature=0, max_tokens=16, stop=(stop,)))[
        0
    ]
    assert out.finish_reason == "stop"
    assert out.token_ids == free.token_ids[:7]
    assert stop in tok.decode(out.token_ids)


def test_stop_token_id_is_kept(rollout, prompts):
    (free,) = rollout.generate(prompts[:1], GREEDY)[0]
    stop_id = free.token_ids[5]
    first = free.token_ids.index(stop_id)
    params = RolloutSamplingParams(temperature=0, max_tokens=16, stop_token_ids=(stop_id,))
    (out,) = rollout.generate(prompts[:1], params)[0]
    assert out.token_ids == free.token_ids[: first + 1] and out.finish_reason == "stop"


def test_eos_is_kept_with_finish_reason_eos(rollout, prompts, sharp_model_dir):
    (free,) = rollout.generate(prompts[:1], GREEDY)[0]
    model = AutoModelForCausalLM.from_pretrained(str(sharp_model_dir))
    eos = free.token_ids[3]
    model.generation_config.eos_token_id = eos  # make a token the model really emits its EOS
    engine = HFRollout(model, rollout.tokenizer, device="cpu")
    (out,) = engine.generate(prompts[:1], GREEDY)[0]
    assert out.token_ids == free.token_ids[: free.token_ids.index(eos) + 1]
    assert out.finish_reason == "eos"


def test_n_samples_per_prompt_and_greedy_copies_are_identical(rollout, prompts):
    sampled = rollout.generate(
        prompts[:2], RolloutSamplingParams(n=3, temperature=1.0, max_tokens=12, seed=1)
    )
    assert [len(group) for group in sampled] == [3, 3]
    assert len({tuple(o.token_ids) for o in sampled[0]}) == 3
    greedy = rollout.generate(prompts[:1], RolloutSamplingParams(n=2, temperature=0, max_tokens=12))
    assert greedy[0][0].token_ids == greedy[0][1].token_ids


def test_seed_reproducible_and_independent_of_batch_composition(rollout, prompts):
    params = RolloutSamplingParams(n=2, temperature=1.0, top_p=0.9, max_tokens=12, seed=7)
    first = rollout.generate(prompts[:2], params)
    again = rollout.generate(prompts[:2], params)
    other_neighbour = rollout.generate([prompts[0], prompts[3]], params)
    ids = [[o.token_ids for o in group] for group in first]
    assert ids == [[o.token_ids for o in group] for group in again]
    assert ids[0] == [o.token_ids for o in other_neighbour[0]]
    other_seed = rollout.generate(prompts[:1], RolloutSamplingParams(temperature=1.0, max_tokens=12, seed=8))
    assert other_seed[0][0].token_ids != ids[0][0]


def test_prompts_with_their_own_params_draw_the_same_wherever_they_sit(rollout, prompts):
    """Per-prompt params: each prompt's own budget and seed, and its draws do not depend on its position."""
    own = [
        RolloutSamplingParams(temperature=1.0, max_tokens=6 + k, seed=100 + k, logprobs=True)
        for k in range(len(prompts))
    ]
    forward = rollout.generate(prompts, own)
    backward = rollout.generate(prompts[::-1], own[::-1])[::-1]
    assert [g[0].token_ids for g in forward] == [g[0].token_ids for g in backward]
    assert all(len(g[0].token_ids) <= 6 + k for k, g in enumerate(forward))
    assert any(g[0].finish_reason == "length" and len(g[0].token_ids) == 6 + k for k, g in enumerate(forward))
    with pytest.raises(ValueError, match="2 prompts but 1 sampling params"):
        rollout.generate(prompts[:2], own[:1])


class Requests:
    """A RolloutSource handing over `requests` in two waves: the second joins after `after` results."""

    def __init__(self, requests, after: int):
        self.waves = [list(requests[:2]), list(requests[2:])]
        self.after = after
        self.done: list = []

    def take(self, limit, wait):
        if self.waves and (not self.done and len(self.waves) == 2 or len(self.done) >= self.after):
            return self.waves.pop(0)
        return None if not self.waves and wait else []

    def finish(self, request, output):
        self.done.append((request, output))


def test_serve_hands_each_request_back_as_generate_would_sample_it(rollout, prompts):
    from verl.workers.rollout.base import RolloutRequest

    own = [RolloutSamplingParams(temperature=1.0, max_tokens=4 + 4 * k, seed=k) for k in range(len(prompts))]
    requests = [RolloutRequest(p, q) for p, q in zip(prompts, own, strict=True)]
    source = Requests(requests, after=1)
    rollout.serve(source)
    served = {id(r): out.token_ids for r, out in source.done}
    assert len(served) == len(requests)
    # The shortest request came back first, before the second wave had joined.
    assert source.done[0][0] is requests[0]
    expected = rollout.generate(prompts, own)
    assert [served[id(r)] for r in requests] == [g[0].token_ids for g in expected]


def test_serve_raises_after_a_request_it_cannot_run(rollout, prompts):
    from verl.workers.rollout.base import RolloutRequest

    too_long = [1] * rollout.max_model_len
    params = RolloutSamplingParams(max_tokens=4)
    source = Requests([RolloutRequest(prompts[0], params), RolloutRequest(too_long, params)], after=0)
    with pytest.raises(RuntimeError, match="could not be generated"):
        rollout.serve(source)
    assert [r.prompt_ids for r, _ in source.done] == [prompts[0]]


def test_logprobs_equal_a_full_forward_at_temperature_one(rollout, prompts, sharp_model_dir):
    reference = AutoModelForCausalLM.from_pretrained(str(sharp_model_dir)).eval()
    params = RolloutSamplingParams(n=2, temperature=1.0, max_tokens=12, seed=3, logprobs=True)
    for prompt, group in zip(prompts, rollout.generate(prompts, params), strict=True):
        for out in group:
            logp = full_forward_logprobs(reference, prompt, out.token_ids)
            expected = logp.gather(-1, torch.tensor(out.token_ids).unsqueeze(-1)).squeeze(-1)
            assert len(out.logprobs) == len(out.token_ids)
            torch.testing.assert_close(torch.tensor(out.logprobs), expected, atol=1e-5, rtol=0)


def test_logprobs_with_temperature_and_top_p_are_renormalised_over_the_nucleus(
    rollout, prompts, sharp_model_dir
):
    reference = AutoModelForCausalLM.from_pretrained(str(sharp_model_dir)).eval()
    temperature, top_p = 0.7, 0.8
    params = RolloutSamplingParams(temperature=temperature, top_p=top_p, max_tokens=10, seed=5, logprobs=True)
    prompt = prompts[1]
    (out,) = rollout.generate([prompt], params)[0]
    ids = torch.tensor([prompt + out.token_ids])
    with torch.no_grad():
        logits = reference(input_ids=ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    probs = torch.softmax(logits, dim=-1)
    for step, token in enumerate(out.token_ids):
        sorted_probs, _ = probs[step].sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs
        nucleus_mass = sorted_probs[before < top_p].sum()
        assert probs[step, token] >= sorted_probs[before < top_p].min()  # the token is inside the nucleus
        expected = torch.log(probs[step, token] / nucleus_mass)
        assert out.logprobs[step] == pytest.approx(expected.item(), abs=1e-5)


def test_update_weights_equals_a_model_loaded_from_the_new_weights(sharp_model_dir, prompts, tmp_path):
    engine = HFRollout(sharp_model_dir, device="cpu")
    before = engine.generate(prompts, GREEDY)
    new_model = sharpen(AutoModelForCausalLM.from_pretrained(str(sharp_model_dir)), seed=1)
    new_model.save_pretrained(tmp_path)
    engine.tokenizer.save_pretrained(tmp_path)
    engine.update_weights(new_model.state_dict().items())
    after = engine.generate(prompts, GREEDY)
    fresh = HFRollout(tmp_path, device="cpu").generate(prompts, GREEDY)
    assert [g[0].token_ids for g in after] == [g[0].token_ids for g in fresh]
    assert [g[0].token_ids for g in after] != [g[0].token_ids for g in before]
    # Tied embeddings stay tied: the LM head is the updated embedding.
    assert engine.model.lm_head.weight.data_ptr() == engine.model.model.embed_tokens.weight.data_ptr()


def test_update_weights_rejects_an_unknown_key(sharp_model_dir):
    engine = HFRollout(sharp_model_dir, device="cpu")
    with pytest.raises(KeyError, match="model.no_such.weight"):
        engine.update_weights([("model.no_such.weight", torch.zeros(2))])


def test_module_given_to_the_constructor_is_copied(sharp_model_dir, prompts):
    model = AutoModelForCausalLM.from_pretrained(str(sharp_model_dir))
    engine = HFRollout(model, HFRollout(sharp_model_dir, device="cpu").tokenizer, device="cpu")
    before = engine.generate(prompts[:1], GREEDY)[0][0].token_ids
    sharpen(model, seed=2)  # training the original must not leak into the rollout without update_weights
    assert engine.generate(prompts[:1], GREEDY)[0][0].token_ids == before


def test_prompt_filling_the_context_is_rejected(rollout):
    with pytest.raises(ValueError, match="request 0: prompt of 4096 tokens"):
        rollout.generate([[5] * 4096], GREEDY)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_greedy_equals_cpu_and_seeds_reproduce(sharp_model_dir, rollout, prompts):
    engine = HFRollout(sharp_model_dir, device="cuda", dtype="float32")
    assert [g[0].token_ids for g in engine.generate(prompts, GREEDY)] == [
        g[0].token_ids for g in rollout.generate(prompts, GREEDY)
    ]
    params = RolloutSamplingParams(n=2, temperature=1.0, top_p=0.9, max_tokens=12, seed=4, logprobs=True)
    first, again = engine.generate(prompts, params), engine.generate(prompts, params)
    assert [[o.token_ids for o in g] for g in first] == [[o.token_ids for o in g] for g in again]


def test_auto_picks_vllm_on_a_gpu_where_installed_else_transformers(monkeypatch):
    import importlib.util

    from verl.workers.rollout import resolve_rollout_name

    installed = importlib.util.find_spec("vllm") is not None
    assert resolve_rollout_name("auto", "cpu") == "hf"
    assert resolve_rollout_name("auto", "cuda") == ("vllm" if installed else "hf")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "vllm" else None)
    assert resolve_rollout_name("auto", "cuda") == "vllm"
    assert resolve_rollout_name("hf", "cuda") == "hf"  # a named backend is taken as named
