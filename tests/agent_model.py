"""A tiny policy that already searches: the tiny model fitted to two full trajectories (search, then answer
after the observation) over a four-document BM25 corpus; the agent-loop tests (transformers and vLLM) and the
evaluation tests run it (the fixtures `agent_backend` and `agent_model_dir` in tests/conftest.py)."""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from llm_agent.generation import GenerationConfig
from llm_agent.observation import ObservationFormatter
from llm_agent.search import SearchRequest
from tests.tiny_fit import fit_tiny_model

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


def fit_agent_model(tiny_model_dir, backend, out):
    """The tiny model fine-tuned on the CASES' full trajectories (loss on policy tokens only), saved to out."""
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
    return fit_tiny_model(tiny_model_dir, examples, 40, out)


def eval_case(tmp_path, corpus) -> tuple[str, dict, dict]:
    """For zerosearch.eval: the CASES as a test file (data_source nq), the corpus as its local engine, and the
    agent limits the model was fitted under."""
    from zerosearch.data.schema import make_row, write_dataset

    rows = [
        make_row(
            question=question,
            golden_answers=[answer],
            prompt=[{"role": "user", "content": f"Question: {question}"}],
            data_source="nq",
            split="test",
            index=i,
        )
        for i, (question, _, answer) in enumerate(CASES)
    ]
    data = str(write_dataset(rows, tmp_path / "test.parquet"))
    search = {"name": "local", "corpus": str(corpus)}
    limits = {"max_turns": 2, "max_tokens_per_turn": 24, "max_obs_length": 64, "device": "cpu"}
    return data, search, limits


def read_trajectories(out) -> list[dict]:
    """The records an evaluation wrote to out/trajectories.jsonl."""
    return [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
