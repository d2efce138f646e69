"""The record of multi-turn rollouts: per-trajectory token ids, loss mask and statistics, and their
conversion to the engine's DataProto layout and to logged metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from verl.protocol import DataProto


@dataclass(frozen=True)
class SearchCall:
    """What one executed search returned: the query and its documents (before the observation's cut), the
    simulator's useful/noisy draw (None for a real engine), latency, retries, and whether it failed (its
    error text)."""

    query: str
    noisy: bool | None
    latency_s: float
    retries: int
    error: str | None
    obs_tokens: int
    obs_truncated: bool
    documents: tuple[str, ...] = ()

    def record(self) -> dict:
        """The call as a JSON-ready record (the `search_calls` column: query, documents, noisy, error)."""
        return {
            "query": self.query,
            "documents": list(self.documents),
            "noisy": self.noisy,
            "error": self.error,
        }

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class TrajectoryStats:
    """Counters of one trajectory.

    turns: generations run; searches: searches executed; valid_actions: turns whose first action parsed
    (a search on the final turn is valid but not executed); invalid_actions: turns without a valid action;
    answered: ended with an answer; answer: that answer's text (None without one); truncated: stopped by the
    response-length budget.
    no_noisy_search: no search came back noisy (true without a simulator), so a curriculum's noise did not
    touch this trajectory's reward.
    """

    turns: int = 0
    searches: int = 0
    valid_actions: int = 0
    invalid_actions: int = 0
    answered: bool = False
    truncated: bool = False
    search_calls: list[SearchCall] = field(default_factory=list)
    answer: str | None = None

    @property
    def reward_text(self) -> str:
        """What the reward scores: the answer the environment accepted, as an answer action
        (`<answer> text </answer>`), or "" when it accepted none. Never the raw policy text, where an answer
        hidden inside a rejected action (nested in a search, or closed in a later turn after feedback) would
        still be found and paid."""
        return "" if self.answer is None else f"<answer> {self.answer} </answer>"

    @property
    def no_noisy_search(self) -> bool:
        return not any(call.noisy for call in self.search_calls)


@dataclass
class Trajectory:
    """One prompt's rollout. `response_ids` are policy and environment tokens in order; `response_mask` is 1
    on policy (sampled) tokens and 0 on observation and feedback tokens. `response_logprobs` holds the
    rollout's log-prob of each policy token (0.0 on environment tokens) when log-probs were requested."""

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    response_logprobs: list[float] | None = None
    stats: TrajectoryStats = field(default_factory=TrajectoryStats)
    done: bool = False

    def append(self, ids: list[int], policy: bool, logprobs: list[float] | None = None) -> None:
        self.response_ids.extend(ids)
        self.response_mask.extend([1 if policy else 0] * len(ids))
        if self.response_logprobs is not None:
            self.response_logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))


@dataclass
class AgentRolloutResult:
    """All trajectories of one `LLMGenerationManager.run` call, in input order, and the wall time the loop
    spent waiting for the search backend (client side: the sum over turns of each turn's search call)."""

    trajectories: list[Trajectory]
    search_wait_s: float = 0.0

    def __len__(self) -> int:
        return len(self.trajectories)

    def to_dataproto(
        self, pad_token_id: int, prompt_length: int | None = None, response_length: int | None = None
    ) -> DataProto:
        """Tensors in the engine's layout: prompts [B, P] left-padded, responses / response_mask [B, R]
        right-padded, input_ids / attention_mask / position_ids [B, P + R] (verl's convention:
        clamp(cumsum(attention_mask) - 1, min=0), so positions count real tokens and padding is masked). P and R default to the longest prompt and response; fixed values keep shapes
        stable across steps and must fit every row. Stats go to non-tensor columns."""
        longest_p = max((len(t.prompt_ids) for t in self.trajectories), default=0)
        longest_r = max((len(t.response_ids) for t in self.trajectories), default=0)
        width_p = longest_p if prompt_length is None else prompt_length
        width_r = longest_r if response_length is None else response_length
        if width_p < longest_p:
            raise ValueError(
                f"prompt_length={prompt_length} is shorter than the longest prompt ({longest_p})"
            )
        if width_r < longest_r:
            raise ValueError(
                f"response_length={response_length} is shorter than the longest response ({longest_r})"
            )
        batch = len(self.trajectories)
        prompts = torch.full((batch, width_p), pad_token_id, dtype=torch.long)
        prompt_mask = torch.zeros((batch, width_p), dtype=torch.long)
        responses = torch.full((batch, width_r), pad_token_id, dtype=torch.long)
        response_attn = torch.zeros((batch, width_r), dtype=torch.long)
        response_mask = torch.zeros((batch, width_r), dtype=torch.long)
        logprobs = torch.zeros((batch, width_r), dtype=torch.float32)
        for i, traj in enumerate(self.trajectories):
            p, r = len(traj.prompt_ids), len(traj.response_ids)
            if p:
                prompts[i, width_p - p :] = torch.tensor(traj.prompt_ids)
                prompt_mask[i, width_p - p :] = 1
            if r:
                responses[i, :r] = torch.tensor(traj.response_ids)
                response_attn[i, :r] = 1
                response_mask[i, :r] = torch.tensor(traj.response_mask)
                if traj.response_logprobs is not None:
                    logprobs[i, :r] = torch.tensor(traj.response_logprobs)
        attention_mask = torch.cat([prompt_mask, response_attn], dim=1)
        tensors = {
            "prompts": prompts,
            "responses": responses,
            "response_mask": response_mask,
            "input_ids": torch.cat([prompts, responses], dim=1),
            "attention_mask": attention_mask,
            "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        }
        if all(t.response_logprobs is not None for t in self.trajectories) and self.trajectories:
            tensors["rollout_log_probs"] = logprobs
        stats = [t.stats for t in self.trajectories]
        non_tensors = {
            "turns": np.array([s.turns for s in stats], dtype=object),
            "searches": np.array([s.searches for s in stats], dtype=object),
            "valid_actions": np.array([s.valid_actions for s in stats], dtype=object),
            "invalid_actions": np.array([s.invalid_actions for s in stats], dtype=object),
            "answered": np.array([s.answered for s in stats], dtype=object),
            "no_noisy_search": np.array([s.no_noisy_search for s in stats], dtype=object),
            "search_calls": _object_column([[c.record() for c in s.search_calls] for s in stats]),
            "reward_text": np.array([s.reward_text for s in stats], dtype=object),
        }
        return DataProto.from_dict(tensors, non_tensors)

    def metrics(self) -> dict[str, float]:
        """Batch means of the agent counters (the names the trainer logs), search statistics, and the time
        spent waiting for search (`timing_s/search`, part of the trainer's `timing_s/gen`)."""
        stats = [t.stats for t in self.trajectories]
        if not stats:
            return {}
        calls = [c for s in stats for c in s.search_calls]
        actions = sum(s.valid_actions + s.invalid_actions for s in stats)
        out = {
            "env/number_of_actions/mean": float(
                np.mean([s.valid_actions + s.invalid_actions for s in stats])
            ),
            "env/finish_ratio": float(np.mean([s.answered for s in stats])),
            "env/ratio_of_valid_action": sum(s.valid_actions for s in stats) / actions if actions else 0.0,
            "env/number_of_valid_search": float(np.mean([s.searches for s in stats])),
            "env/turns/mean": float(np.mean([s.turns for s in stats])),
            "env/truncated_ratio": float(np.mean([s.truncated for s in stats])),
            "search/calls_per_sample": len(calls) / len(stats),
            "search/failures": float(sum(c.failed for c in calls)),
            "search/retries": float(sum(c.retries for c in calls)),
            "timing_s/search": float(self.search_wait_s),
        }
        if calls:
            drawn = [c.noisy for c in calls if c.noisy is not None]
            latencies = np.array([c.latency_s for c in calls])
            out["search/noisy_fraction"] = float(np.mean(drawn)) if drawn else 0.0
            out["search/latency_p50"] = float(np.percentile(latencies, 50))
            out["search/latency_p95"] = float(np.percentile(latencies, 95))
            out["search/obs_truncated_fraction"] = float(np.mean([c.obs_truncated for c in calls]))
        return out


def _object_column(values: list) -> np.ndarray:
    """A 1-D object array holding one Python value per row (np.array would nest lists of lists)."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column
