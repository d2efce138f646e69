"""The decode loop's KV cache: written in place, rows dropped and added while a batch runs.

transformers' `DynamicLayer` appends every step's keys and values with `torch.cat`, which copies the whole
cache once per token: at 32 rows of a few hundred tokens that copy was a fifth of a CPU decode step. Each
`GrowingLayer` here keeps a buffer with spare room along the sequence axis, writes the new keys into it and
hands the model a view of the filled part, so a step copies only its own token.

Its layout matches the decode loop's left padding: row r's tokens sit at the right end of the filled span,
padding (zeros, masked out by the attention mask) on the left. Three batch operations keep that layout:
`batch_select_indices` drops finished rows, `trim_left` forgets leading columns that are padding in every row (free:
the view moves), and `stack_caches` puts a freshly prefilled batch under a running one, left-padding the
shorter so both end at the same column (continuous batching: requests join a decode in progress).

Only full-attention layers can do this; `growing_cache` returns None for a model with any other layer type
(sliding-window, linear attention), and the caller falls back to transformers' own cache.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

# Spare columns reserved whenever a buffer is (re)allocated: about one agent turn of tokens, so a growing
# batch reallocates once per this many steps at most.
SPARE_COLUMNS = 128


class GrowingLayer(DynamicLayer):
    """One layer's keys and values in a (batch, heads, capacity, head_dim) buffer, filled on [start, end)."""

    def __init__(self):
        super().__init__()
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None
        self.start = self.end = 0

    def lazy_initialization(self, key_states: torch.Tensor, *args, **kwargs) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states)
        new = key_states.shape[-2]
        if self.key_buffer is None or self.end + new > self.key_buffer.shape[-2]:
            self._reallocate(key_states.shape, new)
        self.key_buffer[:, :, self.end : self.end + new] = key_states
        self.value_buffer[:, :, self.end : self.end + new] = value_states
        self.end += new
        self._publish()
        return self.keys, self.values

    def _reallocate(self, shape: torch.Size, incoming: int) -> None:
        """A new buffer holding the filled span at its left edge, with room for `incoming` + spare columns."""
        batch, heads, _, head_dim = shape
        filled = self.end - self.start
        size = (batch, heads, filled + incoming + SPARE_COLUMNS, head_dim)
        key_buffer = torch.zeros(size, dtype=self.dtype, device=self.device)
        value_buffer = torch.zeros_like(key_buffer)
        if filled:
            key_buffer[:, :, :filled] = self.keys
            value_buffer[:, :, :filled] = self.values
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        self.start, self.end = 0, filled

    def _publish(self) -> None:
        self.keys = self.key_buffer[:, :, self.start : self.end]
        self.values = self.value_buffer[:, :, self.start : self.end]

    def get_seq_length(self) -> int:
        return self.end - self.start

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.key_buffer is not None:
            self.key_buffer = self.key_buffer[indices]
            self.value_buffer = self.value_buffer[indices]
            self._publish()

    def trim_left(self, columns: int) -> None:
        if self.key_buffer is not None:
            self.start += columns
            self._publish()


class GrowingCache(DynamicCache):
    """A `DynamicCache` (so models that check for one accept it) made of `GrowingLayer`s."""

    def __init__(self, num_layers: int):
        Cache.__init__(self, layers=[GrowingLayer() for _ in range(num_layers)])

    def trim_left(self, columns: int) -> None:
        for layer in self.layers:
            layer.trim_left(columns)


def growing_cache(config) -> GrowingCache | None:
    """A `GrowingCache` for a model whose decoder layers are all full attention, else None."""
    text_config = config.get_text_config(decoder=True)
    num_layers = text_config.num_hidden_layers
    layer_types = getattr(text_config, "layer_types", None) or ["full_attention"] * num_layers
    if any(kind != "full_attention" for kind in layer_types):
        return None
    return GrowingCache(num_layers)


def stack_caches(top: GrowingCache, bottom: GrowingCache) -> GrowingCache:
    """One cache holding `top`'s rows then `bottom`'s, both right-aligned at the longer one's length."""
    length = max(top.get_seq_length(), bottom.get_seq_length())
    stacked = GrowingCache(len(top.layers))
    for out, a, b in zip(stacked.layers, top.layers, bottom.layers, strict=True):
        batch = a.keys.shape[0] + b.keys.shape[0]
        heads, head_dim = a.keys.shape[1], a.keys.shape[3]
        out.lazy_initialization(a.keys)
        out.key_buffer = a.keys.new_zeros((batch, heads, length + SPARE_COLUMNS, head_dim))
        out.value_buffer = torch.zeros_like(out.key_buffer)
        for rows, part in ((slice(0, a.keys.shape[0]), a), (slice(a.keys.shape[0], batch), b)):
            filled = part.end - part.start
            out.key_buffer[rows, :, length - filled : length] = part.keys
            out.value_buffer[rows, :, length - filled : length] = part.values
        out.start, out.end = 0, length
        out._publish()
    return stacked


class PrefixStore:
    """The keys and values of the last prompt prefilled, so the next prefill can skip the prefix it shares
    with it (the template that starts every simulation request, say).

    Only valid while the model's weights stay as they were: an engine whose weights change must `clear` it.
    """

    def __init__(self, min_shared: int):
        self.min_shared = min_shared
        self.ids: tuple[int, ...] = ()
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer, (1, heads, len(ids), head_dim)

    def clear(self) -> None:
        self.ids, self.layers = (), []

    def shared(self, prompts: list[list[int]]) -> int:
        """How many leading tokens every prompt shares with the stored one (each keeping at least one token
        of its own to prefill); 0 when fewer than `min_shared`."""
        length = len(self.ids)
        for prompt in prompts:
            limit = min(length, len(prompt) - 1)
            common = 0
            while common < limit and prompt[common] == self.ids[common]:
                common += 1
            length = common
        return length if length >= self.min_shared else 0

    def seed(self, cache: GrowingCache, length: int, rows: int) -> None:
        """Fill the empty `cache` with the stored prefix's first `length` columns, once per row."""
        for layer, (keys, values) in zip(cache.layers, self.layers, strict=True):
            layer.update(
                keys[:, :, :length].expand(rows, -1, -1, -1), values[:, :, :length].expand(rows, -1, -1, -1)
            )

    def remember(self, prompt: list[int], cache: GrowingCache, row: int, columns: torch.Tensor) -> None:
        """Store `prompt`'s keys and values: row `row` of `cache` at `columns` (its real, unpadded ones)."""
        self.ids = tuple(prompt)
        self.layers = [
            (layer.keys[row : row + 1, :, columns].clone(), layer.values[row : row + 1, :, columns].clone())
            for layer in cache.layers
        ]
