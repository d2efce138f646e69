"""End to end: the real HF rollout and the real local BM25 search backend under the generation manager.

An untrained tiny model never writes action tags, so the fixtures (conftest.py) first fine-tune the tiny model
for a few dozen steps on two full trajectories (search, then answer after the observation); greedy decoding
then replays them, through the real stop strings, parser, search backend and observation formatting.
"""

from __future__ import annotations

from llm_agent.generation import LLMGenerationManager
from llm_agent.observation import ObservationFormatter
from llm_agent.search import SearchRequest
from tests.agent_model import CASES, CONFIG, chat_prompt
from verl.workers.rollout.base import RolloutSamplingParams
from verl.workers.rollout.hf import HFRollout


class RecordingHFRollout(HFRollout):
    """The real engine, also keeping every output it returned."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.returned = []

    def generate(self, prompts, params):
        outputs = super().generate(prompts, params)
        self.returned.append(([list(p) for p in prompts], outputs))
        return outputs


def test_hf_rollout_end_to_end_masks_are_sampled_tokens_and_observations_are_real(
    agent_model_dir, agent_backend
):
    rollout = RecordingHFRollout(agent_model_dir, device="cpu")
    tokenizer = rollout.tokenizer
    manager = LLMGenerationManager(rollout, agent_backend, tokenizer, CONFIG)
    prompts = [chat_prompt(tokenizer, q) for q, _, _ in CASES]
    result = manager.run(
        prompts,
        [{"question": q, "golden_answers": (a,)} for q, _, a in CASES],
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
        (docs,) = agent_backend.search([SearchRequest(query=query, topk=CONFIG.topk)])
        assert [t for t, m in zip(traj.response_ids, traj.response_mask, strict=True) if not m] == (
            formatter.build(docs.documents).token_ids
        )
        text = tokenizer.decode(traj.response_ids, skip_special_tokens=False)
        assert text.startswith(f"<search> {query} </search>\n\n<information>Doc 1: ")
        assert text.endswith(f"</information>\n\n<answer> {answer} </answer>")
    assert [len(inputs) for inputs, _ in rollout.returned] == [2, 2]
