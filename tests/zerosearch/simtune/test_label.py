"""zerosearch.simtune label: searches out of collected trajectories, the three labellers, their agreement
(against a hand count), a scripted judge and one served by the built-in server."""

from __future__ import annotations

import re

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from zerosearch.simtune.__main__ import main
from zerosearch.simtune.label import agreement, interactions, label, parse_verdict, read_jsonl, write_jsonl


def _record(index: int, answer: str, calls: list[tuple[str, list[str], str | None]], correct: bool) -> dict:
    return {
        "data_source": "toy",
        "index": index,
        "sample": 0,
        "question": f"Question {index}?",
        "golden_answers": [answer],
        "cover_em": float(correct),
        "search_calls": [{"query": q, "documents": d, "noisy": None, "error": e} for q, d, e in calls],
    }


RECORDS = [
    _record(
        0,
        "Paris",
        [("alice", ["Alice was born in Paris."], None), ("bob", ["Bob lives in Rome."], None)],
        True,
    ),
    _record(1, "Rome", [("carol", ["Carol lives in Oslo."], None)], False),
    _record(2, "Oslo", [("down", ["[search failed: 503]"], "HTTP 503"), ("empty", [], None)], False),
    _record(3, "Acme", [("dan", ["Dan works for Acme."], None)], False),
]


def test_every_executed_search_with_documents_becomes_an_interaction():
    items = interactions(RECORDS)
    assert [(x["index"], x["search"], x["query"]) for x in items] == [
        (0, 1, "alice"),
        (0, 2, "bob"),
        (1, 1, "carol"),
        (3, 1, "dan"),
    ]
    assert [x["trajectory_correct"] for x in items] == [True, True, False, False]


def test_containment_and_outcome_labels_and_their_agreement_by_hand():
    labelled = label(interactions(RECORDS), by="containment")
    assert [x["labels"]["containment"] for x in labelled] == [True, False, False, True]
    assert [x["labels"]["outcome"] for x in labelled] == [True, True, False, False]
    assert [x["label"] for x in labelled] == ["useful", "noisy", "noisy", "useful"]
    (row,) = agreement(labelled)
    # agree on 2 of 4; each labeller says useful half the time, so chance agreement is 0.5: kappa 0.
    assert row == {"pair": "containment / outcome", "both": 4, "agree": 0.5, "kappa": 0.0}
    agreed = label(interactions(RECORDS), by="agree")
    assert [x["label"] for x in agreed] == ["useful", None, "noisy", None]


def judge_app() -> Starlette:
    """A judge that says yes exactly when the correct answer appears in the search results."""

    async def chat(request: Request) -> JSONResponse:
        prompt = (await request.json())["messages"][0]["content"]
        answer = re.search(r"Correct answer: (.*)\n", prompt).group(1)
        results = prompt.split("Search results:")[1]
        verdict = "Yes." if answer in results else "No, they do not."
        message = {"role": "assistant", "content": verdict}
        return JSONResponse({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def test_a_judge_is_asked_about_each_search_and_agrees_with_containment(serve):
    labelled = label(interactions(RECORDS), by="judge", judge_url=serve(judge_app()))
    assert [x["labels"]["judge"] for x in labelled] == [True, False, False, True]
    rows = {r["pair"]: r for r in agreement(labelled)}
    assert rows["containment / judge"]["agree"] == 1.0 and rows["containment / judge"]["kappa"] == 1.0


def test_verdicts_are_read_from_the_first_yes_or_no():
    assert parse_verdict("Yes, they do.") is True and parse_verdict("no") is False
    assert parse_verdict("The documents say nothing") is None and parse_verdict("") is None


@pytest.mark.slow
def test_a_judge_served_by_the_built_in_server(sharp_model_dir, tmp_path, capsys):
    """A real model as the judge (the tiny one mostly writes neither yes nor no: counted as unclear)."""
    from zerosearch.utils.serving import ServerProcess, find_free_port

    trajectories = write_jsonl(RECORDS, tmp_path / "trajectories.jsonl")
    args = ["--model", str(sharp_model_dir), "--device", "cpu", "--num-threads", "1"]
    with ServerProcess("zerosearch.simulation.server", args, find_free_port()) as server:
        code = main(["label", "--trajectories", str(trajectories), "--out", str(tmp_path / "l.jsonl"),
                     "--judge-url", server.url])  # fmt: skip
    assert code == 0
    labelled = read_jsonl(tmp_path / "l.jsonl")
    assert len(labelled) == 4 and all(x["labels"]["judge"] in (True, False, None) for x in labelled)
    out = capsys.readouterr().out
    assert "judge" in out and "agreement containment / outcome: 50.0% of 4" in out


def test_command_line_errors_name_the_flag(tmp_path, capsys):
    trajectories = write_jsonl(RECORDS, tmp_path / "t.jsonl")
    assert (
        main(["label", "--trajectories", str(trajectories), "--out", str(tmp_path / "l"), "--by", "judge"])
        == 2
    )
    assert "--by judge needs --judge-url" in capsys.readouterr().err
    assert (
        main(["label", "--trajectories", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "l")]) == 2
    )
    assert "no such file" in capsys.readouterr().err
