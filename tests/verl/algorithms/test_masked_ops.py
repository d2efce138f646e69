"""Masked statistics and loss aggregation, checked against numbers worked out by hand."""

from __future__ import annotations

import pytest
import torch

from verl.algorithms.masked_ops import (
    agg_loss,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    token_and_seq_counts,
)

# Row 0 has an observation span (positions 2-3) in the middle and one padding token; row 1 has one policy
# token; row 2 has none. Masked-out positions hold junk (99, inf, nan) that must never leak into a result.
NAN, INF = float("nan"), float("inf")
LOSS = torch.tensor(
    [
        [1.0, 2.0, 99.0, INF, 3.0, NAN],
        [4.0, 99.0, 99.0, 99.0, 99.0, 99.0],
        [NAN, 7.0, 7.0, 7.0, 7.0, 7.0],
    ]
)
MASK = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])


def test_masked_sum_and_mean_ignore_junk_outside_the_mask():
    assert masked_sum(LOSS, MASK).item() == pytest.approx(10.0)  # 1 + 2 + 3 + 4
    assert masked_mean(LOSS, MASK).item() == pytest.approx(2.5)  # 10 / 4 tokens


def test_masked_mean_along_dim_gives_zero_for_an_empty_row():
    # row 0: (1 + 2 + 3) / 3 = 2; row 1: 4; row 2: no tokens -> 0
    assert masked_mean(LOSS, MASK, dim=-1).tolist() == pytest.approx([2.0, 4.0, 0.0])


def test_masked_mean_of_an_empty_mask_raises():
    with pytest.raises(ValueError, match="selects no entries"):
        masked_mean(LOSS, torch.zeros_like(MASK))


def test_mask_of_another_shape_is_rejected():
    with pytest.raises(ValueError, match="does not match"):
        masked_sum(LOSS, MASK[:, :5])


def test_masked_var_unbiased_and_population():
    # entries 1, 2, 3, 4: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert masked_var(LOSS, MASK).item() == pytest.approx(5 / 3)
    assert masked_var(LOSS, MASK, unbiased=False).item() == pytest.approx(5 / 4)


def test_masked_var_needs_two_entries_when_unbiased():
    one = torch.tensor([[1, 0, 0, 0, 0, 0], [0] * 6, [0] * 6])
    assert masked_var(LOSS, one, unbiased=False).item() == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(LOSS, one)


def test_masked_whiten_hand_values():
    # entries 1, 2, 3, 4: mean 2.5, unbiased std sqrt(5/3) = 1.290994
    # whitened: -1.5/1.290994 = -1.161895, -0.387298, 0.387298, 1.161895
    out = masked_whiten(LOSS, MASK)
    assert out[MASK.bool()].tolist() == pytest.approx([-1.161895, -0.387298, 0.387298, 1.161895], abs=1e-5)
    assert (out[~MASK.bool()] == 0).all()


def test_masked_whiten_without_mean_shift_keeps_the_mean():
    # same scaling, then + 2.5: 1.338105, 2.112702, 2.887298, 3.661895
    out = masked_whiten(LOSS, MASK, shift_mean=False)
    assert out[MASK.bool()].tolist() == pytest.approx([1.338105, 2.112702, 2.887298, 3.661895], abs=1e-5)


def test_token_and_seq_counts():
    assert token_and_seq_counts(MASK) == (4, 2)


def test_agg_token_mean():
    assert agg_loss(LOSS, MASK, "token-mean").item() == pytest.approx(2.5)  # (1+2+3+4) / 4


def test_agg_seq_mean_token_mean_skips_rows_without_tokens():
    # row means 2 and 4; row 2 has no tokens and does not count: (2 + 4) / 2 = 3
    assert agg_loss(LOSS, MASK, "seq-mean-token-mean").item() == pytest.approx(3.0)


def test_agg_seq_mean_token_sum_norm_default_and_given_normalizer():
    # row sums 6 and 4, divided by T = 6: 1 and 0.666667, mean 0.833333
    assert agg_loss(LOSS, MASK, "seq-mean-token-sum-norm").item() == pytest.approx(5 / 6)
    # divided by 2 instead: 3 and 2, mean 2.5
    assert agg_loss(LOSS, MASK, "seq-mean-token-sum-norm", seq_len_normalizer=2).item() == pytest.approx(2.5)


def test_agg_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="token-mean, seq-mean-token-mean, seq-mean-token-sum-norm"):
        agg_loss(LOSS, MASK, "mean")


def test_agg_of_an_empty_mask_is_a_zero_that_still_backpropagates():
    loss_mat = torch.ones(2, 3, requires_grad=True)
    out = agg_loss(loss_mat, torch.zeros(2, 3), "token-mean")
    out.backward()
    assert out.item() == 0.0
    assert torch.equal(loss_mat.grad, torch.zeros(2, 3))


def test_agg_rejects_a_global_count_smaller_than_the_local_one():
    with pytest.raises(ValueError, match="global_token_count=3"):
        agg_loss(LOSS, MASK, "token-mean", global_token_count=3)


def _uneven_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """7 rows with very different numbers of policy tokens, holes in the middle, and one empty row."""
    gen = torch.Generator().manual_seed(0)
    loss_mat = torch.randn(7, 9, generator=gen, dtype=torch.float64)
    mask = (torch.rand(7, 9, generator=gen) < 0.6).long()
    mask[0] = torch.tensor([1, 1, 0, 0, 1, 0, 0, 0, 0])
    mask[3] = 0
    mask[5] = 1
    return loss_mat, mask


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_with_global_counts_sum_to_the_full_batch_loss_and_gradient(mode):
    loss_mat, mask = _uneven_batch()
    tokens, seqs = token_and_seq_counts(mask)
    kwargs = dict(global_token_count=tokens, global_seq_count=seqs, seq_len_normalizer=9)

    full_leaf = loss_mat.clone().requires_grad_(True)
    full = agg_loss(full_leaf, mask, mode, seq_len_normalizer=9)
    full.backward()

    micro_leaf = loss_mat.clone().requires_grad_(True)
    # uneven split: 2, 4 and 1 rows
    parts = [agg_loss(micro_leaf[a:b], mask[a:b], mode, **kwargs) for a, b in [(0, 2), (2, 6), (6, 7)]]
    accumulated = sum(parts)
    accumulated.backward()

    assert accumulated.item() == pytest.approx(full.item(), rel=1e-12)
    assert torch.allclose(micro_leaf.grad, full_leaf.grad, rtol=1e-12, atol=0)


def test_micro_batch_means_without_global_counts_differ_from_the_full_batch():
    # why the option exists: averaging per-micro-batch token means weights tokens of small micro-batches more
    loss_mat, mask = _uneven_batch()
    full = agg_loss(loss_mat, mask, "token-mean")
    parts = [agg_loss(loss_mat[a:b], mask[a:b], "token-mean") for a, b in [(0, 2), (2, 6), (6, 7)]]
    assert abs(sum(parts).item() / 3 - full.item()) > 1e-3
