"""The built-in simulation server, started for real on 127.0.0.1, checked against HF `generate`.

The tiny untrained model repeats one token under greedy decoding, which would hide batching bugs; the test
model is the same architecture with larger random weights, so its greedy outputs vary token by token and
any error in padding, positions or the cache shows up as different text.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import torch

from zerosearch.utils.serving import ServerProcess, find_free_port

MODEL_NAME = "sim-tiny"
MAX_PROMPT_TOKENS = 300
MAX_TOKENS_CAP = 5000
MAX_BODY_BYTES = 100_000

PROMPTS = [
    "Alice Smith was born",
    "Question: Where was Bob Jones born?",
    "Doc 1:",
    "The user is trying to answer the question whose answer is Paris. Useful Output:",
    "Bob Jones lives in Rome.",
    "Query: Alice Smith birthplace",
    "She works for Acme Corporation. Noisy Output:",
    "Where",
]


@pytest.fixture(scope="module")
def hf(sharp_model_dir):
    """The same model and tokenizer in this process, for reference outputs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(sharp_model_dir)).eval(), AutoTokenizer.from_pretrained(
        str(sharp_model_dir)
    )


@pytest.fixture(scope="module")
def server(sharp_model_dir):
    args = [
        "--model",
        str(sharp_model_dir),
        "--served-model-name",
        MODEL_NAME,
        "--max-batch-size",
        "16",
        "--max-wait-ms",
        "50",
        "--max-prompt-tokens",
        str(MAX_PROMPT_TOKENS),
        "--max-tokens-cap",
        str(MAX_TOKENS_CAP),
        "--device",
        "cpu",
        "--num-threads",
        "1",
        "--max-body-bytes",
        str(MAX_BODY_BYTES),
    ]
    with ServerProcess("zerosearch.simulation.server", args, find_free_port()) as proc:
        yield proc


def hf_greedy(hf, prompt_ids: list[int], max_new_tokens: int) -> tuple[str, int, str]:
    """HF generate's greedy (text without EOS, generated token count, finish reason)."""
    model, tok = hf
    # One thread: the server runs beside this process on a small shared CPU, and two multi-threaded torch
    # processes on two cores slow each other down many times over.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt_ids]),
                attention_mask=torch.ones_like(torch.tensor([prompt_ids])),
                do_sample=False,
                max_new_tokens=max_new_tokens,
            )
    finally:
        torch.set_num_threads(threads)
    new = out[0, len(prompt_ids) :].tolist()
    if new and new[-1] == tok.eos_token_id:
        return tok.decode(new[:-1], skip_special_tokens=True), len(new), "stop"
    return tok.decode(new, skip_special_tokens=True), len(new), "length"


def chat_ids(hf, content: str) -> list[int]:
    tok = hf[1]
    text = tok.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    return tok(text, add_special_tokens=False)["input_ids"]


def chat(server, content: str, **params) -> dict:
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": content}], **params}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def stats(server) -> dict:
    return httpx.get(f"{server.url}/stats", timeout=10).json()


def test_health_and_models_list_the_served_name(server):
    assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    models = httpx.get(f"{server.url}/v1/models", timeout=10).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [MODEL_NAME]


def test_chat_greedy_equals_hf_generate(server, hf):
    for prompt in PROMPTS[:4]:
        body = chat(server, prompt, max_tokens=24, temperature=0)
        text, n_tokens, reason = hf_greedy(hf, chat_ids(hf, prompt), 24)
        choice = body["choices"][0]
        assert choice["message"] == {"role": "assistant", "content": text}
        assert choice["finish_reason"] == reason
        assert body["usage"]["prompt_tokens"] == len(chat_ids(hf, prompt))
        assert body["usage"]["completion_tokens"] == n_tokens
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + n_tokens
        assert body["object"] == "chat.completion" and body["model"] == MODEL_NAME and body["id"]


def test_concurrent_chat_requests_are_batched_and_match_single_requests(server, hf):
    # 16 different prompts (mixed lengths) with different budgets, sent at once.
    jobs = [(PROMPTS[i % len(PROMPTS)] + " x" * i, 8 + i) for i in range(16)]
    alone = [
        chat(server, p, max_tokens=m, temperature=0)["choices"][0]["message"]["content"] for p, m in jobs[:4]
    ]
    before = stats(server)

    async def send_all():
        async with httpx.AsyncClient(timeout=120) as client:
            replies = await asyncio.gather(
                *[
                    client.post(
                        f"{server.url}/v1/chat/completions",
                        json={
                            "messages": [{"role": "user", "content": p}],
                            "max_tokens": m,
                            "temperature": 0,
                        },
                    )
                    for p, m in jobs
                ]
            )
        return [r.json() for r in replies]

    bodies = asyncio.run(send_all())
    after = stats(server)
    for (prompt, max_tokens), body in zip(jobs, bodies, strict=True):
        text, n_tokens, reason = hf_greedy(hf, chat_ids(hf, prompt), max_tokens)
        assert body["choices"][0]["message"]["content"] == text
        assert (body["usage"]["completion_tokens"], body["choices"][0]["finish_reason"]) == (n_tokens, reason)
    assert [b["choices"][0]["message"]["content"] for b in bodies[:4]] == alone
    assert after["rows"] - before["rows"] == 16
    steps, row_steps = after["steps"] - before["steps"], after["row_steps"] - before["row_steps"]
    assert row_steps / steps > 1  # rows shared decode steps
    assert after["max_batch_rows"] > 1


def test_completions_accept_a_list_of_prompts_and_n(server, hf):
    tok = hf[1]
    body = {"prompt": PROMPTS[:2], "max_tokens": 12, "temperature": 0.9, "n": 2, "seed": 3}
    r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()
    assert r["object"] == "text_completion"
    assert [c["index"] for c in r["choices"]] == [0, 1, 2, 3]
    assert r["usage"]["prompt_tokens"] == sum(len(tok(p)["input_ids"]) for p in PROMPTS[:2])
    # The n samples of one prompt use different seeds, so they differ.
    assert r["choices"][0]["text"] != r["choices"][1]["text"]


def test_completions_greedy_equals_hf_generate(server, hf):
    prompt = PROMPTS[4]
    r = httpx.post(
        f"{server.url}/v1/completions",
        json={"prompt": prompt, "max_tokens": 20, "temperature": 0},
        timeout=60,
    ).json()
    text, _, reason = hf_greedy(hf, hf[1](prompt)["input_ids"], 20)
    assert (r["choices"][0]["text"], r["choices"][0]["finish_reason"]) == (text, reason)


def test_stop_string_cuts_the_output_before_it(server):
    full = chat(server, PROMPTS[5], max_tokens=40, temperature=0, ignore_eos=True)["choices"][0]["message"][
        "content"
    ]
    # A stop string taken from the middle of the greedy output; plain ASCII so every prefix decodes cleanly.
    start = next(
        i for i in range(4, len(full) - 2) if full[i : i + 2].isascii() and full[i : i + 2].isalnum()
    )
    stop = full[start : start + 2]
    body = chat(server, PROMPTS[5], max_tokens=40, temperature=0, ignore_eos=True, stop=["\u2603", stop])
    choice = body["choices"][0]
    assert choice["message"]["content"] == full[: full.find(stop)]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == stop  # which one: vLLM's field
    assert body["usage"]["completion_tokens"] < 40


def test_max_tokens_ends_with_finish_reason_length(server):
    body = chat(server, PROMPTS[0], max_tokens=5, temperature=0.8, ignore_eos=True, seed=1)
    assert body["choices"][0]["finish_reason"] == "length" and body["choices"][0]["stop_reason"] is None
    assert body["usage"]["completion_tokens"] == 5


def test_same_seed_gives_same_sample_even_inside_a_batch(server):
    request = {"max_tokens": 30, "temperature": 1.0, "top_p": 0.95, "seed": 1234}
    first = chat(server, PROMPTS[1], **request)["choices"][0]["message"]["content"]
    again = chat(server, PROMPTS[1], **request)["choices"][0]["message"]["content"]
    other_seed = chat(server, PROMPTS[1], **{**request, "seed": 99})["choices"][0]["message"]["content"]

    async def in_batch():
        async with httpx.AsyncClient(timeout=120) as client:
            others = [
                client.post(
                    f"{server.url}/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": p}], "max_tokens": 20},
                )
                for p in PROMPTS[2:6]
            ]
            mine = client.post(
                f"{server.url}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": PROMPTS[1]}], **request},
            )
            return (await asyncio.gather(mine, *others))[0].json()

    batched = asyncio.run(in_batch())["choices"][0]["message"]["content"]
    assert first == again == batched
    assert first != other_seed


BAD_REQUESTS = [
    ("chat", "{not json", None),
    ("chat", {"max_tokens": 5}, "messages"),
    ("chat", {"messages": "hello"}, "messages"),
    ("chat", {"messages": [{"role": "user"}]}, "messages"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"}, "max_tokens"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    (
        "chat",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS_CAP + 1},
        "max_tokens",
    ),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4090}, "max_tokens"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "temperature": -0.5}, "temperature"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5}, "temperature"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}, "top_p"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "stop": 7}, "stop"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "stream": True}, "stream"),
    ("chat", {"messages": [{"role": "user", "content": "Alice Smith " * 200}]}, "messages"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "seed": 2**64}, "seed"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "seed": 2**63 - 1, "n": 2}, "seed"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "seed": -(2**63) - 1}, "seed"),
    ("chat", {"messages": [{"role": "user", "content": "hi"}], "temperature": 1e-39}, "temperature"),
    ("completions", {"prompt": 12}, "prompt"),
    ("completions", {"prompt": []}, "prompt"),
    ("completions", {"prompt": ""}, "prompt"),
]


@pytest.mark.parametrize(("endpoint", "body", "param"), BAD_REQUESTS)
def test_bad_request_is_a_400_naming_the_field(server, endpoint, body, param):
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    content = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(
        f"{server.url}{path}", content=content, headers={"content-type": "application/json"}, timeout=30
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"]


def test_bad_requests_sent_among_good_ones_fail_alone(server):
    """Requests that once failed inside generation (an overflowing seed, an underflowing temperature) arrive
    while good ones are being batched: each bad one gets its 400, every good one its completion."""
    good = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 8, "seed": 3}
    bad = [
        {**good, "seed": 2**63 - 2},
        {**good, "temperature": 1e-39},
        {**good, "seed": 2**64},
    ]

    async def mixed():
        async with httpx.AsyncClient(timeout=120) as client:
            post = lambda body: client.post(f"{server.url}/v1/chat/completions", json=body)  # noqa: E731
            return await asyncio.gather(*(post(body) for body in [good, *bad, good, good]))

    codes = [r.status_code for r in asyncio.run(mixed())]
    assert codes == [200, 400, 400, 400, 200, 200]


def _stats(server) -> dict:
    return httpx.get(f"{server.url}/stats", timeout=30).json()


def test_a_client_that_goes_away_stops_its_generation(server):
    """4 x 2000 tokens asked, the client gone after 0.5 s: the rows end there (a few hundred tokens at most
    on this CPU), and the next request is answered at once instead of waiting behind them."""
    before = _stats(server)
    body = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 2000, "n": 4}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/chat/completions", json={**body, "ignore_eos": True}, timeout=0.5)
    deadline = time.monotonic() + 60
    while _stats(server)["rows"] < before["rows"] + 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    generated = _stats(server)["completion_tokens"] - before["completion_tokens"]
    assert 0 < generated < 4 * 2000 / 4, generated
    start = time.monotonic()
    quick = httpx.post(
        f"{server.url}/v1/chat/completions", json={**body, "max_tokens": 4, "n": 1}, timeout=60
    )
    assert quick.status_code == 200 and time.monotonic() - start < 10


@pytest.mark.slow
def test_a_huge_prompt_is_tokenized_off_the_event_loop(tiny_model_dir):
    """A 6 MB prompt takes the tokenizer seconds; meanwhile /health answers as quickly as ever."""
    args = ["--model", str(tiny_model_dir), "--max-body-bytes", "8000000", "--device", "cpu"]
    with ServerProcess("zerosearch.simulation.server", args, find_free_port()) as big:
        prompt = "Alice Smith was born in Paris. " * 200_000

        async def probe():
            async with httpx.AsyncClient(timeout=120) as client:
                post = asyncio.create_task(client.post(f"{big.url}/v1/completions", json={"prompt": prompt}))
                latencies = []
                while not post.done():
                    start = time.monotonic()
                    assert (await client.get(f"{big.url}/health")).status_code == 200
                    latencies.append(time.monotonic() - start)
                    await asyncio.sleep(0.05)
                return await post, latencies

        reply, latencies = asyncio.run(probe())
    assert reply.status_code == 400 and "tokens, over the limit" in reply.json()["error"]["message"]
    assert len(latencies) >= 3 and max(latencies) < 1.0, latencies


@pytest.mark.parametrize(
    "content",
    [
        b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # Latin-1, not UTF-8
        b"[" * 5000 + b"]" * 5000,  # nested deeper than the parser goes
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"9" * 5000 + b"}",
    ],
    ids=["not-utf8", "deep-nesting", "5000-digit-int"],
)
def test_an_unparseable_body_gets_the_openai_error_format(server, content):
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == 400 and error["message"]


def test_an_unknown_path_gets_the_openai_error_format(server):
    r = httpx.get(f"{server.url}/v1/engines", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["message"] == "Not Found"


def test_an_empty_model_name_means_the_served_model(server):
    body = {
        "model": "",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    assert httpx.post(f"{server.url}/v1/chat/completions", timeout=30, json=body).status_code == 200


def test_unknown_model_name_is_a_404(server):
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        timeout=30,
        json={"model": "other", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "model"


def test_server_keeps_serving_after_bad_requests(server):
    bad = httpx.post(f"{server.url}/v1/chat/completions", content="{oops", timeout=30)
    assert bad.status_code == 400
    good = chat(server, PROMPTS[0], max_tokens=4, temperature=0)
    assert good["choices"][0]["finish_reason"] in ("stop", "length")
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_an_oversized_body_is_refused_with_413_before_it_is_read(server):
    body = json.dumps({"model": MODEL_NAME, "messages": [{"role": "user", "content": "x" * MAX_BODY_BYTES}]})
    url = f"{server.url}/v1/chat/completions"
    declared = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert declared.status_code == 413, declared.text
    assert str(MAX_BODY_BYTES) in declared.json()["error"]["message"]

    def chunks():  # no Content-Length: the body arrives in pieces and is counted as it comes
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192].encode()

    streamed = httpx.post(url, content=chunks(), headers={"content-type": "application/json"}, timeout=30)
    assert streamed.status_code == 413, streamed.text
    assert chat(server, PROMPTS[0], max_tokens=2, temperature=0)["choices"]  # and it keeps serving


def test_the_server_binds_to_localhost_unless_told_otherwise():
    from zerosearch.simulation.server import parse_args

    assert parse_args(["--model", "m", "--port", "1"]).host == "127.0.0.1"
