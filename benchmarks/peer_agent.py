"""A search-free, single-turn agent loop for the trainer (`agent._target_=benchmarks.peer_agent.SingleTurnAgentLoop`).

bench_trl times the project's GRPO step on a task without a tool: each trajectory is one generation of at
most `max_tokens_per_turn` tokens, run by the project's own multi-turn loop (llm_agent's
LLMGenerationManager) with `max_turns=0`, i.e. only its final, search-free turn. The reward scores the
completion itself: the loop drops the `reward_text` column (the accepted `<answer>` action, which a task
without actions never has), so the trainer's reward decodes the policy tokens, as TRL's reward reads the
completion text.
"""

from __future__ import annotations

from typing import Any

from llm_agent.generation import GenerationConfig, LLMGenerationManager
from verl.protocol import DataProto
from verl.workers.rollout.base import RolloutEngine, RolloutSamplingParams


class _NoSearch:
    """The tool of a task without one: a single-turn loop never calls it."""

    def search(self, requests):
        raise RuntimeError("the single-turn task has no search tool")

    async def asearch(self, requests):
        raise RuntimeError("the single-turn task has no search tool")

    def close(self) -> None:
        return None


class SingleTurnAgentLoop:
    """One generation per trajectory, no tool, no stop strings (EOS or the token budget ends it).

    The trainer passes every key of its `agent` section; the search and curriculum sections (`search`,
    `val_search`, `val_search_by_source`, `curriculum`) and the search limits (`max_obs_length`, `topk`,
    `max_turns`) belong to the search agent and are ignored here."""

    def __init__(
        self,
        tokenizer,
        total_training_steps: int,
        max_prompt_length: int,
        max_tokens_per_turn: int = 32,
        max_response_length: int | None = None,
        **search_agent_keys: Any,
    ):
        self.tokenizer = tokenizer
        self.config = GenerationConfig(
            max_turns=0,
            max_prompt_length=max_prompt_length,
            max_response_length=max_response_length or max_tokens_per_turn,
            max_tokens_per_turn=max_tokens_per_turn,
            stop=(),
        )

    def rollout(
        self,
        batch: DataProto,
        engine: RolloutEngine,
        params: RolloutSamplingParams,
        global_step: int,
        validate: bool,
    ) -> tuple[DataProto, dict[str, float]]:
        prompts = [list(ids) for ids in batch.non_tensor_batch["prompt_token_ids"]]
        manager = LLMGenerationManager(engine, _NoSearch(), self.tokenizer, self.config)
        result = manager.run(prompts, [{} for _ in prompts], params)
        data = result.to_dataproto(self.tokenizer.pad_token_id)
        data.non_tensor_batch.pop("reward_text")
        metrics = {
            "env/turns/mean": result.metrics()["env/turns/mean"],
            "response_tokens/total": float(sum(len(t.response_ids) for t in result.trajectories)),
        }
        return data, metrics

    def close(self) -> None:
        return None
