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

With `overlap_search` the turns are no longer taken in lockstep: the engine serves the trajectories
(`RolloutEngine.serve`), a trajectory's search starts the moment its own generation ends, and it goes on to
its next generation the moment that search returns, while the others are still generating or searching. The
decisions above are the same; each trajectory's sampling and search seeds depend only on (seed, turn,
trajectory), so which trajectories happen to generate together changes nothing but floating-point rounding.

Token-faithful: the ids a trajectory holds are the sampled ids, EOS and stop tokens included; only
environment text (observations, feedback) is tokenized, once. Environment tokens get response_mask 0.
`max_response_length` caps the whole response (policy and environment tokens): a generation that would
cross it is cut at the budget and ends the trajectory, and an observation or feedback that would not fit
ends the trajectory without being appended.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from llm_agent.observation import ObservationFormatter
from llm_agent.parsing import DEFAULT_MAX_QUERY_CHARS, invalid_action_feedback, parse_action
from llm_agent.search import SearchBackend, SearchRequest
from llm_agent.trajectory import AgentRolloutResult, SearchCall, Trajectory
from verl.utils.seed import derive_seed
from verl.workers.rollout.base import RolloutOutput, RolloutRequest, RolloutSamplingParams


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
    overlap_search: trajectories search and generate independently of each other (module doc) instead of
    every turn waiting for the whole batch's generation and then for all of its searches.
    """

    max_turns: int = 5
    max_prompt_length: int = 4096
    max_response_length: int = 4096
    max_obs_length: int = 2048
    max_tokens_per_turn: int = 500
    topk: int = 5
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    stop: tuple[str, ...] = ("</search>", "</answer>")
    overlap_search: bool = False

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
        run = self._run_overlapped if self.config.overlap_search else self._run_turns
        return AgentRolloutResult(trajs, search_wait_s=run(trajs, contexts, params))

    def _run_turns(self, trajs: list[Trajectory], contexts, params: RolloutSamplingParams) -> float:
        """Turn by turn: one generate call for every active trajectory, then one search call for all of the
        turn's searches. Returns the time spent waiting for search."""
        search_wait_s = 0.0
        for turn in range(self.config.max_turns + 1):
            active = [i for i, t in enumerate(trajs) if self._goes_on(t)]
            if not active:
                break
            requests = [self._generation(trajs[i], i, params) for i in active]
            outputs = self.rollout.generate([r.prompt_ids for r in requests], [r.params for r in requests])
            searches = []
            for i, group in zip(active, outputs, strict=True):
                query = self._accept_generation(trajs[i], group[0])
                if query is not None:
                    searches.append((i, self._search(query, i, turn, contexts[i], params)))
            search_wait_s += self._execute_searches(trajs, searches)
        return search_wait_s

    def _run_overlapped(self, trajs: list[Trajectory], contexts, params: RolloutSamplingParams) -> float:
        """Each trajectory at its own pace (module doc); searches run on a thread each. Returns the time the
        engine sat idle waiting for search."""
        with ThreadPoolExecutor(max_workers=len(trajs) or 1, thread_name_prefix="agent-search") as pool:
            schedule = _OverlappedTurns(self, trajs, contexts, params, pool)
            self.rollout.serve(schedule)
        return schedule.search_wait_s

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

    def _goes_on(self, traj: Trajectory) -> bool:
        """Whether `traj` generates again (one whose response used up the budget is stopped here)."""
        if not traj.done and len(traj.response_ids) >= self.config.max_response_length:
            self._stop_truncated(traj)
        return not traj.done

    def _generation(self, traj: Trajectory, index: int, params: RolloutSamplingParams) -> RolloutRequest:
        """Trajectory `index`'s next generation: the caller's temperature/top_p/logprobs, at most a turn's
        tokens and no more than its response budget, the agent's stop strings, and a seed of its own for each
        turn (the same seed every turn would replay the same random draws)."""
        room = self.config.max_response_length - len(traj.response_ids)
        turn = traj.stats.turns
        return RolloutRequest(
            traj.prompt_ids + traj.response_ids,
            replace(
                params,
                max_tokens=min(self.config.max_tokens_per_turn, room),
                stop=tuple(dict.fromkeys(self.config.stop + tuple(params.stop))),
                seed=None if params.seed is None else derive_seed(params.seed, turn, index, 1),
            ),
        )

    def _search(self, query: str, index: int, turn: int, context, params: RolloutSamplingParams):
        """Trajectory `index`'s search of turn `turn`, with its row context and a seed of its own."""
        return SearchRequest(
            query=query,
            context=context,
            topk=self.config.topk,
            seed=None if params.seed is None else derive_seed(params.seed, turn, index),
        )

    def _accept_generation(self, traj: Trajectory, out: RolloutOutput) -> str | None:
        """Append one generation to `traj` and act on it; returns the query to search, or None."""
        final = traj.stats.turns == self.config.max_turns
        traj.stats.turns += 1
        room = self.config.max_response_length - len(traj.response_ids)
        ids = out.token_ids[:room]
        traj.append(ids, policy=True, logprobs=None if out.logprobs is None else out.logprobs[:room])
        if len(out.token_ids) > room or (out.finish_reason == "length" and len(ids) >= room):
            self._stop_truncated(traj)
            return None
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
            if not final:
                return action.content
            traj.done = True  # the final turn runs no search
        else:
            traj.stats.invalid_actions += 1
            if final or out.finish_reason == "eos":
                traj.done = True
            else:
                self._append_environment(
                    traj, self.observations.encode(invalid_action_feedback(action.reason))
                )
        return None

    def _execute_searches(self, trajs: list[Trajectory], searches: list[tuple[int, SearchRequest]]) -> float:
        """One backend call for all of a turn's (trajectory, request) searches; each observation goes to its
        own trajectory. Returns the wall time the call took: the time this loop waited for search."""
        if not searches:
            return 0.0
        start = time.perf_counter()
        results = self.search.search([request for _, request in searches])
        waited = time.perf_counter() - start
        if len(results) != len(searches):
            raise RuntimeError(f"search backend returned {len(results)} results for {len(searches)} requests")
        for (owner, request), result in zip(searches, results, strict=True):
            self._accept_search(trajs[owner], request, result)
        return waited

    def _accept_search(self, traj: Trajectory, request: SearchRequest, result) -> None:
        """Record one search and append its observation."""
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


class _OverlappedTurns:
    """The RolloutSource of an overlapped run: it hands the engine each trajectory's next generation when
    the trajectory is ready, starts a trajectory's search (on the pool) when its generation comes back, and
    makes it ready again when the search returns. Trajectories are only ever changed on the engine's thread
    (in `take` and `finish`); search threads just hand their results over."""

    def __init__(self, manager: LLMGenerationManager, trajs, contexts, params, pool: ThreadPoolExecutor):
        self.manager, self.trajs, self.contexts, self.params, self.pool = (
            manager,
            trajs,
            contexts,
            params,
            pool,
        )
        self.ready: deque[int] = deque()
        self.searched: queue.SimpleQueue[tuple[int, SearchRequest, Future]] = queue.SimpleQueue()
        self.generating: dict[int, int] = {}  # id(request) -> trajectory
        self.unfinished = len(trajs)
        self.search_wait_s = 0.0
        for i in range(len(trajs)):
            self._continue(i)

    def take(self, limit: int, wait: bool) -> list[RolloutRequest] | None:
        self._collect(block=False)
        if wait and not self.ready and self.unfinished:
            start = time.perf_counter()
            self._collect(block=True)
            self.search_wait_s += time.perf_counter() - start
        if not self.unfinished:
            return None
        taken = []
        while self.ready and len(taken) < limit:
            i = self.ready.popleft()
            request = self.manager._generation(self.trajs[i], i, self.params)
            self.generating[id(request)] = i
            taken.append(request)
        return taken

    def finish(self, request: RolloutRequest, output: RolloutOutput) -> None:
        i = self.generating.pop(id(request))
        query = self.manager._accept_generation(self.trajs[i], output)
        if query is None:
            self._continue(i)
            return
        turn = self.trajs[i].stats.turns - 1
        search = self.manager._search(query, i, turn, self.contexts[i], self.params)
        future = self.pool.submit(self.manager.search.search, [search])
        future.add_done_callback(lambda done, i=i, search=search: self.searched.put((i, search, done)))

    def _collect(self, block: bool) -> None:
        """Apply the searches that came back; with `block`, wait until one trajectory can generate again
        (or none is left)."""
        while True:
            try:
                i, search, done = self.searched.get(block=block and not self.ready and self.unfinished > 0)
            except queue.Empty:
                return
            results = done.result()  # a backend's error is raised here, on the engine's thread
            if len(results) != 1:
                raise RuntimeError(f"search backend returned {len(results)} results for 1 request")
            self.manager._accept_search(self.trajs[i], search, results[0])
            self._continue(i)

    def _continue(self, i: int) -> None:
        if self.manager._goes_on(self.trajs[i]):
            self.ready.append(i)
        else:
            self.unfinished -= 1
