"""bench_mfu's FLOP count: its matmul part is what torch's own counter counts, and attention grows as T^2."""

from __future__ import annotations

import pytest

from benchmarks.bench_mfu import Shape, build_model, counted_matmul_flops, update_flops

SMALL = Shape("small", hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, timed_mini_batches=1)


def test_the_matmul_flops_counted_are_torchs_for_one_forward_and_backward():
    model = build_model(SMALL)
    ours = update_flops(model, rows=2, prompt_len=10, response_len=6, with_attention=False)
    assert ours == pytest.approx(counted_matmul_flops(model, rows=2, prompt_len=10, response_len=6), rel=1e-6)


def test_attention_is_the_causal_half_of_the_score_and_value_products():
    model = build_model(SMALL)
    attention = update_flops(model, 2, 10, 6) - update_flops(model, 2, 10, 6, with_attention=False)
    layers, rows, tokens, width = 2, 2, 16, 64
    forward_whole_matrix = 2 * 2 * tokens**2 * width  # Q K^T and (scores) V, per layer and row
    assert attention == layers * rows * 3 * forward_whole_matrix / 2  # x3 with the backward; causal half
