"""The google backend against a real fake-SerpAPI server on 127.0.0.1; the API key must never leak."""

from __future__ import annotations

import dataclasses

import pytest

from llm_agent.search import SearchRequest
from zerosearch.search import GoogleBackend, GoogleConfig, SearchBackendError

pytestmark = pytest.mark.timeout(60)

KEY = "sk-serp-7f3a9c1e5b2d4680"


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    return KEY


def google(url, **options) -> GoogleBackend:
    return GoogleBackend(GoogleConfig(base_url=url, backoff_base_s=0.01, **options))


def test_documents_are_title_and_snippet_cut_at_topk(serp_server, api_key):
    server, url = serp_server()
    with google(url) as b:
        results = b.search(
            [SearchRequest("capital of france", topk=3), SearchRequest("tallest peak", topk=1)]
        )
    assert results[0].documents == [
        f"Result {i} for capital of france\nSnippet {i} about capital of france." for i in (1, 2, 3)
    ]
    assert results[1].documents == ["Result 1 for tallest peak\nSnippet 1 about tallest peak."]
    assert all(r.noisy is None and r.error is None for r in results)
    params = server.bodies[0]
    assert (params["q"], params["api_key"], params["engine"], params["num"]) == (
        "capital of france",
        KEY,
        "google",
        "3",
    )
    assert (params["gl"], params["hl"]) == ("us", "en") and "location" not in params


def test_answer_box_comes_first_when_present(serp_server, api_key):
    _, url = serp_server(with_answer_box=True)
    with google(url) as b:
        (with_box,) = b.search([SearchRequest("meaning of life", topk=2)])
    with google(url, use_answer_box=False) as b:
        (without_box,) = b.search([SearchRequest("meaning of life", topk=2)])
    assert with_box.documents == [
        "Answer for meaning of life\n42",
        "Result 1 for meaning of life\nSnippet 1 about meaning of life.",
    ]
    assert without_box.documents[0].startswith("Result 1")


def test_the_key_never_shows_in_errors_or_repr(serp_server, api_key):
    server, url = serp_server(fail_status=401)  # the fake echoes the key in its error body
    b = google(url, max_retries=1)
    try:
        with pytest.raises(SearchBackendError) as info:
            b.search([SearchRequest("anything")])
        assert server.calls == 1  # 401 is not retried
        failure = info.value.results[0]
        assert "HTTP 401" in failure.error and "Invalid API key: ***" in failure.error
        texts = [
            str(info.value),
            failure.error,
            *failure.documents,
            repr(b),
            repr(b.config),
            str(dataclasses.asdict(b.config)),
        ]
        assert all(KEY not in text for text in texts)
    finally:
        b.close()


def test_the_key_never_shows_when_the_server_is_unreachable(api_key):
    with google("http://127.0.0.1:9", max_retries=0, max_failure_rate=1.0) as b:
        (result,) = b.search([SearchRequest("anything")])
    assert result.error.startswith("connection error") and KEY not in result.error


def test_missing_key_names_the_environment_variable(monkeypatch):
    monkeypatch.delenv("MY_SERP_KEY", raising=False)
    with pytest.raises(ValueError, match="MY_SERP_KEY"):
        GoogleBackend(GoogleConfig(api_key_env="MY_SERP_KEY"))


def test_key_is_read_from_the_configured_variable(serp_server, monkeypatch):
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    monkeypatch.setenv("TEAM_SERP_KEY", "other-key-123")
    server, url = serp_server()
    with google(url, api_key_env="TEAM_SERP_KEY", gl="de", hl=None, location="Berlin") as b:
        b.search([SearchRequest("wetter")])
    params = server.bodies[0]
    assert params["api_key"] == "other-key-123" and params["gl"] == "de" and params["location"] == "Berlin"
    assert "hl" not in params


def test_a_query_without_results_is_an_empty_page_not_an_error(serp_server, api_key):
    _, url = serp_server(no_results=True)
    with google(url) as b:
        (result,) = b.search([SearchRequest("zxqv qqq")])
    assert result.documents == [] and result.error is None and result.meta["empty_output"] is True


def test_the_request_budget_stops_before_it_is_exceeded(serp_server, api_key):
    from zerosearch.search.google import SearchBudgetError

    server, url = serp_server()
    with google(url, max_requests=3) as b:
        b.search([SearchRequest("a"), SearchRequest("b")])
        with pytest.raises(
            SearchBudgetError, match=r"max_requests=3 would be exceeded \(2 sent, 2 more asked\)"
        ):
            b.search([SearchRequest("c"), SearchRequest("d")])
        b.search([SearchRequest("e")])  # what still fits is sent
    assert server.calls == 3


def test_the_estimate_names_requests_cost_and_budget():
    config = GoogleConfig(max_requests=5000, cost_per_1k_requests=15.0)
    assert config.estimate(3500) == "up to 3,500 SerpAPI requests (~$52.50); budget max_requests=5000"
    assert GoogleConfig().estimate(10) == "up to 10 SerpAPI requests; no budget set"
