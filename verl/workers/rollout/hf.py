"""The transformers rollout backend ("hf"): CPU and GPU, no extra engine to install.

`HFRollout` holds its own full copy of the policy (loaded from a Hugging Face folder, or copied from a
module) and generates through the shared batched decode loop (`hf_decode.BatchDecoder`). The trainer keeps
it in step with the trained weights through `update_weights`, the same explicit hand-off a vLLM engine needs,
so swapping backends changes nothing above the rollout interface.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from verl.workers.rollout.base import (
    NO_LIMIT,
    Params,
    RolloutEngine,
    RolloutOutput,
    RolloutRequest,
    RolloutSamplingParams,
    RolloutSource,
    group_samples,
    per_prompt,
    register_rollout,
    sample_seed,
)
from verl.workers.rollout.hf_decode import (
    BatchDecoder,
    DecodeParams,
    DecodeRequest,
    DecodeResult,
    resolve_device,
    resolve_dtype,
)


def _decode_params(params: RolloutSamplingParams) -> DecodeParams:
    return DecodeParams(
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        stop=tuple(params.stop),
        stop_token_ids=tuple(params.stop_token_ids),
        skip_special_tokens=False,
        logprobs=params.logprobs,
    )


def _output(result: DecodeResult) -> RolloutOutput:
    return RolloutOutput(result.token_ids, result.finish_reason, result.logprobs)


class _ServedRequests:
    """A RolloutSource seen as the decoder's RequestSource (hf_decode): requests in, results out by identity.
    A request the decoder cannot run ends the serving: the error is kept and raised once the rows in flight
    have finished."""

    def __init__(self, source: RolloutSource):
        self.source = source
        self.pending: dict[int, RolloutRequest] = {}
        self.error: Exception | None = None

    def take(self, room: int, idle: bool) -> list[DecodeRequest] | None:
        if self.error is not None:
            return None
        taken = self.source.take(room, idle)
        if taken is None:
            return None
        decode = []
        for request in taken:
            row = DecodeRequest(
                request.prompt_ids, _decode_params(request.params), sample_seed(request.params, 0, 0, False)
            )
            self.pending[id(row)] = request
            decode.append(row)
        return decode

    def finish(self, request: DecodeRequest, result: DecodeResult) -> None:
        self.source.finish(self.pending.pop(id(request)), _output(result))

    def fail(self, request: DecodeRequest, error: Exception) -> None:
        self.pending.pop(id(request), None)
        self.error = self.error or error

    def step(self, rows: int) -> None:
        return None


@register_rollout("hf")
class HFRollout(RolloutEngine):
    """Token-in / token-out generation with a transformers causal LM.

    model: a Hugging Face model folder, or an `nn.Module` (then `tokenizer` is required) which is deep-copied
    so the rollout never aliases the trained parameters. dtype: "auto" (the checkpoint's), "float32",
    "bfloat16", "float16" or a torch dtype. max_batch_size bounds how many rows (prompts x n) decode at once.

    Output contract (see `RolloutSamplingParams`): token ids exactly as sampled, including the EOS id,
    stop token id or the tokens that completed a stop string; `logprobs` as defined in `BatchDecoder`
    (processed: after temperature and top-p; greedy rows report the model's own log-softmax).
    """

    serves_alone = True

    def __init__(
        self,
        model: str | Path | torch.nn.Module,
        tokenizer=None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        max_batch_size: int | None = None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
        self.device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype)
        if isinstance(model, torch.nn.Module):
            if tokenizer is None:
                raise ValueError("HFRollout: a tokenizer is required when the model is given as a module")
            module = copy.deepcopy(model)
            if torch_dtype != "auto":
                module = module.to(torch_dtype)
        else:
            path = Path(model)
            if not path.exists():
                raise FileNotFoundError(f"HFRollout: no such model folder: {path}")
            module = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
            tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(str(path))
        self.model = module.to(self.device).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.decoder = BatchDecoder(self.model, tokenizer, self.device)

    @property
    def max_model_len(self) -> int:
        return self.decoder.max_model_len

    def generate(self, prompts: Sequence[Sequence[int]], params: Params) -> list[list[RolloutOutput]]:
        each, shared = per_prompt(prompts, params)
        requests = [
            DecodeRequest(prompt, _decode_params(p), sample_seed(p, i, j, shared))
            for i, (prompt, p) in enumerate(zip(prompts, each, strict=True))
            for j in range(p.n)
        ]
        step = self.max_batch_size or max(len(requests), 1)
        results = []
        for start in range(0, len(requests), step):
            results.extend(self.decoder.decode(requests[start : start + step]))
        return group_samples([_output(r) for r in results], each)

    def serve(self, source: RolloutSource) -> None:
        """Continuous batching (`BatchDecoder.serve`): a request joins the running batch at its next step and
        is handed back the step it ends, up to `max_batch_size` rows at a time."""
        served = _ServedRequests(source)
        self.decoder.serve(served, self.max_batch_size or NO_LIMIT)
        if served.error is not None:
            raise RuntimeError(
                f"HFRollout.serve: a request could not be generated: {served.error}"
            ) from served.error

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy each (state_dict key, full tensor) into the model in place.

        In-place copies keep tied parameters tied (the embedding and the LM head share one tensor, reached
        under either key) and keep the decoder's references valid. Unknown keys and shape mismatches raise.
        """
        state = self.model.state_dict()
        with torch.no_grad():
            for name, tensor in named_tensors:
                if name not in state:
                    raise KeyError(
                        f"update_weights: {name!r} is not a parameter or buffer of the rollout model"
                    )
                target = state[name]
                if tuple(target.shape) != tuple(tensor.shape):
                    raise ValueError(
                        f"update_weights: {name!r} has shape {tuple(tensor.shape)}, "
                        f"the rollout model expects {tuple(target.shape)}"
                    )
                target.copy_(tensor.detach().to(device=target.device, dtype=target.dtype))

    def sleep(self) -> None:
        """On GPU, move the weights to host memory between rollouts so training gets the device memory."""
        if self.device.type == "cuda":
            self.model.to("cpu")
            torch.cuda.empty_cache()

    def wake_up(self) -> None:
        if self.device.type == "cuda":
            self.model.to(self.device)
