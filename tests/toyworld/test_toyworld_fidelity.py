"""The simulator-fidelity probe: real engine vs simulator answer rates per query kind."""

from __future__ import annotations

import pytest

from toyworld.__main__ import main
from toyworld.fidelity import answer_documents, format_table, measure_fidelity
from toyworld.simtune import PERSON_QUERY_KINDS


def test_answer_documents_counts_whole_word_answers_once_per_document():
    docs = [
        "Pulou Waitra studied at Zovasversa. Zovasversa is old.",
        "Pulou Kira works for Zovas.",
        "Pulou Naipro studied at Zovasversity.",
    ]
    assert answer_documents(docs, ["Zovasversa", "Zovas"]) == 2
    assert answer_documents(docs, ["Zovasv"]) == 0


@pytest.fixture(scope="module")
def fidelity_rows(built_world):
    out, _ = built_world
    return measure_fidelity(out, out / "model_init", num_questions=12, temperature=0.0, max_tokens=24)


def test_every_query_kind_is_measured_on_the_same_questions(fidelity_rows):
    assert [r.kind for r in fidelity_rows] == list(PERSON_QUERY_KINDS)
    assert {r.questions for r in fidelity_rows} == {12}
    for r in fidelity_rows:
        assert 0.0 <= r.simulator_repeats <= r.simulator <= 1.0


def test_the_real_engine_answers_full_name_queries_more_than_similar_name_ones(fidelity_rows):
    real = {r.kind: r.real for r in fidelity_rows}
    assert real["full"] > 0.8
    assert real["full"] > real["similar_name"]


def test_table_lists_each_kind(fidelity_rows):
    table = format_table(fidelity_rows)
    for kind in PERSON_QUERY_KINDS:
        assert kind in table
    assert "12 single-hop training questions" in table


def test_cli_names_a_folder_that_is_not_a_world(tmp_path, capsys):
    assert main(["fidelity", "--world", str(tmp_path), "--simulator", str(tmp_path)]) == 2
    assert "world.json not found" in capsys.readouterr().err


def test_cli_refuses_zero_questions(built_world, capsys):
    out, _ = built_world
    code = main(["fidelity", "--world", str(out), "--simulator", str(out / "model_init"), "--questions", "0"])
    assert code == 2
    assert "--questions must be >= 1" in capsys.readouterr().err


def test_cli_names_a_missing_simulator(built_world, capsys):
    out, _ = built_world
    assert main(["fidelity", "--world", str(out), "--simulator", str(out / "nosuch")]) == 2
    assert "--simulator: no such model folder" in capsys.readouterr().err
