"""A trained (or baseline) policy outside training: what `zerosearch.eval` and `zerosearch.infer` run.

Two sources, one interface (a `RolloutEngine` and the tokenizer the agent loop works in):

- a local model, a folder or a hub id, run in this process by a rollout backend: transformers (`hf`) or vLLM
  (`vllm`, where installed; `auto` picks vLLM on a GPU where it is installed, as training does);
- a model served behind an OpenAI-compatible endpoint (`--policy-url`: `vllm serve`, SGLang, the built-in
  server), so an instruct model or a prompt baseline is scored by the same loop. The endpoint gets each turn's
  prompt as text on `/v1/completions` and its reply is tokenized here; greedy scores match the in-process
  run wherever decode and encode round-trip (they do for the tokenizers of the Qwen family). An endpoint
  cannot be trained: it is for evaluation and inference only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from verl.workers.rollout.base import (
    Params,
    RolloutEngine,
    RolloutOutput,
    RolloutSamplingParams,
    group_samples,
    per_prompt,
    sample_seed,
)
from zerosearch.search.client import HttpOptions, LoopThread, RequestCore, post_all, read_json

ROLLOUTS = ("auto", "hf", "vllm")


class PolicyEndpointError(RuntimeError):
    """The endpoint could not generate (after retries): the run stops rather than score a missing answer."""


class EndpointRollout(RolloutEngine):
    """Generation by a policy served behind an OpenAI-compatible `/v1/completions`.

    url: the server (with or without a trailing `/v1`). model: the served model name; None asks `/v1/models`,
    which must then list exactly one. The request asks the server to keep the stop string in the text (vLLM's
    `include_stop_str_in_output`, SGLang's `no_stop_trim`); a server that cuts it anyway is read through
    `stop_reason` (vLLM, the built-in server) or `matched_stop` (SGLang), and a reply that ended on neither
    counts as EOS, whose id is appended so the trajectory ends as a local one would.
    """

    def __init__(self, url: str, tokenizer, model: str | None = None, options: HttpOptions | None = None):
        self.base = url.rstrip("/").removesuffix("/v1")
        self.tokenizer = tokenizer
        self.options = options or HttpOptions(timeout_s=600.0, concurrency=64)
        self._core = RequestCore(self.options)
        self._runner = LoopThread("policy-endpoint")
        try:
            self.model = model or self._served_model()
        except PolicyEndpointError:
            self.close()
            raise

    def _run(self, coro):
        return self._runner.run(coro)

    def _served_model(self) -> str:
        url = f"{self.base}/v1/models"

        async def attempt(session: aiohttp.ClientSession) -> list:
            async with session.get(url) as response:
                body = await read_json(response, url, self.options.max_reply_bytes)
            return [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]

        outcome = self._run(self._core.run(attempt, url))
        if outcome.error is not None:
            raise PolicyEndpointError(f"--policy-url {self.base}: GET /v1/models failed: {outcome.error}")
        names = outcome.value
        if len(names) != 1:
            raise PolicyEndpointError(
                f"--policy-url {self.base} serves {len(names)} models ({', '.join(map(str, names)) or 'none'}); "
                "name one with --policy-model"
            )
        return str(names[0])

    def generate(self, prompts: Sequence[Sequence[int]], params: Params) -> list[list[RolloutOutput]]:
        each, shared = per_prompt(prompts, params)
        if any(p.logprobs for p in each):
            raise ValueError(
                "EndpointRollout: an endpoint returns no sampling log-probs; it cannot be trained"
            )
        texts = [self.tokenizer.decode(list(p), skip_special_tokens=False) for p in prompts]
        bodies, owners = [], []
        for i, (text, p) in enumerate(zip(texts, each, strict=True)):
            for j in range(p.n):
                bodies.append(self._body(text, p, sample_seed(p, i, j, shared)))
                owners.append(p)
        choices = self._run(self._complete_all(bodies))
        outputs = [self._output(choice, p) for choice, p in zip(choices, owners, strict=True)]
        return group_samples(outputs, each)

    def _body(self, text: str, params: RolloutSamplingParams, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": text,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": 1,
            "skip_special_tokens": False,
            "include_stop_str_in_output": True,
            "no_stop_trim": True,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.stop_token_ids:
            body["stop_token_ids"] = list(params.stop_token_ids)
        if seed is not None:
            body["seed"] = seed
        return body

    async def _complete_all(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        outcomes = await post_all(self._core, f"{self.base}/v1/completions", bodies)
        failed = [o for o in outcomes if o.error is not None]
        if failed:
            raise PolicyEndpointError(
                f"--policy-url {self.base}: {len(failed)} of {len(bodies)} generations failed after their "
                f"retries; last error: {failed[-1].error}"
            )
        return [o.value for o in outcomes]

    def _output(self, choice: dict[str, Any], params: RolloutSamplingParams) -> RolloutOutput:
        text = str(choice.get("text") or "")

        def encode(value: str) -> list[int]:
            return self.tokenizer(value, add_special_tokens=False)["input_ids"]

        if choice.get("finish_reason") == "length":
            return RolloutOutput(encode(text)[: params.max_tokens], "length")
        matched = choice.get("stop_reason", choice.get("matched_stop"))
        if any(text.endswith(s) for s in params.stop):
            return RolloutOutput(encode(text), "stop")
        if isinstance(matched, str) and matched in params.stop:
            return RolloutOutput(encode(text + matched), "stop")
        if isinstance(matched, int) and not isinstance(matched, bool):
            return RolloutOutput(encode(text) + [matched], "stop")
        eos = self.tokenizer.eos_token_id
        return RolloutOutput(encode(text) + ([eos] if eos is not None else []), "eos")

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        raise NotImplementedError(
            "EndpointRollout: a served policy is evaluated as it is; it cannot be trained"
        )

    def close(self) -> None:
        self._core.close()
        self._runner.stop()


@dataclass
class Policy:
    """A policy ready for the agent loop: its tokenizer, its engine, and how to describe it."""

    tokenizer: Any
    engine: RolloutEngine
    description: str

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


def load_policy(
    model: str,
    policy_url: str | None = None,
    policy_model: str | None = None,
    rollout: str = "auto",
    device: str = "auto",
    dtype: str = "auto",
) -> Policy:
    """The policy named on a command line. `model`: a folder or hub id (with `policy_url`, only its tokenizer
    is loaded: the one the served model uses). `rollout`: auto | hf | vllm, for a local model."""
    from transformers import AutoTokenizer

    from verl.utils.hub import resolve_model
    from verl.workers.rollout import get_rollout_class, resolve_rollout_name
    from verl.workers.rollout.hf_decode import resolve_device

    if rollout not in ROLLOUTS:
        raise ValueError(f"--rollout must be one of {', '.join(ROLLOUTS)}, got {rollout!r}")
    folder = resolve_model(model, "--model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if policy_url:
        engine = EndpointRollout(policy_url, tokenizer, policy_model)
        return Policy(tokenizer, engine, f"{engine.model} served at {engine.base}")
    name = resolve_rollout_name(rollout, resolve_device(device).type)
    cls = get_rollout_class(name)
    if name == "vllm":
        engine = cls(folder, tokenizer=tokenizer, device=device, dtype=dtype, load_format="auto")
    else:
        engine = cls(folder, tokenizer=tokenizer, device=device, dtype=dtype)
    return Policy(tokenizer, engine, f"{model} ({name} rollout)")
