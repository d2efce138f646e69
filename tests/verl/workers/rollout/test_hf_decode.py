"""BatchDecoder.serve, continuous batching: rows that join a running batch decode exactly as they do alone,
finish the step they end, and fail alone."""

from __future__ import annotations

import pytest

from verl.workers.rollout.hf_decode import DecodeParams, DecodeRequest


class StagedSource:
    """Hands `arrivals[k]` over once `k` decode steps have run (all at once when nothing runs), records
    finishes, failures and the rows of every step, and closes once everything is handed over."""

    def __init__(self, arrivals: dict[int, list[DecodeRequest]]):
        self.arrivals = dict(sorted(arrivals.items()))
        self.steps: list[int] = []
        self.finished: list[DecodeRequest] = []
        self.results: dict[int, object] = {}
        self.failures: dict[int, Exception] = {}

    def take(self, room: int, idle: bool):
        if not self.arrivals:
            return None
        due = [k for k in self.arrivals if k <= len(self.steps) or idle]
        taken = [req for k in due[:1] for req in self.arrivals.pop(k)]
        assert len(taken) <= room
        return taken

    def finish(self, request, result):
        self.finished.append(request)
        self.results[id(request)] = result

    def fail(self, request, error):
        self.failures[id(request)] = error

    def step(self, rows: int):
        self.steps.append(rows)


@pytest.fixture()
def decoder(rollout):
    return rollout.decoder


def request(prompt, max_tokens, temperature=0.0, seed=None):
    return DecodeRequest(
        prompt, DecodeParams(max_tokens=max_tokens, temperature=temperature, logprobs=True), seed
    )


def test_rows_joining_a_running_batch_decode_exactly_as_they_do_alone(decoder, prompts):
    # Mixed prompt lengths and budgets, greedy and seeded sampling, joining at steps 0, 3 and 9: long rows
    # end while later ones run, so the cache is padded on joining and trimmed when they leave.
    arrivals = {
        0: [request(prompts[0], 12), request(prompts[3], 4, temperature=1.0, seed=7)],
        3: [request(prompts[1], 20, temperature=0.8, seed=3)],
        9: [request(prompts[2], 6), request(prompts[3], 15)],
    }
    everyone = [req for group in arrivals.values() for req in group]
    source = StagedSource(arrivals)
    decoder.serve(source, max_rows=8)
    assert not source.failures and len(source.finished) == len(everyone)
    assert max(source.steps) == 4  # the rows really shared steps
    for req in everyone:
        (alone,) = decoder.decode([req])
        joined = source.results[id(req)]
        assert joined.token_ids == alone.token_ids and joined.finish_reason == alone.finish_reason
        assert joined.logprobs == pytest.approx(alone.logprobs, abs=1e-5)


def test_a_row_that_joins_later_can_finish_first(decoder, prompts):
    long, short = request(prompts[0], 30), request(prompts[1], 3)
    source = StagedSource({0: [long], 2: [short]})
    decoder.serve(source, max_rows=4)
    assert source.finished == [short, long]
    assert source.steps[:2] == [1, 1] and source.steps[2:5] == [2, 2, 2] and source.steps[5] == 1


def test_the_batch_never_exceeds_max_rows(decoder, prompts):
    first = [request(p, 10) for p in prompts]
    source = StagedSource({0: first[:2], 1: first[2:3]})
    decoder.serve(source, max_rows=2)
    assert max(source.steps) == 2 and len(source.finished) == 3


def test_a_request_that_cannot_run_fails_alone(decoder, prompts):
    vocab = decoder.model.config.vocab_size
    good = request(prompts[0], 5)
    out_of_vocabulary = request([vocab + 5], 5)  # the embedding lookup raises in the shared prefill
    empty = request([], 5)
    source = StagedSource({0: [good, out_of_vocabulary, empty]})
    decoder.serve(source, max_rows=4)
    assert set(source.failures) == {id(out_of_vocabulary), id(empty)}
    assert "empty prompt" in str(source.failures[id(empty)])
    (alone,) = decoder.decode([good])
    assert source.results[id(good)].token_ids == alone.token_ids


def test_prompts_sharing_the_stored_prefix_skip_it_and_decode_as_a_whole_prefill_does(rollout, prompts):
    """reuse_prefix: requests opening with the same 40 tokens, joining a running batch as they arrive: only
    their own tails are prefilled after the first, and every row decodes as the plain decoder decodes it."""
    from verl.workers.rollout.hf_decode import MIN_SHARED_PREFIX, BatchDecoder

    opening = (prompts[1] * 8)[:40]
    assert len(opening) >= MIN_SHARED_PREFIX
    tails = [prompts[k][: 2 + k] for k in range(4)]
    arrivals = {
        0: [request(opening + tails[0], 10), request(opening + tails[1], 8, temperature=1.0, seed=5)],
        2: [request(opening + tails[2], 12, temperature=0.7, seed=9)],
        5: [request(opening + tails[3], 6)],
    }
    everyone = [req for group in arrivals.values() for req in group]
    reusing = BatchDecoder(rollout.model, rollout.tokenizer, rollout.device, reuse_prefix=True)
    prefilled: list[int] = []
    hook = rollout.model.register_forward_pre_hook(
        lambda module, args, kwargs: prefilled.append(kwargs["input_ids"].shape[-1]), with_kwargs=True
    )
    source = StagedSource(arrivals)
    try:
        reusing.serve(source, max_rows=8)
    finally:
        hook.remove()
    assert not source.failures and len(source.finished) == len(everyone)
    # Prefills are the calls of more than one token: the first one whole, the later ones their tails only.
    assert [n for n in prefilled if n > 1] == [40 + len(tails[1]), len(tails[2]), len(tails[3])]
    plain = rollout.decoder
    for req in everyone:
        (alone,) = plain.decode([req])
        got = source.results[id(req)]
        assert got.token_ids == alone.token_ids and got.finish_reason == alone.finish_reason
        assert got.logprobs == pytest.approx(alone.logprobs, abs=1e-5)


def test_the_shared_prefix_is_the_shortest_match_and_leaves_each_prompt_a_token():
    from verl.workers.rollout.kv_cache import PrefixStore

    store = PrefixStore(min_shared=3)
    store.ids = (1, 2, 3, 4, 5, 6)
    assert store.shared([[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 9]]) == 4
    assert store.shared([[1, 2, 3, 4, 5, 6]]) == 5  # a prompt equal to the stored one keeps its last token
    assert store.shared([[1, 2, 3, 4], [1, 2, 8]]) == 0  # 2 shared tokens: under min_shared, none reused
    store.clear()
    assert store.shared([[1, 2, 3, 4]]) == 0
