"""The retriever server over a small corpus, started for real on 127.0.0.1 (BM25 and dense)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from zerosearch.utils.serving import ServerProcess, find_free_port

CORPUS = [
    "Alice Smith was born in Paris and studied chemistry at the Sorbonne.",
    "Bob Jones lives in Rome, where he works as a baker for Acme Bread.",
    "The Zephyr Bridge crosses the river Lenn and opened to traffic in 1932.",
    "Carla Mendez founded Orbital Gardens, a company that grows vegetables on satellites.",
    "The town of Quillby is famous for its annual cheese-rolling festival.",
    "Dmitri Volkov composed the opera Winter Lanterns while living in Oslo.",
]
# (query, index of the document that answers it)
QUERIES = [
    ("Where was Alice Smith born?", 0),
    ("Who works as a baker in Rome?", 1),
    ("When did the Zephyr Bridge open?", 2),
    ("Who founded Orbital Gardens?", 3),
    ("Quillby cheese festival", 4),
    ("composer of Winter Lanterns opera", 5),
]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"doc{i}", "contents": doc}) + "\n" for i, doc in enumerate(CORPUS))
    )
    return path


def start(corpus_file, retriever: str):
    args = [
        "--corpus",
        str(corpus_file),
        "--retriever",
        retriever,
        "--topk-default",
        "3",
        "--max-topk",
        "50",
        "--max-queries",
        "32",
    ]
    return ServerProcess("zerosearch.retrieval.server", args, find_free_port(), env={"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def bm25(corpus_file):
    with start(corpus_file, "bm25") as proc:
        yield proc


def retrieve(server, body) -> httpx.Response:
    return httpx.post(f"{server.url}/retrieve", json=body, timeout=60)


def test_health_reports_the_index(bm25):
    assert httpx.get(f"{bm25.url}/health", timeout=10).json() == {
        "status": "ok",
        "retriever": "bm25",
        "documents": len(CORPUS),
    }


def test_batch_form_with_scores_finds_the_right_documents_in_score_order(bm25):
    r = retrieve(bm25, {"queries": [q for q, _ in QUERIES], "topk": 3, "return_scores": True})
    assert r.status_code == 200
    result = r.json()["result"]
    assert len(result) == len(QUERIES)
    for (_, want), hits in zip(QUERIES, result, strict=True):
        assert len(hits) == 3
        assert hits[0]["document"] == {"id": str(want), "contents": CORPUS[want]}
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)


def test_batch_form_without_scores_returns_bare_documents(bm25):
    r = retrieve(bm25, {"queries": ["Who founded Orbital Gardens?"], "topk": 2})
    (hits,) = r.json()["result"]
    assert len(hits) == 2
    assert hits[0] == {"id": "3", "contents": CORPUS[3]}


def test_topk_defaults_to_the_server_setting(bm25):
    (hits,) = retrieve(bm25, {"queries": ["Paris"]}).json()["result"]
    assert len(hits) == 3


def test_single_form_returns_texts(bm25):
    r = retrieve(bm25, {"query": "Where was Alice Smith born?", "top_k": 2})
    assert r.status_code == 200
    hits = r.json()
    assert isinstance(hits, list) and len(hits) == 2
    assert hits[0]["text"] == CORPUS[0]
    assert hits[0]["score"] >= hits[1]["score"]


def test_concurrent_clients_each_get_their_own_answer(bm25):
    jobs = [QUERIES[i % len(QUERIES)] for i in range(24)]

    async def send_all():
        async with httpx.AsyncClient(timeout=60) as client:
            replies = await asyncio.gather(
                *[
                    client.post(
                        f"{bm25.url}/retrieve", json={"queries": [q], "topk": 1, "return_scores": True}
                    )
                    for q, _ in jobs
                ]
            )
        return [r.json()["result"][0][0]["document"]["id"] for r in replies]

    assert asyncio.run(send_all()) == [str(want) for _, want in jobs]


BAD_BODIES = [
    ("{not json", 400, None),
    ([1, 2], 400, None),
    ({"question": "x"}, 400, None),
    ({"queries": []}, 400, "queries"),
    ({"queries": "Paris"}, 400, "queries"),
    ({"queries": [1]}, 400, "queries"),
    ({"queries": ["  "]}, 400, "queries"),
    ({"queries": ["Paris"], "topk": 0}, 400, "topk"),
    ({"queries": ["Paris"], "topk": 51}, 400, "topk"),
    ({"queries": ["Paris"], "topk": "3"}, 400, "topk"),
    ({"queries": ["Paris"], "return_scores": "yes"}, 400, "return_scores"),
    ({"queries": ["Paris"] * 33}, 413, "queries"),
    ({"queries": ["Paris " * 1000]}, 413, "queries"),
    ({"query": 5}, 400, "query"),
    ({"query": "Paris", "top_k": -1}, 400, "top_k"),
    ('{"queries": ["Paris"], "topk": ' + "9" * 5000 + "}", 400, None),  # longer than Python parses
    ("[" * 1000 + "]" * 1000, 400, None),  # nested deeper than the parser goes
]


@pytest.mark.parametrize(("body", "status", "param"), BAD_BODIES)
def test_bad_body_is_rejected_with_a_clear_error(bm25, body, status, param):
    content = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(
        f"{bm25.url}/retrieve", content=content, headers={"content-type": "application/json"}, timeout=30
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param
    assert error["message"]


def test_an_oversized_body_is_refused_while_it_streams_in(corpus_file):
    """No Content-Length (a chunked body): the 413 comes once the limit is passed, before the rest is read."""
    args = ["--corpus", str(corpus_file), "--max-body-bytes", "10000"]
    with ServerProcess(
        "zerosearch.retrieval.server", args, find_free_port(), env={"OMP_NUM_THREADS": "1"}
    ) as srv:
        sent = 0

        def chunks():
            nonlocal sent
            for _ in range(10_000):  # up to 10 MB, if the server kept reading
                sent += 1000
                yield b" " * 1000

        r = httpx.post(f"{srv.url}/retrieve", content=chunks(), timeout=60)
        declared = httpx.post(f"{srv.url}/retrieve", content=b" " * 20_000, timeout=60)
    assert r.status_code == 413 and "over this server's limit of 10000" in r.json()["error"]["message"]
    assert sent < 10_000_000
    assert declared.status_code == 413 and declared.json()["error"]["code"] == 413


def test_server_keeps_serving_after_bad_bodies(bm25):
    assert retrieve(bm25, {"queries": []}).status_code == 400
    assert httpx.post(f"{bm25.url}/retrieve", content=b"\xff\xfe", timeout=30).status_code == 400
    (hits,) = retrieve(bm25, {"queries": ["Quillby cheese"], "topk": 1}).json()["result"]
    assert hits[0]["id"] == "4"


@pytest.mark.slow  # loads sentence-transformers and MiniLM in the server: ~12 s idle, more on a busy CPU
def test_dense_retriever_finds_documents_by_meaning(corpus_file):
    # Paraphrases that share few or no words with their document: what MiniLM adds over BM25.
    queries = [
        ("Which city is the birthplace of the chemist Alice?", 0),
        ("bakery employee in Italy", 1),
        ("a firm farming crops in orbit", 3),
    ]
    with start(corpus_file, "dense") as dense:
        assert httpx.get(f"{dense.url}/health", timeout=10).json()["retriever"] == "dense"
        result = retrieve(
            dense, {"queries": [q for q, _ in queries], "topk": 3, "return_scores": True}
        ).json()
        single = retrieve(dense, {"query": queries[2][0], "top_k": 1}).json()
    for (_, want), hits in zip(queries, result["result"], strict=True):
        assert hits[0]["document"]["id"] == str(want)
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
    assert single[0]["text"] == CORPUS[3]
