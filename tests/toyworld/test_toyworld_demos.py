"""Warm-start demonstrations: the agent loop's exact format, untrained observations, no held-out people,
answers taken from the retrieved documents."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from llm_agent.observation import ObservationFormatter
from llm_agent.parsing import parse_action
from toyworld.corpus import visible_documents
from toyworld.demos import (
    DemoConfig,
    MentionFinder,
    ModelReader,
    build_demo_file,
    build_demonstrations,
    demo_segments,
    question_from_row,
)
from toyworld.engine import ToyWorld
from toyworld.questions import dataset_rows


@pytest.fixture(scope="module")
def demos(small_world, small_corpus, small_splits):
    visible = [doc.contents for doc in visible_documents(small_world, small_corpus)]
    engine = ToyWorld(small_world, visible)
    return build_demonstrations(small_world, engine, small_splits.train, DemoConfig(num_demos=200))


def test_observation_segment_is_what_the_agent_loop_appends(demos, tiny_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    formatter = ObservationFormatter(tokenizer, max_obs_length=4096)
    for row in demos[:20]:
        text = row["response_segments"][1]["text"]
        assert (
            tokenizer(text, add_special_tokens=False)["input_ids"]
            == formatter.build(row["documents"]).token_ids
        )


def test_documents_come_from_the_real_engine(demos, small_world, small_corpus):
    engine = ToyWorld(small_world, [doc.contents for doc in visible_documents(small_world, small_corpus)])
    for row in demos[:20]:
        assert row["documents"] == engine.search(row["query"], topk=5)


def test_policy_segments_parse_as_a_search_then_an_answer(demos):
    for row in demos:
        search, _, *answer_turn = row["response_segments"]
        answer = "".join(segment["text"] for segment in answer_turn)
        first, second = parse_action(search["text"]), parse_action(answer)
        assert first.is_search and first.content == row["query"]
        assert second.is_answer and second.content == row["answer"]


def test_only_the_observation_is_untrained(demos):
    for row in demos:
        assert [s["train"] for s in row["response_segments"]] == [True, False, True]
        assert "<information>" in row["response_segments"][1]["text"]
        assert all("<information>" not in s["text"] for s in row["response_segments"] if s["train"])


def test_no_held_out_person_appears_anywhere(demos, small_world):
    heldout = [p.name for p in small_world.people_in("val", "test")]
    for row in demos:
        text = row["question"] + "".join(s["text"] for s in row["response_segments"])
        assert not any(name in text for name in heldout)


def test_answers_are_entities_named_in_the_retrieved_documents(demos, small_world):
    finder = MentionFinder(small_world)
    for row in demos:
        observation = row["response_segments"][1]["text"]
        assert row["answer"] in {name for name, _ in finder.mentions(observation)}


def test_answers_are_not_the_golden_answer_most_of_the_time(demos):
    correct = sum(row["answer"] in row["golden_answers"] for row in demos)
    assert correct < 0.5 * len(demos)


def test_queries_are_weak(demos, small_world):
    full_names = {p.name for p in small_world.people}
    assert {row["query_kind"] for row in demos} <= {"last", "first", "relation", "misspelled"}
    assert not any(name in row["query"] for row in demos for name in full_names)


def test_held_out_questions_are_refused(small_world, small_corpus, small_splits):
    engine = ToyWorld(small_world, [doc.contents for doc in small_corpus])
    with pytest.raises(ValueError, match="train people"):
        build_demonstrations(small_world, engine, small_splits.test, DemoConfig(num_demos=5))


def test_question_from_row_round_trips(small_world, small_splits):
    questions = small_splits.train[:20]
    rows = dataset_rows(questions, "train")
    assert [question_from_row(small_world, row) for row in rows] == questions


def test_demo_file_is_written_from_a_built_world(built_world, tmp_path):
    out, _ = built_world
    path = build_demo_file(out, tmp_path / "demos.parquet", DemoConfig(num_demos=30))
    rows = pq.read_table(path).to_pylist()
    assert 0 < len(rows) <= 30
    assert rows[0]["prompt"][0]["role"] == "user"


def test_segments_end_with_the_closing_answer_tag():
    segments = demo_segments("Where was Zisai Tawo born?", "Zisai born", ["Doc one.", "Doc two."], "Tawo")
    assert segments[0]["text"].endswith("</search>")
    assert segments[1]["text"] == "\n\n<information>Doc 1: Doc one.\nDoc 2: Doc two.\n</information>\n\n"
    assert "".join(s["text"] for s in segments[2:]).endswith("</think>\n<answer> Tawo </answer>")


def test_the_answer_thought_is_a_reading_line_then_the_answer_is_copied():
    """The answer turn restates the question in the base model's reading layout and answers there, so the
    policy chooses where its base model learnt to read; `<answer>` repeats that choice."""
    segments = demo_segments("Where was Zisai Tawo born?", "Zisai born", ["Doc one."], "Tawo")
    assert segments[2]["text"] == (
        "<think> Question: Where was Zisai Tawo born?\nAnswer: Tawo\n</think>\n<answer> Tawo </answer>"
    )


def test_relation_only_queries_are_left_out_by_default(demos):
    assert "relation" not in {row["query_kind"] for row in demos}


def test_unknown_query_kind_is_refused(small_world, small_corpus, small_splits):
    engine = ToyWorld(small_world, [doc.contents for doc in small_corpus])
    with pytest.raises(ValueError, match="query_kinds"):
        build_demonstrations(
            small_world, engine, small_splits.train, DemoConfig(num_demos=5, query_kinds=("full",))
        )


def test_a_reader_chooses_the_answers_and_rows_it_cannot_answer_are_left_out(
    small_world, small_corpus, small_splits
):
    engine = ToyWorld(small_world, [doc.contents for doc in visible_documents(small_world, small_corpus)])
    seen = []

    def reader(pairs):
        seen.extend(pairs)
        return ["" if i % 2 else f"Answer{i}" for i in range(len(pairs))]

    rows = build_demonstrations(small_world, engine, small_splits.train, DemoConfig(num_demos=10), reader)
    assert [row["answer"] for row in rows] == [f"Answer{i}" for i in range(0, 10, 2)]
    assert [(row["question"], row["documents"]) for row in rows] == [tuple(p) for p in seen[::2]]
    assert all(
        row["response_segments"][2]["text"].endswith(f"<answer> {row['answer']} </answer>") for row in rows
    )


def test_model_reader_answers_in_the_reading_layout_one_line_each(built_world):
    out, _ = built_world
    reader = ModelReader(out / "model_init", batch_size=2)
    pairs = [("Where was Zisai Tawo born?", ["Zisai Tawo was born in Mopont."])] * 3
    answers = reader(pairs)
    assert len(answers) == 3 and len(set(answers)) == 1  # greedy: the same pair, the same answer
    assert all("\n" not in a and a == a.strip() for a in answers)
