"""GrowingLayer / stack_caches: in-place growth past the spare room, row selection, left trimming, and
stacking two batches right-aligned."""

from __future__ import annotations

import torch
from transformers import AutoConfig

from verl.workers.rollout.kv_cache import (
    SPARE_COLUMNS,
    GrowingCache,
    GrowingLayer,
    growing_cache,
    stack_caches,
)


def states(batch: int, length: int, offset: float) -> torch.Tensor:
    """(batch, 2 heads, length, 3) with entry values that say where they came from."""
    return offset + torch.arange(batch * 2 * length * 3, dtype=torch.float32).view(batch, 2, length, 3)


def test_a_layer_keeps_every_token_written_across_reallocations():
    layer = GrowingLayer()
    first = states(2, 5, 0.0)
    layer.update(first, -first)
    steps = [states(2, 1, 1000.0 * (i + 1)) for i in range(SPARE_COLUMNS + 3)]  # past the spare room
    for step in steps:
        keys, values = layer.update(step, -step)
    expected = torch.cat([first, *steps], dim=-2)
    assert torch.equal(keys, expected) and torch.equal(values, -expected)
    assert layer.get_seq_length() == 5 + len(steps)


def test_selecting_rows_and_trimming_leading_columns():
    layer = GrowingLayer()
    full = states(3, 6, 0.0)
    layer.update(full, full)
    layer.batch_select_indices(torch.tensor([0, 2]))
    layer.trim_left(2)
    assert torch.equal(layer.keys, full[[0, 2], :, 2:])
    step = states(2, 1, 500.0)
    keys, _ = layer.update(step, step)
    assert torch.equal(keys, torch.cat([full[[0, 2], :, 2:], step], dim=-2))


def test_stacked_caches_are_right_aligned_with_zeros_on_the_left():
    top, bottom = GrowingCache(1), GrowingCache(1)
    a, b = states(1, 4, 0.0), states(2, 7, 100.0)
    top.layers[0].update(a, a)
    bottom.layers[0].update(b, b)
    stacked = stack_caches(top, bottom)
    keys = stacked.layers[0].keys
    assert keys.shape == (3, 2, 7, 3) and stacked.get_seq_length() == 7
    assert torch.equal(keys[0, :, 3:], a[0]) and not keys[0, :, :3].any()
    assert torch.equal(keys[1:], b)


def test_only_full_attention_models_get_a_growing_cache(tiny_model_dir):
    config = AutoConfig.from_pretrained(str(tiny_model_dir))
    assert isinstance(growing_cache(config), GrowingCache)
    config.layer_types = ["sliding_attention"] + config.layer_types[1:]
    assert growing_cache(config) is None
