"""zerosearch.policy: a policy served behind an OpenAI-compatible API (the built-in server, started for real)
generates what the same model generates in this process, and how a reply's end is read."""

from __future__ import annotations

import pytest

from verl.workers.rollout import HFRollout, RolloutSamplingParams
from zerosearch.policy import EndpointRollout, PolicyEndpointError, load_policy
from zerosearch.utils.serving import ServerProcess, find_free_port

STOPS = ("</search>", "</answer>")


@pytest.fixture(scope="module")
def served(sharp_model_dir):
    args = ["--model", str(sharp_model_dir), "--served-model-name", "policy", "--device", "cpu"]
    with ServerProcess(
        "zerosearch.simulation.server", args + ["--num-threads", "1"], find_free_port()
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def local(sharp_model_dir):
    return HFRollout(sharp_model_dir, device="cpu")


@pytest.fixture(scope="module")
def endpoint(served, local):
    engine = EndpointRollout(served.url, local.tokenizer)
    yield engine
    engine.close()


def _prompts(tokenizer) -> list[list[int]]:
    texts = ["Question: Where was Alice Smith born?", "<information>Doc 1: Bob Jones", "Doc 1:"]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_the_served_model_name_is_read_from_the_server(endpoint):
    assert endpoint.model == "policy"


def test_greedy_text_and_finish_equal_the_in_process_rollout(endpoint, local):
    tokenizer = local.tokenizer
    prompts = _prompts(tokenizer)
    greedy = RolloutSamplingParams(temperature=0.0, max_tokens=24)
    here = local.generate(prompts, greedy)
    # A stop string from the middle of each in-process output: both must end on it, stop string kept.
    stops = tuple(tokenizer.decode(out[0].token_ids[4:7], skip_special_tokens=False) for out in here)
    params = RolloutSamplingParams(temperature=0.0, max_tokens=24, stop=tuple(s for s in stops if s.strip()))
    for engine_out, local_out in zip(
        endpoint.generate(prompts, params), local.generate(prompts, params), strict=True
    ):
        a, b = engine_out[0], local_out[0]
        assert tokenizer.decode(a.token_ids, skip_special_tokens=False) == tokenizer.decode(
            b.token_ids, skip_special_tokens=False
        )
        assert a.finish_reason == b.finish_reason
    for engine_out, local_out in zip(endpoint.generate(prompts, greedy), here, strict=True):
        assert engine_out[0].finish_reason == local_out[0].finish_reason


def _reply(text: str, finish: str = "stop", **extra) -> dict:
    return {"text": text, "finish_reason": finish, **extra}


def test_a_reply_ending_on_a_stop_string_or_eos_is_read_as_such(endpoint, local):
    tokenizer = local.tokenizer
    params = RolloutSamplingParams(temperature=0.0, max_tokens=40, stop=STOPS)

    def text(out) -> str:
        return tokenizer.decode(out.token_ids, skip_special_tokens=False)

    kept = endpoint._output(
        _reply("<search> Alice </search>"), params
    )  # vLLM with include_stop_str_in_output
    cut_vllm = endpoint._output(_reply("<search> Alice ", stop_reason="</search>"), params)
    cut_sglang = endpoint._output(_reply("<answer> Rome ", matched_stop="</answer>"), params)
    eos = endpoint._output(_reply("<answer> Rome </answer> done", stop_reason=None), params)
    length = endpoint._output(_reply("<search> Alice Smith", finish="length"), params)
    assert kept.finish_reason == cut_vllm.finish_reason == cut_sglang.finish_reason == "stop"
    assert text(kept).endswith("</search>") and text(cut_vllm).endswith("</search>")
    assert text(cut_sglang).endswith("</answer>")
    assert eos.finish_reason == "eos" and eos.token_ids[-1] == tokenizer.eos_token_id
    assert length.finish_reason == "length" and tokenizer.eos_token_id not in length.token_ids


def test_an_endpoint_cannot_be_trained(endpoint):
    with pytest.raises(ValueError, match="no sampling log-probs"):
        endpoint.generate([[1, 2]], RolloutSamplingParams(logprobs=True))
    with pytest.raises(NotImplementedError, match="cannot be trained"):
        endpoint.update_weights([])


def test_a_server_that_is_not_there_fails_with_its_url(local):
    from zerosearch.search.client import HttpOptions

    url = f"http://127.0.0.1:{find_free_port()}"
    with pytest.raises(PolicyEndpointError, match=rf"--policy-url {url}: GET /v1/models failed: connection"):
        EndpointRollout(url, local.tokenizer, options=HttpOptions(max_retries=0, timeout_s=5))
    engine = EndpointRollout(url, local.tokenizer, model="m", options=HttpOptions(max_retries=0, timeout_s=5))
    with pytest.raises(PolicyEndpointError, match=r"2 of 2 generations failed after their retries"):
        engine.generate([[1, 2], [3]], RolloutSamplingParams(max_tokens=4))
    engine.close()


def test_load_policy_refuses_an_unknown_rollout(sharp_model_dir):
    with pytest.raises(ValueError, match="--rollout must be one of auto, hf, vllm"):
        load_policy(str(sharp_model_dir), rollout="sglang")


def test_a_malformed_endpoint_reply_fails_with_its_url_not_a_python_error(local, serve):
    """Replies of a shape no OpenAI server sends: a model list that is not a list, choices that are strings."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from zerosearch.search.client import HttpOptions

    async def models(_):
        return JSONResponse({"data": 5})

    async def completions(_):
        return JSONResponse({"choices": ["text"]})

    url = serve(
        Starlette(
            routes=[Route("/v1/models", models), Route("/v1/completions", completions, methods=["POST"])]
        )
    )
    options = HttpOptions(max_retries=0, timeout_s=5)
    with pytest.raises(
        PolicyEndpointError, match=rf"--policy-url {url}: GET /v1/models failed: malformed reply"
    ):
        EndpointRollout(url, local.tokenizer, options=options)
    engine = EndpointRollout(url, local.tokenizer, model="m", options=options)
    with pytest.raises(
        PolicyEndpointError, match=rf"malformed reply from {url}/v1/completions: a choice is str"
    ):
        engine.generate([[1, 2]], RolloutSamplingParams(max_tokens=4))
    engine.close()
