"""ZeroSearch's agent loop for the trainer: the multi-turn search agent, its search backends and the curriculum.

The trainer (verl) knows only the AgentLoop methods (`rollout`, `close`) and builds this class from the
config's `agent._target_`; everything ZeroSearch-specific is decided here: which backend answers a search, and
with what probability a simulated search returns noisy documents at a given training step. The generic
multi-turn loop (llm_agent) gets the step's setting bound into the backend (`backend.bind(noise_prob)`) and
each row's context (question, golden answers) as an opaque mapping it hands to every search of that row.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from llm_agent.generation import GenerationConfig, LLMGenerationManager
from llm_agent.trajectory import AgentRolloutResult
from verl.protocol import DataProto
from verl.utils.config import ConfigError, build
from verl.workers.rollout.base import RolloutEngine, RolloutSamplingParams
from zerosearch.curriculum import NoiseSchedule
from zerosearch.search import build_search_backend
from zerosearch.search.base import BaseSearchBackend
from zerosearch.search.simulate import row_context

logger = logging.getLogger(__name__)


def _schedule(curriculum: dict[str, Any], total_steps: int) -> NoiseSchedule:
    """The `curriculum` section as a NoiseSchedule; errors name the key (curriculum.end, ...)."""
    try:
        return build(NoiseSchedule, {**curriculum, "total_steps": total_steps}, "curriculum")
    except ConfigError as e:
        message = str(e)
        # NoiseSchedule's own checks start with the field's name; an unknown key is already named in full.
        raise ConfigError(
            message if message.startswith("unknown config key") else f"curriculum.{message}"
        ) from e


class ZeroSearchAgentLoop:
    """search: options of the training backend (`name` + its options, see docs/search.md); val_search: the
    backend for validation (e.g. the real engine), or None to validate on the training backend at noise 0;
    val_search_by_source: validation backends for single data_sources, overriding val_search for their rows
    (options, or None for the training backend at noise 0: how the policy scores on fixed questions under
    the engine it trains with, beside its real-engine scores); curriculum: NoiseSchedule fields except
    total_steps (the trainer's step count); overlap_search: trajectories search and generate each at
    their own pace (llm_agent.generation) instead of in lockstep turns."""

    def __init__(
        self,
        tokenizer,
        total_training_steps: int,
        max_prompt_length: int,
        search: dict[str, Any],
        curriculum: dict[str, Any],
        val_search: dict[str, Any] | None = None,
        val_search_by_source: dict[str, dict[str, Any] | None] | None = None,
        max_turns: int = 5,
        max_response_length: int = 4096,
        max_obs_length: int = 2048,
        max_tokens_per_turn: int = 500,
        topk: int = 5,
        overlap_search: bool = False,
    ):
        self.tokenizer = tokenizer
        self.generation = GenerationConfig(
            max_turns=max_turns,
            max_prompt_length=max_prompt_length,
            max_response_length=max_response_length,
            max_obs_length=max_obs_length,
            max_tokens_per_turn=max_tokens_per_turn,
            topk=topk,
            overlap_search=overlap_search,
        )
        self.schedule = _schedule(curriculum, total_training_steps)
        self.search = build_search_backend(**search)
        self.val_search = build_search_backend(**val_search) if val_search else self.search
        self.val_search_by_source: dict[str, BaseSearchBackend] = {}
        for source, options in (val_search_by_source or {}).items():
            try:
                backend = build_search_backend(**options) if options else self.search
            except (TypeError, ValueError) as e:
                self.close()
                raise ValueError(f"agent.val_search_by_source.{source}: {e}") from e
            self.val_search_by_source[str(source)] = backend

    def noise_probability(self, global_step: int) -> float:
        """Training step `global_step` (1-based) is step i = global_step - 1 of the schedule: the first step
        searches at the start threshold, and steps from total_steps + 1 on at the end threshold."""
        return self.schedule(global_step - 1)

    def rollout(
        self,
        batch: DataProto,
        engine: RolloutEngine,
        params: RolloutSamplingParams,
        global_step: int,
        validate: bool,
    ) -> tuple[DataProto, dict[str, float]]:
        """Run every row of `batch` (non-tensor columns prompt_token_ids, question, golden_answers) to the end
        of its trajectory; returns the engine's tensors (prompts, responses, response_mask, ...) in row order,
        and the batch's agent and search metrics."""
        noise = 0.0 if validate else self.noise_probability(global_step)
        columns = batch.non_tensor_batch
        prompts = [list(ids) for ids in columns["prompt_token_ids"]]
        contexts = [
            row_context(q, a) for q, a in zip(columns["question"], columns["golden_answers"], strict=True)
        ]
        # Rows that search the same backend roll out together; the trajectories go back in row order.
        rows_by_backend: dict[int, tuple[BaseSearchBackend, list[int]]] = {}
        for row, backend in enumerate(self._backends(batch, validate)):
            rows_by_backend.setdefault(id(backend), (backend, []))[1].append(row)
        trajectories: list = [None] * len(prompts)
        search_wait_s = 0.0
        for backend, rows in rows_by_backend.values():
            manager = LLMGenerationManager(engine, backend.bind(noise), self.tokenizer, self.generation)
            part = manager.run([prompts[r] for r in rows], [contexts[r] for r in rows], params)
            search_wait_s += part.search_wait_s
            for row, trajectory in zip(rows, part.trajectories, strict=True):
                trajectories[row] = trajectory
        result = AgentRolloutResult(trajectories, search_wait_s=search_wait_s)
        metrics = result.metrics()
        metrics["search/noise_prob"] = noise
        return result.to_dataproto(self.tokenizer.pad_token_id), metrics

    def _backends(self, batch: DataProto, validate: bool) -> list[BaseSearchBackend]:
        """The backend each row of `batch` searches: the training one, or in validation the one its
        data_source is routed to (val_search for the sources val_search_by_source does not name)."""
        if not validate:
            return [self.search] * len(batch)
        if not self.val_search_by_source:
            return [self.val_search] * len(batch)
        sources = batch.non_tensor_batch["data_source"]
        return [self.val_search_by_source.get(str(s), self.val_search) for s in sources]

    def fingerprint(self) -> dict[str, Any]:
        """The domain's settings that define a run, kept in its checkpoints: the curriculum (start, end, shape)
        and the training engine (its name and, for a simulator, its prompt set); not where servers run."""
        search = self.search.config
        return {
            "curriculum": {
                "start": self.schedule.start,
                "end": self.schedule.end,
                "base": self.schedule.base,
                "kind": self.schedule.kind,
            },
            "search.name": self.search.name,
            "search.template": getattr(search, "template", None),
        }

    def plan_validation(self, rows: int, validations: int) -> None:
        """Before training: for each paid engine validation searches (Google through SerpAPI), require a
        request budget and print how many requests the run's validations may send, at most (every one of
        `rows` searching in every turn, `validations` times), with the cost when its price is set."""
        planned = rows * self.generation.max_turns * validations
        keys = {id(self.val_search): "val_search" if self.val_search is not self.search else "search"}
        for source, backend in self.val_search_by_source.items():
            keys.setdefault(id(backend), f"agent.val_search_by_source.{source}")
        backends = {id(b): b for b in (self.val_search, *self.val_search_by_source.values())}
        for key_id, backend in backends.items():
            estimate = getattr(backend.config, "estimate", None)
            if estimate is None:  # not a paid engine
                continue
            key = keys[key_id]
            if backend.config.max_requests is None:
                raise ConfigError(
                    f"validation searches {backend.name}, a paid engine: this run's {validations} validation(s) of "
                    f"{rows} rows may send {estimate(planned)}. Set {key}.max_requests to confirm a budget (and "
                    f"{key}.cost_per_1k_requests to see the cost), or validate with the simulator at noise 0 "
                    f"(val_search: null) or a local retriever"
                )
            print(f"[validation] {key} ({backend.name}): {estimate(planned)}", file=sys.stderr, flush=True)

    def report_validation(self, records: list[dict], folder: Path) -> list[Path]:
        """A validation's files in `folder`, as `zerosearch.eval` writes them: trajectories.jsonl (each record
        with its queries, documents and answer), results.md and results.json (per data source, the average over
        sources and the pooled figure), em_vs_paper.png and searches.png. Returns [results.md, trajectories]."""
        from verl.trainer.validation import write_records
        from zerosearch.eval import with_answer_fields, write_results

        rows = [with_answer_fields(record) for record in records]
        trajectories = write_records(rows, folder)
        engines = sorted({b.name for b in (self.val_search, *self.val_search_by_source.values())})
        summary = (
            f"{len(rows)} validation rows; engine {', '.join(engines)} at noise 0; "
            f"up to {self.generation.max_turns} searches."
        )
        write_results(rows, folder, f"Validation, {folder.name.replace('_', ' ')}", summary)
        return [folder / "results.md", trajectories]

    def close(self) -> None:
        """Close every backend once (several names may share one)."""
        backends = [self.search, self.val_search, *self.val_search_by_source.values()]
        for backend in {id(b): b for b in backends}.values():
            backend.close()
