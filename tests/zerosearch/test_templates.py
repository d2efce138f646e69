"""Template files, loading by name or path, and rendering of policy and simulation prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zerosearch.templates import (
    available_templates,
    check_simulation_template,
    load_template,
    policy_messages,
    render_policy_prompt,
    render_simulation_prompt,
    simulation_messages,
)

# The four prompts of the reference code, rendered there for one query, question and answer (a second copy
# of the interface text, kept as test data: an edit to the template files cannot go unnoticed).
REFERENCE = json.loads((Path(__file__).parent / "templates_data" / "reference_prompts.json").read_text())

QUESTION = "Who designed the Eiffel Tower?"
ANSWERS = ["Maurice Koechlin", "Gustave Eiffel"]
QA_LINE = 'The user is trying to answer the question: "Who designed the Eiffel Tower?" whose answer is '


def test_package_ships_the_policy_template_and_two_simulation_sets():
    cases = ["prompt_noisy", "prompt_useful", "sft_noisy", "sft_useful"]
    assert available_templates() == ["policy_default"] + [
        f"{s}_{c}" for s in ("project", "reference") for c in cases
    ]


@pytest.mark.parametrize("case", ["sft_useful", "sft_noisy", "prompt_useful", "prompt_noisy"])
def test_the_reference_set_renders_the_released_simulators_prompts_byte_for_byte(case):
    mode, label = case.split("_")
    prompt = render_simulation_prompt(
        REFERENCE["query"],
        REFERENCE["problem"],
        [REFERENCE["ground_truth"], "another alias"],
        label == "useful",
        mode,
    )
    assert prompt == REFERENCE["prompts"][case]
    assert prompt == render_simulation_prompt(
        REFERENCE["query"],
        REFERENCE["problem"],
        [REFERENCE["ground_truth"]],
        label == "useful",
        mode,
        template="reference",
    )  # the default set


def test_the_reference_files_quote_their_source_outside_the_text():
    raw = (Path(load_template.__code__.co_filename).parent / "reference_sft_useful.txt").read_text()
    assert raw.startswith("---\n") and "github.com/Alibaba-NLP/ZeroSearch" in raw.split("\n---\n")[0]
    assert load_template("reference_sft_useful").startswith("You are the Google search engine.\n")


def test_a_front_matter_block_is_not_part_of_a_user_template(tmp_path):
    path = tmp_path / "noted.txt"
    path.write_text("---\nfrom my checkpoint's repo\n---\nQ: {question}\n", encoding="utf-8")
    assert load_template(path) == "Q: {question}\n"


def test_policy_prompt_explains_the_tags_then_asks_the_question():
    prompt = render_policy_prompt("  What is the capital of France?  ")
    for tag in (
        "<think>",
        "</think>",
        "<search> query </search>",
        "<information>",
        "</information>",
        "<answer>",
        "</answer>",
    ):
        assert tag in prompt
    assert prompt.endswith("\nQuestion: What is the capital of France?\n")
    assert prompt.count("Question:") == 1


def test_policy_messages_are_one_user_message():
    messages = policy_messages(QUESTION)
    assert messages == [{"role": "user", "content": render_policy_prompt(QUESTION)}]


def test_rendering_is_brace_safe_and_single_pass():
    question = 'What does {x} print in f"{y}" when { is unmatched, and what is {query}?'
    assert render_policy_prompt(question).endswith(f"Question: {question}\n")
    prompt = render_simulation_prompt("{question} {answer}", question, ["{0}"], useful=True)
    assert "Query: {question} {answer}\n" in prompt
    assert f'question: "{question}" whose answer is {{0}}.' in prompt


@pytest.mark.parametrize(
    ("mode", "useful", "label", "has_question_line"),
    [
        ("sft", True, "Useful Output:", True),
        ("sft", False, "Noisy Output:", True),
        ("prompt", True, "Useful Output:", True),
        ("prompt", False, "Noisy Output:", False),
    ],
)
def test_simulation_prompt_layout_of_the_project_set(mode, useful, label, has_question_line):
    prompt = render_simulation_prompt(
        "eiffel tower designer", QUESTION, ANSWERS, useful=useful, mode=mode, template="project"
    )
    lines = prompt.split("\n")
    assert lines[0] == "You are a search engine."
    assert lines[-1] == label
    assert lines[-2] == "Query: eiffel tower designer"
    task = prompt.index("five useful documents" if useful else "five noisy documents")
    length = prompt.index("about 30 words")
    if has_question_line:
        assert task < prompt.index(QA_LINE + "Maurice Koechlin.") < length
    else:
        assert QUESTION not in prompt and "Koechlin" not in prompt
        assert "The user is trying to answer" not in prompt
    assert length < prompt.index("Query: eiffel tower designer")


@pytest.mark.parametrize("useful", [True, False])
def test_prompt_mode_adds_one_worked_example_of_five_documents(useful):
    prompt = render_simulation_prompt(
        "q", QUESTION, ANSWERS, useful=useful, mode="prompt", template="project"
    )
    positions = [prompt.index(f"\nDoc {k}: ") for k in range(1, 6)]
    assert positions == sorted(positions)
    assert prompt.index("about 30 words") < positions[0] and positions[-1] < prompt.index("Query: q")
    assert "Doc 6:" not in prompt


def test_sft_mode_has_no_example_documents():
    assert "Doc 1:" not in render_simulation_prompt("q", QUESTION, ANSWERS, useful=True, mode="sft")


def test_answer_mode_all_lists_every_golden_answer():
    prompt = render_simulation_prompt("q", QUESTION, ANSWERS, useful=False, answer_mode="all")
    assert QA_LINE + "Maurice Koechlin, Gustave Eiffel." in prompt


def test_a_single_string_golden_answer_is_accepted():
    assert QA_LINE + "Koechlin." in render_simulation_prompt("q", QUESTION, "Koechlin", useful=True)


def test_simulation_messages_have_an_empty_system_message():
    messages = simulation_messages("q", QUESTION, ANSWERS, useful=True, mode="prompt")
    prompt = render_simulation_prompt("q", QUESTION, ANSWERS, useful=True, mode="prompt")
    assert messages == [{"role": "system", "content": ""}, {"role": "user", "content": prompt}]


def test_empty_golden_answers_fail_when_the_template_needs_an_answer():
    with pytest.raises(ValueError, match="needs a golden answer"):
        render_simulation_prompt("q", QUESTION, [], useful=True, mode="sft")


def test_empty_golden_answers_are_fine_for_the_prompt_noisy_template():
    for template in ("reference", "project"):
        prompt = render_simulation_prompt("q", QUESTION, [], useful=False, mode="prompt", template=template)
        assert prompt.rstrip().endswith("Noisy Output:")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "few_shot"}, "mode must be one of sft, prompt"),
        ({"answer_mode": "random"}, "answer_mode must be one of first, all"),
        ({"query": "   "}, "query is empty"),
    ],
)
def test_bad_simulation_arguments_are_named(kwargs, message):
    args = {"query": "q", "question": QUESTION, "golden_answers": ANSWERS, "useful": True, **kwargs}
    with pytest.raises(ValueError, match=message):
        render_simulation_prompt(**args)


def test_custom_template_file_is_loaded_verbatim_and_rendered(tmp_path):
    path = tmp_path / "my_checkpoint_template.txt"
    path.write_text("Q: {question} | keep {this} and { alone\n", encoding="utf-8")
    assert load_template(path) == "Q: {question} | keep {this} and { alone\n"
    assert render_policy_prompt("why?", template=str(path)) == "Q: why? | keep {this} and { alone\n"


def test_custom_simulation_templates_one_file_per_case_by_placeholder(tmp_path):
    for label in ("useful", "noisy"):
        (tmp_path / f"sim_sft_{label}.txt").write_text(f"{label}: {{query}} / {{answer}}", encoding="utf-8")
    template = str(tmp_path / "sim_{mode}_{label}.txt")
    assert (
        render_simulation_prompt("q", QUESTION, ANSWERS, useful=True, template=template)
        == "useful: q / Maurice Koechlin"
    )
    assert (
        render_simulation_prompt("q", QUESTION, ANSWERS, useful=False, template=template)
        == "noisy: q / Maurice Koechlin"
    )
    check_simulation_template(template, "sft")
    with pytest.raises(FileNotFoundError, match="sim_prompt_useful.txt"):
        check_simulation_template(template, "prompt")  # the set has no prompt-mode files
    with pytest.raises(FileNotFoundError, match="unknown template 'mine_sft_useful'"):
        check_simulation_template("mine", "sft")


def test_custom_policy_template_without_question_placeholder_is_rejected(tmp_path):
    path = tmp_path / "broken.txt"
    path.write_text("Answer the question.", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no \{question\} placeholder"):
        render_policy_prompt("why?", template=path)


def test_policy_template_with_an_answer_placeholder_is_rejected(tmp_path):
    path = tmp_path / "leaky.txt"
    path.write_text("Question: {question} (answer: {answer})", encoding="utf-8")
    with pytest.raises(ValueError, match=r"needs a value for \{answer\}"):
        render_policy_prompt("why?", template=path)


def test_missing_template_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_template(tmp_path / "nope.txt")


def test_unknown_template_name_lists_the_available_ones():
    with pytest.raises(FileNotFoundError, match="available: policy_default, project_prompt_noisy"):
        load_template("policy_fancy")
