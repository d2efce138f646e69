"""GenerationEngine on a tiny local model: batched generation returns what one call would."""

from __future__ import annotations

import pytest

from zerosearch.simulation.engine import GenerationEngine, GenerationRequest, SamplingParams


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return GenerationEngine(tiny_model_dir, device="cpu")


def test_generating_in_batches_equals_one_call_in_the_same_order(engine):
    ids = engine.tokenizer("Doc 1: the city", add_special_tokens=False)["input_ids"]
    requests = [
        GenerationRequest(ids[: 1 + i % len(ids)], SamplingParams(max_tokens=4 + i, temperature=0.0))
        for i in range(5)
    ]
    whole = engine.generate(requests)
    batched = engine.generate_in_batches(requests, batch_size=2, desc="test")
    assert [r.token_ids for r in batched] == [r.token_ids for r in whole]


def test_a_batch_size_below_one_is_refused(engine):
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        engine.generate_in_batches([], batch_size=0)
