"""zerosearch.simtune audit against scripted simulators on real HTTP servers whose behaviour the test controls:
one writes the answer into useful documents whatever the query (query-blind: gap ~0), one only when the query
names the question's entity (query-faithful: a large gap)."""

from __future__ import annotations

import json
import re

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from zerosearch.data.schema import make_row, write_dataset
from zerosearch.simtune.__main__ import main
from zerosearch.simtune.audit import audit, measure, probes
from zerosearch.templates import policy_messages

QUESTIONS = [
    ("Where was Alice Smith born?", "Paris", "Smith"),
    ("Where does Bob Jones live?", "Rome", "Jones"),
    ("Where does Carol White work?", "Acme", "White"),
    ("Where did Dan Wu study?", "Halvic", "university studied at"),
]
FILLER = "is a name that appears in many records about people places and things in this small world of ours"


def simulator(faithful: bool) -> Starlette:
    """An OpenAI chat server reading the reference simulation prompt: in useful mode it writes the answer
    (always, or only when the query holds one of the question's capitalised names); in noisy mode never."""

    async def chat(request: Request) -> JSONResponse:
        prompt = (await request.json())["messages"][-1]["content"]
        question, answer = re.search(r'question: "(.*)" whose answer is (.*)\.\n', prompt).groups()
        query = re.search(r"\nQuery: (.*)\n", prompt).group(1)
        names = re.findall(r"\b[A-Z][a-z]+\b", question)[1:]
        useful = prompt.rstrip().endswith("Useful Output:")
        writes = useful and (not faithful or any(name in query for name in names))
        lead = f"{query} lives in {answer}." if writes else f"{query} {FILLER}."
        documents = [lead] + [f"Document {i} about {query} {FILLER}." for i in range(2, 6)]
        text = "".join(f"Doc {i}: {d}\n" for i, d in enumerate(documents, 1))
        reply = {
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ]
        }
        return JSONResponse(reply)

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "scripted"}]})

    return Starlette(
        routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)]
    )


@pytest.fixture
def questions(tmp_path):
    rows = []
    for i, (question, answer, weak) in enumerate(QUESTIONS):
        row = make_row(
            question=question,
            golden_answers=[answer],
            prompt=policy_messages(question),
            data_source="toy",
            split="test",
            index=i,
        )
        rows.append({**row, "weak_query": weak})
    return str(write_dataset(rows, tmp_path / "questions.parquet"))


def test_a_query_blind_simulator_has_no_gap_and_a_faithful_one_a_large_gap(serve, questions, tmp_path):
    from matplotlib.image import imread

    urls = {"blind": serve(simulator(faithful=False)), "faithful": serve(simulator(faithful=True))}
    audits = audit(urls, questions, tmp_path / "audit", questions=4, samples=2)
    blind, faithful = audits["blind"], audits["faithful"]
    assert (blind["useful_answer_rate"], blind["noisy_answer_rate"]) == (1.0, 0.0)
    assert blind["unrelated_useful_answer_rate"] == 1.0 and blind["query_sensitivity_gap"] == 0.0
    assert (faithful["useful_answer_rate"], faithful["unrelated_useful_answer_rate"]) == (1.0, 0.0)
    assert faithful["query_sensitivity_gap"] == 1.0
    # Weak queries: three keep a name ("Smith", "Jones", "White"), one does not ("university studied at").
    assert faithful["weak_useful_answer_rate"] == 0.75 and blind["weak_useful_answer_rate"] == 1.0
    assert blind["format_doc_layout"] == blind["format_topk_documents"] == 1.0
    assert blind["diversity"] == 0.5  # a deterministic server repeats its documents across the 2 samples
    assert blind["requests"] == 4 * 4 * 2 and blind["failed"] == 0

    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert saved["simulators"]["faithful"]["query_sensitivity_gap"] == 1.0
    page = (tmp_path / "audit" / "audit.md").read_text()
    assert "| **query-sensitivity gap** (good - unrelated) | +0.00 | +1.00 |" in page
    assert "**blind**: useful mode answers; noisy mode keeps the answer out; query-blind" in page
    assert "**faithful**:" in page and "query-sensitive (gap 1.00 ± 0.00)" in page
    for name in ("answer_rates", "format"):
        assert imread(tmp_path / "audit" / f"{name}.png").shape[:2] == (350, 700)
    from zerosearch.simtune.audit import answer_figure, format_figure

    assert len(answer_figure(audits).axes[0].patches) == 2 * 4  # 2 simulators x 4 cases
    without_weak = {"blind": {**blind, "weak_useful_answer_rate": None}}
    assert len(answer_figure(without_weak).axes[0].patches) == 3  # not asked: no bar, not a bar at 0
    assert len(format_figure(audits).axes[0].patches) == 2 * 6  # 0..5 documents per reply
    replies = (tmp_path / "audit" / "replies.jsonl").read_text().splitlines()
    assert len(replies) == 2 * 32


def test_the_unrelated_query_is_the_next_questions_good_query():
    rows = [{"question": q, "golden_answers": [a]} for q, a, _ in QUESTIONS[:2]]
    kinds = {(p.row, p.kind): p.query for p in probes(rows, samples=1)}
    assert kinds[(0, "unrelated")] == QUESTIONS[1][0] and kinds[(1, "unrelated")] == QUESTIONS[0][0]
    assert (0, "weak") not in kinds  # no weak_query column: no weak probe


def test_failed_replies_are_counted_not_scored():
    ok = {"kind": "good", "mode": "useful", "row": 0, "documents": ["x Paris"], "golden_answers": ["Paris"],
          "text": "Doc 1: x Paris", "latency_s": 0.1, "error": None}  # fmt: skip
    failed = {**ok, "documents": ["[search failed: down]"], "error": "down"}
    metrics = measure([ok, failed], topk=1)
    assert metrics["failed"] == 1 and metrics["useful_answer_rate"] == 1.0
    assert metrics["query_sensitivity_gap"] is None  # no unrelated probe answered


def test_the_command_line_prints_each_simulator_and_names_bad_flags(serve, questions, tmp_path, capsys):
    url = serve(simulator(faithful=True))
    args = ["audit", "--url", url, "--name", "faithful", "--data", questions, "--out", str(tmp_path / "a")]
    assert main(args + ["--questions", "4", "--samples", "1"]) == 0
    assert "faithful: useful 100.0%, noisy 0.0%, query-sensitivity gap +1.00" in capsys.readouterr().out
    assert main(args + ["--questions", "1"]) == 2
    assert "--questions must be >= 2" in capsys.readouterr().err


def test_a_small_gap_within_its_noise_is_called_unclear():
    from zerosearch.simtune.audit import verdict

    metrics = {"useful_answer_rate": 0.125, "noisy_answer_rate": 0.125, "query_sensitivity_gap": 0.125}
    assert "unclear at this sample size (gap 0.12 ± 0.12)" in verdict(
        {**metrics, "query_sensitivity_gap_se": 0.117}
    )
    assert "query-sensitive" in verdict({**metrics, "query_sensitivity_gap_se": 0.01})
