"""The reading probe: answers picked from the documents a full-name query finds."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from toyworld.__main__ import main
from toyworld.demos import SEARCH_THOUGHT, observation_text
from toyworld.reading import format_result, measure_reading, read_answer, reading_prompt


@pytest.fixture(scope="module")
def tokenizer(built_world):
    out, _ = built_world
    return AutoTokenizer.from_pretrained(str(out / "model_init"))


def test_policy_prompt_ends_where_the_demonstrations_begin_the_answer_turn(tokenizer):
    docs = ["Pulou Waitra studied at Zovasversa.", "Pulou Waitra works for Dipencorp."]
    ids = reading_prompt(tokenizer, "policy", "Where did Pulou Waitra study?", "Pulou Waitra studied", docs)
    text = tokenizer.decode(ids)
    assert "Question: Where did Pulou Waitra study?" in text
    assert text.endswith(SEARCH_THOUGHT + "<search> Pulou Waitra studied </search>" + observation_text(docs))


def test_the_policy_answer_is_the_answer_tag_not_the_thought():
    turn = (
        "<think> Question: Where did Pulou Waitra study?\nAnswer: Dipencorp\n</think>\n<answer> Zovasversa "
    )
    assert read_answer("policy", turn) == "Zovasversa"
    assert read_answer("policy", "<think> no answer yet") == ""
    assert read_answer("plain", " Zovasversa ") == "Zovasversa"


def test_plain_prompt_is_a_reading_line_up_to_its_answer(tokenizer):
    docs = ["Pulou Waitra studied at Zovasversa."]
    ids = reading_prompt(tokenizer, "plain", "Where did Pulou Waitra study?", "unused", docs)
    assert (
        tokenizer.decode(ids)
        == "Doc 1: Pulou Waitra studied at Zovasversa.\nQuestion: Where did Pulou Waitra study?\nAnswer:"
    )


@pytest.mark.parametrize("split", ["heldout", "train"])
def test_shares_are_measured_on_questions_whose_documents_hold_the_answer(built_world, split):
    out, _ = built_world
    result = measure_reading(out, out / "model_init", split=split, num_questions=6)
    assert result.questions == 6
    for share in (result.exact_match, result.copied, result.right_type):
        assert 0.0 <= share <= 1.0
    assert "6 single-hop questions" in format_result(result)


def test_cli_refuses_an_unknown_format(built_world, capsys):
    out, _ = built_world
    code = main(["reading", "--world", str(out), "--model", str(out / "model_init"), "--format", "chat"])
    assert code == 2
    assert "--format must be one of policy, plain" in capsys.readouterr().err


def test_cli_names_a_missing_model(built_world, capsys):
    out, _ = built_world
    assert main(["reading", "--world", str(out), "--model", str(out / "nosuch")]) == 2
    assert "--model: no such model folder" in capsys.readouterr().err


def test_cli_names_a_folder_that_is_not_a_world(tmp_path, capsys):
    assert main(["reading", "--world", str(tmp_path), "--model", str(tmp_path)]) == 2
    assert "world.json not found" in capsys.readouterr().err
