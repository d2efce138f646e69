"""Statistics over masked entries, and the loss aggregation modes built on them.

Every tensor here is [batch, response_len] with a mask that is 1 on policy tokens and 0 on padding and on
observation tokens that the environment inserted mid-response (so a row's mask can have holes).
Masked-out entries never influence a result, whatever they hold (even inf or nan).

Empty masks, decided once for the whole module:
* sums are 0;
* `masked_mean` over everything raises (a mean of nothing is a bug upstream: an all-padding batch);
  along a dim, empty slices give 0 (a row without policy tokens is legal and is skipped by callers);
* variance and whitening raise when there are too few entries for the requested estimate;
* `agg_loss` returns a zero that is still attached to the graph: under data parallelism every rank must run
  backward even when its micro-batch holds no policy tokens, so raising there would hang the job.
"""

from __future__ import annotations

import torch

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def _check_shapes(x: torch.Tensor, mask: torch.Tensor) -> None:
    if x.shape != mask.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match values shape {tuple(x.shape)}")


def _select(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x where mask is set, exact 0 elsewhere (torch.where, not x * mask, so a nan on padding stays out)."""
    _check_shapes(x, mask)
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of the entries of x where mask is set (over everything, or along `dim`)."""
    selected = _select(x, mask)
    return selected.sum() if dim is None else selected.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of the masked entries. dim=None: over all of them (raises if there are none).
    With `dim`: per slice, and a slice with no masked entries gives 0."""
    count = mask.bool().sum() if dim is None else mask.bool().sum(dim=dim)
    if dim is None and count.item() == 0:
        raise ValueError("masked_mean: the mask selects no entries")
    return masked_sum(x, mask, dim) / count.clamp(min=1).to(x.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of all masked entries; unbiased (Bessel, n - 1) by default, like torch.var.

    Raises when the mask selects fewer than 2 entries (unbiased) or none (population)."""
    count = int(mask.bool().sum().item())
    needed = 2 if unbiased else 1
    if count < needed:
        raise ValueError(
            f"masked_var: needs at least {needed} masked entries (unbiased={unbiased}), got {count}"
        )
    mean = masked_mean(x, mask)
    sq_dev = masked_sum((x - mean) ** 2, mask)
    return sq_dev / (count - 1 if unbiased else count)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise the masked entries to unit (unbiased) variance and, if `shift_mean`, zero mean.

    With shift_mean=False the original mean is added back, so only the scale changes. Masked-out entries
    come back as 0. Needs at least 2 masked entries."""
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _select(whitened, mask)


def token_and_seq_counts(mask: torch.Tensor) -> tuple[int, int]:
    """(policy tokens, rows with at least one policy token): the normalisers `agg_loss` uses.

    A worker that splits a mini-batch into micro-batches computes these on the whole mini-batch (summed over
    data-parallel ranks too) and passes them to every micro-batch's loss, see `agg_loss`."""
    mask = mask.bool()
    return int(mask.sum().item()), int(mask.any(dim=-1).sum().item())


def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    *,
    global_token_count: int | None = None,
    global_seq_count: int | None = None,
    seq_len_normalizer: int | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [B, T] to a scalar over the policy tokens.

    Modes:
    * ``token-mean``: sum over all policy tokens / number of policy tokens (long answers weigh more).
    * ``seq-mean-token-mean``: each row's mean over its policy tokens, then the mean over rows that have at
      least one policy token.
    * ``seq-mean-token-sum-norm``: each row's sum over its policy tokens divided by a constant
      (`seq_len_normalizer`, default T = loss_mat.shape[-1]), then the mean over rows with a policy token.
      Pass the same normaliser to every micro-batch: their T may differ.

    Gradient accumulation: a mean over each micro-batch, averaged, is not the mini-batch mean when micro-batches
    hold different numbers of tokens (or rows). Pass `global_token_count` (token-mean) and `global_seq_count`
    (the seq-mean modes), both from `token_and_seq_counts` on the whole mini-batch: each micro-batch's loss is
    then its own sum divided by the global count, and the micro-batch losses (and their gradients) add up to
    exactly the full-batch loss. Just sum them; do not divide by the number of micro-batches.
    """
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"loss_agg_mode: unknown mode {loss_agg_mode!r}; valid: {', '.join(LOSS_AGG_MODES)}")
    _check_shapes(loss_mat, loss_mask)
    mask = loss_mask.bool()
    if loss_agg_mode == "token-mean":
        total = masked_sum(loss_mat, mask)
        count = _global_count("global_token_count", global_token_count, int(mask.sum().item()))
    else:
        row_tokens = mask.sum(dim=-1)
        row_sums = masked_sum(loss_mat, mask, dim=-1)
        if loss_agg_mode == "seq-mean-token-mean":
            row_losses = row_sums / row_tokens.clamp(min=1).to(loss_mat.dtype)
        else:
            normalizer = loss_mat.shape[-1] if seq_len_normalizer is None else seq_len_normalizer
            if normalizer <= 0:
                raise ValueError(f"seq_len_normalizer must be positive, got {normalizer}")
            row_losses = row_sums / normalizer
        total = row_losses.sum()
        count = _global_count("global_seq_count", global_seq_count, int((row_tokens > 0).sum().item()))
    # An empty micro-batch: `total` is an exact 0 that still depends on loss_mat, so backward runs and
    # gives zero gradients (see the module docstring).
    return total / max(count, 1)


def _global_count(name: str, global_count: int | None, local_count: int) -> int:
    """The normaliser to use: the local count, or the given global one, which cannot be smaller (a
    mini-batch holds at least what each of its micro-batches holds)."""
    if global_count is None:
        return local_count
    if global_count < local_count:
        raise ValueError(f"{name}={global_count} is smaller than this micro-batch's own count {local_count}")
    return global_count
