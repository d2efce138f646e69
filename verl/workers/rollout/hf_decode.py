"""The project's one batched decode loop on a transformers causal LM, with per-row sampling parameters.

Both the transformers rollout backend (`HFRollout`, through `BatchDecoder.decode`: one batch of
independent requests) and the built-in simulation server (through `BatchDecoder.serve`: continuous
batching, requests join the running batch at its next step and leave it the step they end) generate here:

- prompts are left-padded into one tensor; the attention mask hides the padding and the position ids count
  only real tokens, so a row's logits do not depend on how long its neighbours are;
- the KV cache is reused across steps, so each step feeds one token per row, and written in place
  (kv_cache.py), so a step does not copy the cache;
- every row has its own temperature, top-p, token budget, stop strings, stop token ids and random
  generator, so requests with different settings share a batch and a seeded row samples the same tokens
  whatever else is batched with it;
- rows that finish are dropped from the batch and from the cache, so the others do not pay for them.

`model.generate` cannot do the per-row parts (one generation config per call), hence the hand-written loop.

Token-faithful output: `DecodeResult.token_ids` are exactly the sampled ids, including the EOS or stop token
id that ended the row and the tokens that completed a stop string. Text is only used to *detect* stop
strings; trimming text at a stop string is the caller's business (the OpenAI server does it, the rollout
does not).
"""

from __future__ import annotations

import inspect
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

log = logging.getLogger(__name__)

# The fewest leading tokens worth taking from the stored prefix instead of prefilling them (`reuse_prefix`).
MIN_SHARED_PREFIX = 32

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" picks CUDA when present; asking for CUDA on a machine without it is an error, not a fallback."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available on this machine")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """A torch dtype, or "auto" (the checkpoint's own dtype)."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


@dataclass(frozen=True)
class DecodeParams:
    """How one row is decoded.

    temperature 0 means greedy (argmax). `stop` strings end the row once the decoded text contains one;
    `stop_token_ids` end it on those ids; EOS ends it unless `ignore_eos`. `skip_special_tokens` says how
    text is decoded for the stop-string check: the rollout keeps special tokens (the toy tokenizer makes the
    action tags special tokens, and `</search>` must still match), the OpenAI server follows its request.
    `logprobs` asks for the log-probability of every sampled token (see `BatchDecoder` for the definition).
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    skip_special_tokens: bool = False
    logprobs: bool = False

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")


@dataclass
class DecodeRequest:
    """One row: prompt ids, how to decode, the seed of its own generator (None: a fresh random one), and
    `cancelled`, polled after every token: when it returns True the row stops at once with finish_reason
    "abort" (a server's client that went away)."""

    prompt_ids: Sequence[int]
    params: DecodeParams = field(default_factory=DecodeParams)
    seed: int | None = None
    cancelled: Callable[[], bool] | None = None


@dataclass
class DecodeResult:
    """What one row produced.

    finish_reason: "eos" (an EOS id, kept in `token_ids`), "stop" (a stop string, named in `stop`, or a stop
    token id, kept), "length" (the token budget ran out), or "abort" (the request was cancelled).
    """

    token_ids: list[int]
    finish_reason: str
    stop: str | None = None
    logprobs: list[float] | None = None


@dataclass
class _Row:
    """Decode state of one row while it is active."""

    request: DecodeRequest
    generator: torch.Generator
    budget: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    # The last ids that produce text under the row's skip_special_tokens setting (the stop check's window).
    visible: list[int] = field(default_factory=list)
    result: DecodeResult | None = None


@dataclass
class _Batch:
    """Rows decoding together: their KV cache, attention mask (0 on left padding), each row's next position,
    and the logits each row's next token is sampled from. The mask is as wide as the cache is long."""

    rows: list[_Row]
    cache: Any
    mask: torch.Tensor
    next_pos: torch.Tensor
    logits: torch.Tensor


def _pad_left(mask: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(mask, (width - mask.shape[-1], 0))


class RequestSource(Protocol):
    """Where `BatchDecoder.serve` gets its requests and hands back its results."""

    def take(self, room: int, idle: bool) -> list[DecodeRequest] | None:
        """Up to `room` waiting requests; `idle` (nothing is decoding): block until one comes. None: closed,
        take no more (the rows in flight still finish)."""

    def finish(self, request: DecodeRequest, result: DecodeResult) -> None:
        """`request` has ended (any finish reason)."""

    def fail(self, request: DecodeRequest, error: Exception) -> None:
        """`request` could not be run."""

    def step(self, rows: int) -> None:
        """A decode step of `rows` rows is about to run (for statistics)."""


class BatchDecoder:
    """Decodes batches of `DecodeRequest`s with `model` (a transformers causal LM) and its `tokenizer`.

    Log-probabilities ("processed", as vLLM's `logprobs_mode="processed_logprobs"`): for a sampled row, the
    log-probability of the sampled token under the distribution it was drawn from, i.e. softmax(logits / T)
    restricted to the top-p nucleus and renormalised; with T = 1 and top_p = 1 this is the model's own
    log_softmax. For a greedy row (T = 0) it is the model's log_softmax of the chosen token (T taken as 1,
    no nucleus), because the point mass of argmax would always give 0.

    Stop strings are checked on the decoded *tail* of a row: the last `len(stop in UTF-8 bytes) + 1` visible
    tokens. Every visible token decodes to at least one byte, so a stop string completed by the newest token
    lies inside that window, with one whole token before it so that tokenizers which drop a leading space on
    the first decoded token cannot hide it. This costs O(stop length) per step instead of re-decoding the row.

    `reuse_prefix` (models whose cache can take in rows only): a prefill skips the leading tokens its prompts
    share with the previous prefill's first prompt (at least `MIN_SHARED_PREFIX` of them), starting from that
    prompt's stored keys and values: a server whose requests all open with one template computes it once.
    Only for a model whose weights never change while the decoder lives (the simulation server's).

    Not thread-safe; callers serialise calls (the server has one batching worker, the rollout one caller).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device, reuse_prefix: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.pad_id = self._pad_id()
        self.eos_ids = self._eos_ids()
        self.max_model_len = self._max_model_len()
        self.special_ids = frozenset(int(i) for i in tokenizer.all_special_ids)
        # transformers 5.x renamed the KV-cache argument (`past_key_values` warns, and goes in 5.40).
        params = inspect.signature(model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"
        from verl.workers.rollout.kv_cache import PrefixStore, growing_cache

        # Rows can join a running batch only when its cache can take them in (kv_cache.py).
        self.can_join = growing_cache(model.config) is not None
        self.prefix = PrefixStore(MIN_SHARED_PREFIX) if reuse_prefix and self.can_join else None

    def _pad_id(self) -> int:
        if self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        # Any id works for padding: padded positions are masked out and never read back.
        return int(self.tokenizer.eos_token_id or 0)

    def _eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        gen_config = getattr(self.model, "generation_config", None)
        gen_eos = getattr(gen_config, "eos_token_id", None)
        if gen_eos is not None:
            ids.update([gen_eos] if isinstance(gen_eos, int) else gen_eos)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        if not ids:
            raise ValueError("the model has no EOS token id (generation_config and tokenizer both lack one)")
        return frozenset(ids)

    def _max_model_len(self) -> int:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is None:
            raise ValueError("the model config has no max_position_embeddings; cannot bound prompt lengths")
        return int(limit)

    def decode_text(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        """Text of `ids` exactly as the stop check sees it (no tokenization-space clean-up)."""
        return self.tokenizer.decode(
            list(ids), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False
        )

    # ----------------------------------------------------------------------------------------------------
    def decode(self, requests: Sequence[DecodeRequest]) -> list[DecodeResult]:
        """Decode all `requests` together; results come back in the same order."""
        if not requests:
            return []
        rows = [self._row(req, f"request {i}") for i, req in enumerate(requests)]
        with torch.inference_mode():
            batch = self._prefill(rows)
            while batch.rows:
                self._step(batch)
        return [row.result for row in rows]  # type: ignore[misc]

    def serve(self, source: RequestSource, max_rows: int) -> None:
        """Continuous batching: decode the requests `source` hands over, up to `max_rows` at a time, until it
        closes and every row has finished.

        Whenever the running batch has room, the requests waiting at `source` are prefilled and join it
        before its next step (their cache and mask left-padded to the batch's length: see kv_cache.py), and
        each row is handed to `source.finish` the step it ends. A request this loop cannot run fails alone
        (`source.fail`): one that is invalid, or whose prefill fails when retried by itself; a failing decode
        step fails the rows in it. With a model whose cache cannot take in rows (not all layers are full
        attention) requests are taken only while nothing runs, a batch at a time.
        """
        batch: _Batch | None = None
        closing = False
        with torch.inference_mode():
            while True:
                active = len(batch.rows) if batch is not None else 0
                if not closing and active < max_rows and (active == 0 or self.can_join):
                    taken = source.take(max_rows - active, active == 0)
                    if taken is None:
                        closing = True
                    elif taken:
                        batch = self._admit(taken, batch, source)
                if batch is None:
                    if closing:
                        return
                    continue
                source.step(len(batch.rows))
                try:
                    finished = self._step(batch)
                except Exception as err:  # the rows of a failed step fail; the loop goes on
                    for row in batch.rows:
                        source.fail(row.request, err)
                    batch = None
                    continue
                for row in finished:
                    source.finish(row.request, row.result)
                if not batch.rows:
                    batch = None

    def _row(self, req: DecodeRequest, name: str) -> _Row:
        if not req.prompt_ids:
            raise ValueError(f"{name}: empty prompt")
        room = self.max_model_len - len(req.prompt_ids)
        if room < 1:
            raise ValueError(
                f"{name}: prompt of {len(req.prompt_ids)} tokens leaves no room to generate within "
                f"the model's max_position_embeddings of {self.max_model_len}"
            )
        return _Row(req, self._generator(req.seed), min(req.params.max_tokens, room))

    def _admit(
        self, requests: Sequence[DecodeRequest], batch: _Batch | None, source: RequestSource
    ) -> _Batch | None:
        """Prefill `requests` and add them to `batch`; a request that fails is failed alone at `source`."""
        rows = []
        for req in requests:
            try:
                rows.append(self._row(req, "request"))
            except ValueError as err:
                source.fail(req, err)
        try:
            prefilled = [self._prefill(rows)] if rows else []
        except Exception as err:
            log.warning("prefill of %d request(s) failed (%s); prefilling them one at a time", len(rows), err)
            prefilled = []
            for row in rows:
                try:
                    prefilled.append(self._prefill([row]))
                except Exception as alone:
                    source.fail(row.request, alone)
        for new in prefilled:
            if batch is None:
                batch = new
            elif self.can_join:
                batch = self._join(batch, new)
            else:  # cannot share a cache: run it out now (only after a failed prefill, with such models)
                while new.rows:
                    for row in self._step(new):
                        source.finish(row.request, row.result)
        return batch

    def _generator(self, seed: int | None) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else secrets.randbits(63))
        return gen

    def _new_cache(self):
        from transformers import DynamicCache

        from verl.workers.rollout.kv_cache import growing_cache

        return growing_cache(self.model.config) or DynamicCache(config=self.model.config)

    def _prefill(self, rows: list[_Row]) -> _Batch:
        """Run the prompts of `rows` through the model, left-padded into one batch (after the prefix they share
        with the stored prompt, when one is reused: that part is identical in every row, so unpadded)."""
        prompts = [list(r.request.prompt_ids) for r in rows]
        cache = self._new_cache()
        shared = self.prefix.shared(prompts) if self.prefix is not None else 0
        if shared:
            self.prefix.seed(cache, shared, len(rows))
        longest = max(len(p) - shared for p in prompts)
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        fresh = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, longest - len(prompt) + shared :] = torch.tensor(prompt[shared:], dtype=torch.long)
            fresh[i, longest - len(prompt) + shared :] = 1
        ids, fresh = ids.to(self.device), fresh.to(self.device)
        mask = torch.cat([fresh.new_ones((len(rows), shared)), fresh], dim=-1)
        # Positions count real tokens only, so a left-padded row sees the positions it would see alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_kwarg: cache},
        )
        if self.prefix is not None:
            self.prefix.remember(prompts[0], cache, 0, mask[0].nonzero().squeeze(-1))
        return _Batch(list(rows), cache, mask, mask.sum(-1, keepdim=True), out.logits[:, -1, :].float())

    def _join(self, batch: _Batch, new: _Batch) -> _Batch:
        """One batch of `batch`'s rows then `new`'s, aligned on the right (kv_cache.stack_caches)."""
        from verl.workers.rollout.kv_cache import stack_caches

        cache = stack_caches(batch.cache, new.cache)
        width = cache.get_seq_length()
        mask = torch.cat([_pad_left(batch.mask, width), _pad_left(new.mask, width)])
        return _Batch(
            batch.rows + new.rows,
            cache,
            mask,
            torch.cat([batch.next_pos, new.next_pos]),
            torch.cat([batch.logits, new.logits]),
        )

    def _step(self, batch: _Batch) -> list[_Row]:
        """Sample one token for every row of `batch` from its pending logits; rows that finish leave the batch
        (and are returned), the others are run one position further."""
        tokens, logprobs = self._sample(batch.logits, batch.rows)
        still, finished = [], []
        for slot, (row, tok) in enumerate(zip(batch.rows, tokens.tolist(), strict=True)):
            if logprobs is not None and row.request.params.logprobs:
                row.logprobs.append(float(logprobs[slot]))
            if self._append(row, tok):
                finished.append(row)
            else:
                still.append(slot)
        if finished:
            batch.rows = [batch.rows[s] for s in still]
            if not still:
                return finished
            # Drop finished rows from every per-row tensor and from the cache.
            keep = torch.tensor(still, device=self.device)
            batch.cache.batch_select_indices(keep)
            batch.mask, batch.next_pos, tokens = batch.mask[keep], batch.next_pos[keep], tokens[keep]
            self._trim(batch)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(still), 1))], dim=-1)
        out = self.model(
            input_ids=tokens.unsqueeze(-1),
            attention_mask=batch.mask,
            position_ids=batch.next_pos,
            use_cache=True,
            **{self.cache_kwarg: batch.cache},
        )
        batch.next_pos = batch.next_pos + 1
        batch.logits = out.logits[:, -1, :].float()
        return finished

    def _trim(self, batch: _Batch) -> None:
        """Forget the leading columns that are padding in every row (left when longer rows finished)."""
        if self.can_join:
            lead = int(batch.mask.argmax(dim=-1).min())  # each row's first real column
            if lead:
                batch.cache.trim_left(lead)
                batch.mask = batch.mask[:, lead:]

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One token per row (argmax for greedy rows, temperature + top-p otherwise) and, when any row asks
        for them, the processed log-probs of the chosen tokens.

        Sampling is inverse-CDF with one uniform draw from the row's own generator, so a row's draw depends
        only on its seed and its own logits, never on the other rows of the batch.
        """
        choice = logits.argmax(dim=-1)
        want_logprobs = any(r.request.params.logprobs for r in rows)
        # Greedy rows report the model's own log_softmax (see the class doc).
        logprobs = (
            torch.log_softmax(logits, dim=-1).gather(-1, choice.unsqueeze(-1)).squeeze(-1)
            if (want_logprobs)
            else None
        )
        sampled = [i for i, r in enumerate(rows) if r.request.params.temperature > 0]
        if not sampled:
            return choice, logprobs
        idx = torch.tensor(sampled, device=logits.device)
        temps = torch.tensor([rows[i].request.params.temperature for i in sampled], device=logits.device)
        top_ps = [rows[i].request.params.top_p for i in sampled]
        scaled = logits[idx] / temps.unsqueeze(-1)
        probs = torch.softmax(scaled, dim=-1)
        if all(p >= 1.0 for p in top_ps):
            # No nucleus cut: the CDF in vocabulary order samples the same distribution, without a sort.
            order = None
        else:
            probs, order = probs.sort(dim=-1, descending=True)
            cumulative = probs.cumsum(dim=-1)
            # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
            cut = torch.tensor(top_ps, device=logits.device).unsqueeze(-1)
            probs = probs.masked_fill(cumulative - probs >= cut, 0.0)
        cdf = probs.cumsum(dim=-1)
        kept_mass = cdf[:, -1]
        draws = torch.cat([torch.rand(1, generator=rows[i].generator, device=logits.device) for i in sampled])
        # The first slot whose CDF exceeds the draw: zero-mass (filtered) slots never qualify, and the draw is
        # kept strictly below the total so rounding cannot run past the last kept token.
        target = torch.minimum(draws * kept_mass, torch.nextafter(kept_mass, torch.zeros_like(kept_mass)))
        pick = torch.searchsorted(cdf, target.unsqueeze(-1), right=True)
        picked = (pick if order is None else order.gather(-1, pick)).squeeze(-1)
        choice[idx] = picked
        if logprobs is not None:
            token_logp = torch.log_softmax(scaled, dim=-1).gather(-1, picked.unsqueeze(-1)).squeeze(-1)
            logprobs[idx] = token_logp - kept_mass.log()
        return choice, logprobs

    def _append(self, row: _Row, token: int) -> bool:
        """Record `token` for `row`; return True (and set `row.result`) when the row is finished."""
        params = row.request.params
        row.tokens.append(token)
        if token in self.eos_ids and not params.ignore_eos:
            return self._finish(row, "eos")
        if token in params.stop_token_ids:
            return self._finish(row, "stop")
        if params.stop:
            stop = self._completed_stop(row, token)
            if stop is not None:
                return self._finish(row, "stop", stop)
        if len(row.tokens) >= row.budget:
            return self._finish(row, "length")
        if row.request.cancelled is not None and row.request.cancelled():
            return self._finish(row, "abort")
        return False

    def _completed_stop(self, row: _Row, token: int) -> str | None:
        """The stop string that the newest token completed, if any (earliest in the text when several)."""
        params = row.request.params
        if params.skip_special_tokens and token in self.special_ids:
            return None  # no new text, so no new match
        row.visible.append(token)
        window = max(len(s.encode("utf-8")) for s in params.stop) + 1
        del row.visible[:-window]
        tail = self.decode_text(row.visible, params.skip_special_tokens)
        found = [(tail.find(s), s) for s in params.stop if s in tail]
        return min(found)[1] if found else None

    def _finish(self, row: _Row, reason: str, stop: str | None = None) -> bool:
        logprobs = list(row.logprobs) if row.request.params.logprobs else None
        row.result = DecodeResult(list(row.tokens), reason, stop, logprobs)
        return True
