"""The agent-loop end-to-end fixtures: a tiny BM25 corpus and a tiny model fitted to two full trajectories
(search, then answer after the observation), shared by the transformers and vLLM rollout tests."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from llm_agent.generation import GenerationConfig
from llm_agent.observation import ObservationFormatter
from llm_agent.search import SearchRequest
from tests.tiny_fit import fit_tiny_model
from zerosearch.search.local import LocalBackend, LocalConfig

CORPUS = [
    "Alice Smith was born in Paris.",
    "Bob Jones lives in Rome.",
    "Acme Corporation makes bricks.",
    "Carol White was born in Oslo.",
]
CASES = [
    ("Where was Alice Smith born?", "Alice Smith", "Paris"),
    ("Where does Bob Jones live?", "Bob Jones", "Rome"),
]
CONFIG = GenerationConfig(max_turns=2, max_obs_length=64, max_tokens_per_turn=24, max_response_length=200)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def chat_prompt(tokenizer, question: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Question: {question}"}], tokenize=False, add_generation_prompt=True
    )
    return encode(tokenizer, text)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"contents": doc}) + "\n" for doc in CORPUS))
    with LocalBackend(LocalConfig(corpus=corpus)) as local:
        yield local


@pytest.fixture(scope="module")
def agent_model_dir(tiny_model_dir, backend, tmp_path_factory):
    """The tiny model fine-tuned on the two full trajectories (loss on policy tokens only)."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    formatter = ObservationFormatter(tokenizer, CONFIG.max_obs_length)
    examples = []
    for question, query, answer in CASES:
        (result,) = backend.search([SearchRequest(query=query, topk=CONFIG.topk)])
        parts = [
            (chat_prompt(tokenizer, question), 0),
            (encode(tokenizer, f"<search> {query} </search>"), 1),
            (formatter.build(result.documents).token_ids, 0),
            (encode(tokenizer, f"<answer> {answer} </answer>"), 1),
        ]
        ids = [t for part, _ in parts for t in part]
        labels = [t if loss else -100 for part, loss in parts for t in part]
        examples.append((ids, labels))
    return fit_tiny_model(tiny_model_dir, examples, 40, tmp_path_factory.mktemp("agent-model"))
