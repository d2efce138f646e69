"""The project's one batched decode loop on a transformers causal LM, with per-row sampling parameters.

Both the transformers rollout backend (`HFRollout`) and the built-in simulation server generate through
`BatchDecoder.decode`. One call runs a batch of independent requests together:

- prompts are left-padded into one tensor; the attention mask hides the padding and the position ids count
  only real tokens, so a row's logits do not depend on how long its neighbours are;
- the KV cache is reused across steps, so each step feeds one token per row;
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
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

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

    Not thread-safe; callers serialise calls (the server has one batching worker, the rollout one caller).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device):
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
        rows = []
        for i, req in enumerate(requests):
            if not req.prompt_ids:
                raise ValueError(f"request {i}: empty prompt")
            room = self.max_model_len - len(req.prompt_ids)
            if room < 1:
                raise ValueError(
                    f"request {i}: prompt of {len(req.prompt_ids)} tokens leaves no room to generate within "
                    f"the model's max_position_embeddings of {self.max_model_len}"
                )
            rows.append(_Row(req, self._generator(req.seed), min(req.params.max_tokens, room)))
        with torch.inference_mode():
            self._decode(rows)
        return [row.result for row in rows]  # type: ignore[misc]

    def _generator(self, seed: int | None) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else secrets.randbits(63))
        return gen

    def _decode(self, rows: list[_Row]) -> None:
        from transformers import DynamicCache

        longest = max(len(r.request.prompt_ids) for r in rows)
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            prompt = row.request.prompt_ids
            ids[i, longest - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
            mask[i, longest - len(prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        # Positions count real tokens only, so a left-padded row sees the positions it would see alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        next_pos = mask.sum(-1, keepdim=True)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_kwarg: cache},
        )
        active = list(range(len(rows)))
        while True:
            active_rows = [rows[i] for i in active]
            tokens, logprobs = self._sample(out.logits[:, -1, :].float(), active_rows)
            still = []
            for slot, (row, tok) in enumerate(zip(active_rows, tokens.tolist(), strict=True)):
                if logprobs is not None and row.request.params.logprobs:
                    row.logprobs.append(float(logprobs[slot]))
                if not self._append(row, tok):
                    still.append(slot)
            if not still:
                return
            if len(still) < len(active):
                # Drop finished rows from every per-row tensor and from the cache.
                keep = torch.tensor(still, device=self.device)
                cache.batch_select_indices(keep)
                mask, next_pos, tokens = mask[keep], next_pos[keep], tokens[keep]
                active = [active[s] for s in still]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
            out = self.model(
                input_ids=tokens.unsqueeze(-1),
                attention_mask=mask,
                position_ids=next_pos,
                use_cache=True,
                **{self.cache_kwarg: cache},
            )
            next_pos = next_pos + 1

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
