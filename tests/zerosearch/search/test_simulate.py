"""simulate_sft / simulate_prompt against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from llm_agent.search import SearchRequest
from zerosearch.search import SimulateConfig, SimulatePromptBackend, SimulateSFTBackend, parse_documents
from zerosearch.search.simulate import row_context

pytestmark = pytest.mark.timeout(60)


def backend(urls, **options) -> SimulateSFTBackend:
    return SimulateSFTBackend(SimulateConfig(urls=urls, **options))


def req(i: int, topk: int = 5) -> SearchRequest:
    return SearchRequest(f"query {i}", row_context(f"question {i}?", (f"answer {i}", f"alias {i}")), topk)


def echoed(doc: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in doc.split(" | "))


def test_each_request_carries_its_own_question_answer_and_label(chat_server):
    _, url = chat_server()
    requests = [req(i) for i in range(40)]
    with backend(url, seed=1) as b:
        results = b.search(requests, noise_prob=0.5)
    assert {r.noisy for r in results} == {True, False}  # both kinds drawn, so the check below covers both
    for i, result in enumerate(results):
        assert len(result.documents) == 5 and result.error is None
        fields = echoed(result.documents[0])
        assert fields["query"] == f"query {i}"
        assert fields["question"] == f"question {i}?"
        assert fields["answer"] == f"answer {i}"  # answer_mode "first"
        assert fields["label"] == ("Noisy" if result.noisy else "Useful")
        assert result.meta["server"] == url


def test_answer_mode_all_puts_every_golden_answer_in_the_prompt(chat_server):
    _, url = chat_server()
    with backend(url, answer_mode="all") as b:
        (result,) = b.search([req(3)])
    assert echoed(result.documents[0])["answer"] == "answer 3, alias 3"


def test_request_sends_the_configured_sampling_and_an_empty_system_message(chat_server):
    server, url = chat_server(model="sim-14b")
    with backend(url, model="sim-14b", temperature=0.3, top_p=0.9) as b:
        b.search([req(0)])
    body = server.bodies[0]
    assert (body["model"], body["max_tokens"], body["temperature"], body["top_p"]) == (
        "sim-14b",
        600,
        0.3,
        0.9,
    )
    assert body["messages"][0] == {"role": "system", "content": ""}
    assert body["messages"][1]["role"] == "user"


def test_model_name_is_read_from_the_server_when_not_configured(chat_server):
    server, url = chat_server(model="served-name")
    with backend(url + "/v1/") as b:  # the OpenAI-client style URL works too
        (result,) = b.search([req(0)])
    assert server.bodies[0]["model"] == "served-name"
    assert result.meta["model"] == "served-name"


def test_prompt_mode_noisy_prompt_has_no_question_or_answer(chat_server):
    _, url = chat_server()
    with SimulatePromptBackend(SimulateConfig(urls=[url])) as b:
        (useful,) = b.search([req(1)], noise_prob=0.0)
        (noisy,) = b.search([req(2)], noise_prob=1.0)
    assert echoed(useful.documents[0])["question"] == "question 1?"
    assert echoed(noisy.documents[0])["question"] == "-"
    assert echoed(noisy.documents[0])["label"] == "Noisy"


def test_output_is_cut_after_document_topk(chat_server):
    _, url = chat_server()
    with backend(url) as b:
        results = b.search([req(0, topk=3), req(1, topk=1)])
    assert [len(r.documents) for r in results] == [3, 1]
    assert results[0].documents[2].startswith("query=query 0")  # the "Doc 3:" marker itself is removed


def test_empty_output_gives_no_documents_and_is_not_an_error(chat_server):
    _, url = chat_server(content="")
    with backend(url) as b:
        (result,) = b.search([req(0)])
    assert result.documents == [] and result.error is None and result.meta["empty_output"] is True


def test_blank_query_is_not_sent(chat_server):
    server, url = chat_server()
    with backend(url) as b:
        blank, real = b.search([SearchRequest("  ", row_context("q?", ("a",))), req(1)])
    assert blank.documents == [] and blank.meta == {"empty_query": True}
    assert len(real.documents) == 5 and server.calls == 1


def test_request_without_golden_answers_is_rejected_with_its_position(chat_server):
    _, url = chat_server()
    with backend(url) as b, pytest.raises(ValueError, match=r"request 1 \(query 'no answer'\): .*golden"):
        b.search([req(0), SearchRequest("no answer", row_context("q?", ()))])


@pytest.mark.parametrize(
    ("context", "field"),
    [({"golden_answers": ("a",)}, "question"), ({"question": "q?", "golden_answers": "a"}, "golden_answers")],
)
def test_a_request_whose_row_context_lacks_what_the_simulator_reads_names_the_field(
    chat_server, context, field
):
    _, url = chat_server()
    with backend(url) as b, pytest.raises(TypeError, match=rf"request 1 context field '{field}'"):
        b.search([req(0), SearchRequest("q", context)])


@pytest.mark.parametrize("noise_prob, expected", [(0.0, {False}), (1.0, {True})])
def test_noise_prob_zero_and_one(chat_server, noise_prob, expected):
    _, url = chat_server()
    with backend(url, seed=7) as b:
        results = b.search([req(i) for i in range(50)], noise_prob)
    assert {r.noisy for r in results} == expected
    assert {echoed(r.documents[0])["label"] for r in results} == {"Noisy" if True in expected else "Useful"}


def test_noise_draws_follow_the_probability_and_the_seed(chat_server):
    _, url = chat_server()
    requests = [req(i) for i in range(600)]
    with backend(url, seed=11) as b1, backend(url, seed=11) as b2, backend(url, seed=12) as b3:
        draws = [[r.noisy for r in b.search(requests, 0.3)] for b in (b1, b2, b3)]
    share = sum(draws[0]) / len(requests)
    # 600 Bernoulli(0.3) draws: standard deviation ~0.019, so 0.22..0.38 is a > 4-sigma band.
    assert 0.22 < share < 0.38
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]


def test_a_seeded_request_draws_and_samples_the_same_whatever_came_before(chat_server):
    """What exact resume needs: a request's noise draw and the seed it sends depend on its own seed only."""
    server, url = chat_server()
    seeded = [replace(req(i), seed=1000 + i) for i in range(200)]
    with backend(url, seed=3) as fresh, backend(url, seed=3) as used:
        used.search([req(i) for i in range(37)], 0.5)  # advances this backend's own stream
        server.bodies.clear()
        draws_used = [r.noisy for r in used.search(seeded[::-1], 0.5)][::-1]
        seeds_used = sorted(body["seed"] for body in server.bodies)
        server.bodies.clear()
        draws_fresh = [r.noisy for r in fresh.search(seeded, 0.5)]
        seeds_fresh = sorted(body["seed"] for body in server.bodies)
    assert draws_used == draws_fresh
    assert 60 < sum(draws_fresh) < 140  # still Bernoulli(0.5): ~7 standard deviations wide
    assert seeds_used == seeds_fresh and len(set(seeds_fresh)) == 200
    assert all(0 <= s < 2**31 for s in seeds_fresh)
    with backend(url, seed=4) as other:
        assert [r.noisy for r in other.search(seeded, 0.5)] != draws_fresh


def test_an_unseeded_request_sends_no_seed(chat_server):
    server, url = chat_server()
    with backend(url) as b:
        b.search([req(0)])
    assert "seed" not in server.bodies[0]


def test_api_key_comes_from_the_environment_as_a_bearer_token_and_never_shows(chat_server, monkeypatch):
    server, url = chat_server(fail_status=500, fail_first=1, fail_message="bad key sk-test-123")
    monkeypatch.setenv("SIM_KEY", "sk-test-123")
    with backend(url, api_key_env="SIM_KEY", max_retries=0, max_failure_rate=1.0) as b:
        (failed,) = b.search([req(0)])
        (result,) = b.search([req(1)])
        assert "sk-test-123" not in repr(b.config)
    assert server.authorization == ["Bearer sk-test-123", "Bearer sk-test-123"]
    assert result.error is None and "sk-test-123" not in failed.error and "***" in failed.error
    with backend(url) as b:
        b.search([req(2)])
    assert server.authorization[-1] is None
    monkeypatch.delenv("SIM_KEY")
    with pytest.raises(ValueError, match="SIM_KEY"):
        backend(url, api_key_env="SIM_KEY")


def test_least_in_flight_balancing_favours_the_faster_server(chat_server):
    slow, slow_url = chat_server(latency_s=0.3)
    fast, fast_url = chat_server(latency_s=0.01)
    with backend([slow_url, fast_url], concurrency=4) as b:
        results = b.search([req(i) for i in range(40)])
    assert all(r.error is None for r in results)
    assert slow.calls >= 1 and fast.calls > 3 * slow.calls
    assert {r.meta["server"] for r in results} == {slow_url, fast_url}


def test_equal_servers_share_the_load_evenly(chat_server):
    a, url_a = chat_server(latency_s=0.05)
    b_, url_b = chat_server(latency_s=0.05)
    with backend(f"{url_a},{url_b}", concurrency=8) as b:
        b.search([req(i) for i in range(40)])
    assert abs(a.calls - b_.calls) <= 4 and a.calls + b_.calls == 40


def test_a_dead_server_is_avoided_and_its_requests_go_to_the_live_one(chat_server):
    live, live_url = chat_server()
    with backend([live_url, "http://127.0.0.1:9"], backoff_base_s=0.01, max_retries=3) as b:
        results = b.search([req(i) for i in range(20)])
    assert all(r.error is None for r in results)
    assert {r.meta["server"] for r in results} == {live_url}
    assert live.calls == 20


@pytest.mark.parametrize(
    "text, topk, expected",
    [
        ("Doc 1: alpha\nDoc 2: beta\nDoc 3: gamma", 2, ["alpha", "beta"]),
        ("Here are documents:\nDoc 1: alpha\n  more alpha\n\ndoc 2. beta", 5, ["alpha more alpha", "beta"]),
        ("**Doc 1:** alpha\n**Doc 2:** beta", 5, ["alpha", "beta"]),
        ("alpha line\n\n beta line \n", 5, ["alpha line", "beta line"]),
        ("", 5, []),
        ("Doc 1:\nDoc 2: beta", 5, ["beta"]),
    ],
)
def test_parse_documents(text, topk, expected):
    assert parse_documents(text, topk) == expected


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="SimulateConfig.urls"):
        SimulateConfig(urls=" , ")
    with pytest.raises(ValueError, match="SimulateConfig.answer_mode"):
        SimulateConfig(urls="http://x", answer_mode="best")
    with pytest.raises(ValueError, match=re.escape("SimulateConfig.concurrency")):
        SimulateConfig(urls="http://x", concurrency=0)


def test_a_model_name_the_server_does_not_serve_fails_at_start(chat_server):
    _, url = chat_server(model="simulator")
    with pytest.raises(
        ValueError, match=r"search.model is 'SimulationLLM_14B', but .* serves \['simulator'\]"
    ):
        backend(url, model="SimulationLLM_14B")
    # a server that does not answer yet is left to the retries of the first search
    backend("http://127.0.0.1:9", model="SimulationLLM_14B").close()


def test_the_default_prompt_is_the_released_simulators_and_the_project_set_is_selectable(chat_server):
    server, url = chat_server()
    with backend(url) as b:
        b.search([req(0)])
    with backend(url, template="project") as b:
        b.search([req(0)])
    reference, project = (body["messages"][1]["content"] for body in server.bodies)
    assert reference.startswith("You are the Google search engine.\n") and reference.endswith(
        "Useful Output:\n"
    )
    assert project.startswith("You are a search engine.\n")


def test_an_unknown_template_set_fails_at_start():
    with pytest.raises(ValueError, match=r"template 'mine': unknown template 'mine_sft_useful'"):
        backend("http://127.0.0.1:9", template="mine")
