"""Multi-turn rollouts with a search tool (docs/design.md §4, step 2).

`LLMGenerationManager.run` takes a batch of prompts (already repeated `n` times by the trainer) and runs
every trajectory through think / search / answer turns:

1. Every active trajectory generates together: ONE `rollout.generate` call per turn, on prompt + response
   so far, stopping at `</search>`, `</answer>` or EOS, with at most `max_tokens_per_turn` new tokens.
2. The FIRST complete action in that turn's generated text (never in earlier observations) decides:
   answer -> the trajectory is done; search -> its query goes to the search backend with this trajectory's
   own row context (opaque here: the domain's; all of a turn's searches in one `search()` call), and the
   observation block is appended; anything else -> the invalid-action feedback is
   appended (or, when the generation ended with EOS, the trajectory is done: the policy chose to stop).
3. After `max_turns` search rounds comes one final generation in which a search is not executed: a search
   there ends the trajectory unanswered.

Token-faithful: the ids a trajectory holds are the sampled ids, EOS and stop tokens included; only
environment text (observations, feedback) is tokenized, once. Environment tokens get response_mask 0.
`max_response_length` caps the whole response (policy and environment tokens): a generation that would
cross it is cut at the budget and ends the trajectory, and an observation or feedback that would not fit
ends the trajectory without being appended.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from llm_agent.observation import ObservationFormatter
from llm_agent.parsing import DEFAULT_MAX_QUERY_CHARS, invalid_action_feedback, parse_action
from llm_agent.search import SearchBackend, SearchRequest
from llm_agent.trajectory import AgentRolloutResult, SearchCall, Trajectory
from verl.utils.seed import derive_seed
from verl.workers.rollout.base import RolloutSamplingParams


@dataclass
class GenerationConfig:
    """Limits of the agent loop (names follow the reference's Hydra keys).

    max_turns: search rounds allowed before the final, search-free generation (5 in the paper).
    max_prompt_length: longest prompt accepted, in tokens.
    max_response_length: total response budget in tokens across all turns, observations included.
    max_obs_length: tokens per observation (2048 in the paper); documents are cut, never the closing tag.
    max_tokens_per_turn: new tokens per generation (500 in the paper).
    topk: documents requested per search.
    max_query_chars: longer queries are invalid actions (a runaway generation, not a query).
    stop: strings that end a turn's generation (they stay in the response).
    """

    max_turns: int = 5
    max_prompt_length: int = 4096
    max_response_length: int = 4096
    max_obs_length: int = 2048
    max_tokens_per_turn: int = 500
    topk: int = 5
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    stop: tuple[str, ...] = ("</search>", "</answer>")

    def __post_init__(self):
        self.stop = tuple(self.stop)
        for key in (
            "max_prompt_length",
            "max_response_length",
            "max_obs_length",
            "max_tokens_per_turn",
            "topk",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.max_turns < 0:
            raise ValueError(f"max_turns must be >= 0, got {self.max_turns}")
        if self.max_query_chars < 1:
            raise ValueError(f"max_query_chars must be >= 1, got {self.max_query_chars}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")


class LLMGenerationManager:
    """Runs batches of search-agent trajectories against a rollout engine (anything with
    `generate(prompts, params)`) and a `SearchBackend`."""

    def __init__(self, rollout, search: SearchBackend, tokenizer, config: GenerationConfig | None = None):
        self.rollout = rollout
        self.search = search
        self.tokenizer = tokenizer
        self.config = config or GenerationConfig()
        self.observations = ObservationFormatter(tokenizer, self.config.max_obs_length)
        # Special tokens' text never reaches a search query (llm_agent.parsing); action tags stay, in case a
        # tokenizer made them special tokens.
        tags = {
            f"<{slash}{name}>" for slash in ("", "/") for name in ("search", "answer", "think", "information")
        }
        self.special_tokens = tuple(
            sorted(set(getattr(tokenizer, "all_special_tokens", ())) - tags, key=len, reverse=True)
        )

    def run(
        self,
        prompt_token_ids: Sequence[Sequence[int]],
        contexts: Sequence[Mapping[str, Any]],
        params: RolloutSamplingParams,
    ) -> AgentRolloutResult:
        """Roll out one trajectory per prompt; `contexts[i]` (prompt i's row context) goes with each of its
        searches."""
        self._check_inputs(prompt_token_ids, contexts, params)
        trajs = [
            Trajectory(list(p), response_logprobs=[] if params.logprobs else None) for p in prompt_token_ids
        ]
        search_wait_s = 0.0
        for turn in range(self.config.max_turns + 1):
            final = turn == self.config.max_turns
            active = [i for i, t in enumerate(trajs) if not t.done]
            for i in active:
                if len(trajs[i].response_ids) >= self.config.max_response_length:
                    self._stop_truncated(trajs[i])
            active = [i for i in active if not trajs[i].done]
            if not active:
                break
            queries = self._generate_turn(trajs, active, params, turn, final)
            requests = [
                SearchRequest(
                    query=query,
                    context=contexts[i],
                    topk=self.config.topk,
                    seed=None if params.seed is None else derive_seed(params.seed, turn, i),
                )
                for i, query in queries
            ]
            search_wait_s += self._execute_searches(trajs, [i for i, _ in queries], requests)
        return AgentRolloutResult(trajs, search_wait_s=search_wait_s)

    def _check_inputs(self, prompts, contexts, params) -> None:
        if len(prompts) != len(contexts):
            raise ValueError(
                f"run: {len(prompts)} prompts and {len(contexts)} contexts must have the same length"
            )
        if params.n != 1:
            raise ValueError(f"run: params.n must be 1 (repeat the prompts instead), got {params.n}")
        for i, prompt in enumerate(prompts):
            if not prompt:
                raise ValueError(f"run: prompt {i} is empty")
            if len(prompt) > self.config.max_prompt_length:
                raise ValueError(
                    f"run: prompt {i} has {len(prompt)} tokens, over max_prompt_length="
                    f"{self.config.max_prompt_length}"
                )
        for i, context in enumerate(contexts):
            if not isinstance(context, Mapping):
                raise TypeError(f"run: contexts[{i}] must be a mapping, got {type(context).__name__}")

    def _turn_params(self, params: RolloutSamplingParams, active: list[Trajectory], turn: int):
        """This turn's sampling: the caller's temperature/top_p/logprobs, the turn budget, the agent's stop
        strings, and a per-turn seed (the same seed every turn would replay the same random draws)."""
        room = max(self.config.max_response_length - len(t.response_ids) for t in active)
        return replace(
            params,
            max_tokens=min(self.config.max_tokens_per_turn, room),
            stop=tuple(dict.fromkeys(self.config.stop + tuple(params.stop))),
            seed=None if params.seed is None else params.seed * 1_000_003 + turn,
        )

    def _generate_turn(self, trajs, active, params, turn: int, final: bool) -> list[tuple[int, str]]:
        """Run one generation for the `active` trajectories; return the (trajectory, query) searches to run."""
        inputs = [trajs[i].prompt_ids + trajs[i].response_ids for i in active]
        outputs = self.rollout.generate(inputs, self._turn_params(params, [trajs[i] for i in active], turn))
        pending = []
        for i, group in zip(active, outputs, strict=True):
            traj, out = trajs[i], group[0]
            traj.stats.turns += 1
            room = self.config.max_response_length - len(traj.response_ids)
            ids = out.token_ids[:room]
            traj.append(ids, policy=True, logprobs=None if out.logprobs is None else out.logprobs[:room])
            if len(out.token_ids) > room:
                self._stop_truncated(traj)
                continue
            # Only this turn's sampled text is parsed: observations and feedback never carry actions.
            action = parse_action(
                self.tokenizer.decode(ids, skip_special_tokens=False),
                self.config.max_query_chars,
                self.special_tokens,
            )
            if action.is_answer:
                traj.stats.valid_actions += 1
                traj.stats.answered = True
                traj.stats.answer = action.content
                traj.done = True
            elif action.is_search:
                traj.stats.valid_actions += 1
                if final:
                    traj.done = True  # the final turn runs no search
                else:
                    pending.append((i, action.content))
            else:
                traj.stats.invalid_actions += 1
                if final or out.finish_reason == "eos":
                    traj.done = True
                else:
                    self._append_environment(
                        traj, self.observations.encode(invalid_action_feedback(action.reason))
                    )
        return pending

    def _execute_searches(
        self, trajs: list[Trajectory], owners: list[int], requests: list[SearchRequest]
    ) -> float:
        """One backend call for all of a turn's searches; each observation goes to its own trajectory.
        Returns the wall time the call took: the time this loop waited for search (client side)."""
        if not requests:
            return 0.0
        start = time.perf_counter()
        results = self.search.search(requests)
        waited = time.perf_counter() - start
        if len(results) != len(requests):
            raise RuntimeError(f"search backend returned {len(results)} results for {len(requests)} requests")
        for owner, request, result in zip(owners, requests, results, strict=True):
            traj = trajs[owner]
            obs = self.observations.build(result.documents[: self.config.topk])
            traj.stats.searches += 1
            traj.stats.search_calls.append(
                SearchCall(
                    query=request.query,
                    noisy=result.noisy,
                    latency_s=result.latency_s,
                    retries=result.retries,
                    error=result.error,
                    obs_tokens=len(obs.token_ids),
                    obs_truncated=obs.truncated,
                    documents=tuple(result.documents[: self.config.topk]),
                )
            )
            self._append_environment(traj, obs.token_ids)
        return waited

    def _append_environment(self, traj: Trajectory, ids: list[int]) -> None:
        """Append observation or feedback ids (mask 0), or end the trajectory if they do not fit."""
        if len(traj.response_ids) + len(ids) > self.config.max_response_length:
            self._stop_truncated(traj)
            return
        traj.append(ids, policy=False)

    @staticmethod
    def _stop_truncated(traj: Trajectory) -> None:
        traj.stats.truncated = True
        traj.done = True
