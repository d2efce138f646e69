"""A tiny policy that searches: end-to-end runs with it exercise the search path (simulator calls, noise draws,
observations), which an untrained model, never closing a search tag, leaves idle."""

from __future__ import annotations

import pytest

from tests.tiny_fit import fit_tiny_model
from tests.verl.trainer.cli_runs import QUESTIONS


@pytest.fixture(scope="session")
def searching_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model fitted to answer the policy prompt with "<search> {question} </search>": sampled at
    temperature 1 it searches in most turns, with varied queries."""
    from transformers import AutoTokenizer

    from zerosearch.templates import policy_messages

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    examples = []
    for question, _ in QUESTIONS:
        prompt = tokenizer.apply_chat_template(
            policy_messages(question), add_generation_prompt=True, tokenize=False
        )
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target = tokenizer(f"<search> {question} </search>", add_special_tokens=False)["input_ids"]
        examples.append((prompt_ids + target, [-100] * len(prompt_ids) + target))
    return fit_tiny_model(tiny_model_dir, examples, 40, tmp_path_factory.mktemp("searching-model"))
