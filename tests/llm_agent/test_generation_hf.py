"""End to end: the real HF rollout and the real local BM25 search backend under the generation manager.

An untrained tiny model never writes action tags, so the test first fine-tunes the tiny model for a few
dozen steps on two full trajectories (search, then answer after the observation); greedy decoding then
replays them, through the real stop strings, parser, search backend and observation formatting.
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from llm_agent.generation import GenerationConfig, LLMGenerationManager
from llm_agent.observation import ObservationFormatter
from llm_agent.search import SearchRequest
from tests.tiny_fit import fit_tiny_model
from verl.workers.rollout.base import RolloutSamplingParams
from verl.workers.rollout.hf import HFRollout
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


class RecordingHFRollout(HFRollout):
    """The real engine, also keeping every output it returned."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.returned = []

    def generate(self, prompts, params):
        outputs = super().generate(prompts, params)
        self.returned.append(([list(p) for p in prompts], outputs))
        return outputs


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


def test_hf_rollout_end_to_end_masks_are_sampled_tokens_and_observations_are_real(agent_model_dir, backend):
    rollout = RecordingHFRollout(agent_model_dir, device="cpu")
    tokenizer = rollout.tokenizer
    manager = LLMGenerationManager(rollout, backend, tokenizer, CONFIG)
    prompts = [chat_prompt(tokenizer, q) for q, _, _ in CASES]
    result = manager.run(
        prompts,
        [q for q, _, _ in CASES],
        [[a] for _, _, a in CASES],
        0.0,
        RolloutSamplingParams(temperature=0),
    )
    formatter = ObservationFormatter(tokenizer, CONFIG.max_obs_length)
    for k, (traj, (_, query, answer)) in enumerate(zip(result.trajectories, CASES, strict=True)):
        assert (traj.stats.turns, traj.stats.searches, traj.stats.answered) == (2, 1, True)
        # Policy tokens: exactly what the engine returned for this trajectory, turn after turn.
        sampled = []
        for inputs, outputs in rollout.returned:
            for prompt, (out,) in zip(inputs, outputs, strict=True):
                if prompt[: len(prompts[k])] == prompts[k]:
                    sampled.extend(out.token_ids)
        assert [t for t, m in zip(traj.response_ids, traj.response_mask, strict=True) if m] == sampled
        # Environment tokens: exactly the real backend's observation for this trajectory's query.
        (docs,) = backend.search([SearchRequest(query=query, topk=CONFIG.topk)])
        assert [t for t, m in zip(traj.response_ids, traj.response_mask, strict=True) if not m] == (
            formatter.build(docs.documents).token_ids
        )
        text = tokenizer.decode(traj.response_ids, skip_special_tokens=False)
        assert text.startswith(f"<search> {query} </search>\n\n<information>Doc 1: ")
        assert text.endswith(f"</information>\n\n<answer> {answer} </answer>")
    assert [len(inputs) for inputs, _ in rollout.returned] == [2, 2]
