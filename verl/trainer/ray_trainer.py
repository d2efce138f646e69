"""The single-controller fit loop (docs/design.md §4): rollout -> reward -> log-probs -> advantages -> update, with
validation, checkpoints and logging. It drives an actor/rollout/reference worker group and an agent loop; it
knows nothing of search: the agent loop and the reward function come from the config.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from verl import algorithms
from verl.protocol import DataProto
from verl.trainer import validation
from verl.trainer.config import PPOTrainerConfig
from verl.utils import checkpoint as ckpt
from verl.utils.checkpoint import fingerprint_changes
from verl.utils.dataset import StatefulBatchLoader, collate, validation_loader
from verl.utils.tracking import Tracking
from verl.workers.reward import RewardManager, decode_tokens
from verl.workers.rollout.base import (
    NO_LIMIT,
    Params,
    RolloutEngine,
    RolloutOutput,
    RolloutRequest,
    RolloutSamplingParams,
    RolloutSource,
    group_samples,
    per_prompt,
)

logger = logging.getLogger(__name__)

# How long a streamed rollout's exchange waits on a busy rank for its first finished request.
STREAM_WAIT_S = 0.02


class AgentLoop(Protocol):
    """What the trainer needs from a multi-turn environment loop (e.g. zerosearch.agent.ZeroSearchAgentLoop)."""

    def rollout(
        self,
        batch: DataProto,
        engine: RolloutEngine,
        params: RolloutSamplingParams,
        global_step: int,
        validate: bool,
    ) -> tuple[DataProto, dict[str, float]]: ...

    def close(self) -> None: ...

    # Optional: `plan_validation(rows, validations)`, called once before any worker starts, may refuse a run
    # whose validations would cost too much (e.g. a paid search engine without a budget); `fingerprint()`,
    # the domain's settings that define a run (e.g. the curriculum and the search engine), kept in checkpoints
    # so that a run folder never resumes a run with other settings; `report_validation(records, folder)`,
    # writes a validation's records (verl.trainer.validation) and the domain's report into `folder` and returns
    # the paths written, the report first (e.g. the evaluation harness's results.md and figures).


class WorkerGroupRollout(RolloutEngine):
    """The worker group's rollout engines behind the RolloutEngine interface: each call splits the prompts over
    the ranks (DP_COMPUTE_PROTO). Weights are synced inside the workers after every update, not from here."""

    def __init__(self, worker_group):
        self.worker_group = worker_group
        self._serves_alone: bool | None = None  # asked of the ranks on first use

    def generate(self, prompts, params: Params) -> list[list[RolloutOutput]]:
        each, shared = per_prompt(prompts, params)
        columns: dict[str, list] = {"prompt_token_ids": [list(p) for p in prompts]}
        if not shared:
            columns["sampling_params"] = [asdict(p) for p in each]
        data = DataProto.from_dict(
            non_tensors=columns, meta_info={"sampling_params": asdict(each[0])} if shared and each else {}
        )
        out = self.worker_group.generate_sequences(data).non_tensor_batch
        logprobs = out.get("response_logprobs")
        samples = [
            RolloutOutput(list(ids), str(reason), None if logprobs is None else list(logprobs[k]))
            for k, (ids, reason) in enumerate(
                zip(out["response_token_ids"], out["finish_reason"], strict=True)
            )
        ]
        return group_samples(samples, each)

    def serve(self, source: RolloutSource) -> None:
        """Streams requests over the ranks when their engines can serve alone (verl/workers/rollout/stream.py:
        each request goes to the least loaded rank and is handed back the step it ends there); else a batch
        at a time through `generate`."""
        if self._serves_alone is None:
            self._serves_alone = all(self.worker_group.rollout_serves_alone())
            how = "streamed to" if self._serves_alone else "a batch at a time (the engine cannot stream) on"
            print(
                f"[rollout] overlapped turns: requests {how} {self.worker_group.world_size} rank(s)",
                file=sys.stderr,
            )
        if not self._serves_alone:
            return super().serve(source)
        size = self.worker_group.world_size
        flying: dict[int, tuple[RolloutRequest, int]] = {}  # key -> (request, rank)
        load, keys, closed = [0] * size, itertools.count(), False
        try:
            while not closed or flying:
                outgoing: list[list] = [[] for _ in range(size)]
                taken = None if closed else source.take(NO_LIMIT, not flying)
                closed = taken is None
                for request in taken or ():
                    rank, key = load.index(min(load)), next(keys)
                    load[rank] += 1
                    flying[key] = (request, rank)
                    outgoing[rank].append((key, list(request.prompt_ids), asdict(request.params)))
                if not flying:
                    continue
                waits = [STREAM_WAIT_S if n else 0.0 for n in load]
                for finished in self.worker_group.rollout_exchange(outgoing, waits):
                    for key, output in finished:
                        request, rank = flying.pop(key)
                        load[rank] -= 1
                        source.finish(request, output)
        finally:
            self.worker_group.rollout_stream_stop()

    def update_weights(self, named_tensors) -> None:
        raise RuntimeError("the workers sync their rollout weights after every actor update")

    @contextmanager
    def awake(self):
        """The rollout engines hold their memory (KV cache, weights) for the whole block: every turn of a
        batch's rollout, not one generation call, so a sleeping engine is woken once per phase."""
        self.worker_group.wake_rollout()
        try:
            yield
        finally:
            self.worker_group.sleep_rollout()


@contextmanager
def _timer(name: str, timings: dict[str, float]):
    start = time.perf_counter()
    yield
    timings[f"timing_s/{name}"] = time.perf_counter() - start


def timing_shares(metrics: dict[str, float]) -> dict[str, float]:
    """`timing_share/<name>`: each `timing_s/<name>` of a step (its phases, and any time the agent loop
    reports, such as the search wait inside `gen`) as a share of `timing_s/step`."""
    step = metrics.get("timing_s/step", 0.0)
    if step <= 0:
        return {}
    prefix = "timing_s/"
    return {
        f"timing_share/{key[len(prefix) :]}": value / step
        for key, value in metrics.items()
        if key.startswith(prefix) and key != "timing_s/step"
    }


def batch_from_items(batch: dict[str, list]) -> DataProto:
    """A DataProto of prompts (non-tensor columns) from the loader's collated items."""
    return DataProto.from_dict(
        non_tensors={
            "prompt_token_ids": batch["prompt_token_ids"],
            "index": batch["index"],
            "question": [q or "" for q in batch["question"]],
            "golden_answers": [list(g or []) for g in batch["golden_answers"]],
            "ground_truth": batch["ground_truth"],
            "data_source": batch["data_source"],
        }
    )


class TrainingStopped(RuntimeError):
    """A training step failed; the message says in which step and stage, what was saved and how to go on."""


class RunMismatch(RuntimeError):
    """The run folder's checkpoint was made with other settings; the message names them and how to go on."""


class RayPPOTrainer:
    """cfg: the typed trainer config (PPOTrainerConfig.from_dict, configs/ppo_trainer.yaml)."""

    def __init__(
        self,
        cfg: PPOTrainerConfig,
        tokenizer,
        actor_rollout_wg,
        agent: AgentLoop,
        reward: RewardManager,
        train_dataset,
        val_dataset,
        tracker: Tracking,
        critic_wg=None,
    ):
        """critic_wg: the CriticWorker group (or colocated role view), given when the estimator reads values."""
        self.cfg, self.tokenizer = cfg, tokenizer
        self.actor_rollout_wg, self.agent, self.reward = actor_rollout_wg, agent, reward
        self.critic_wg = critic_wg
        self.engine = WorkerGroupRollout(actor_rollout_wg)
        self.tracker = tracker
        trainer = cfg.trainer
        self.total_steps = int(trainer.total_training_steps or 0)
        self.run_dir = Path(trainer.default_local_dir)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.train_loader = (
            None
            if train_dataset is None
            else StatefulBatchLoader(
                train_dataset,
                cfg.data.train_batch_size,
                shuffle=cfg.data.shuffle,
                seed=trainer.seed,
                drop_last=True,
                collate_fn=collate,
            )
        )
        self.val_dataset = val_dataset
        self.global_step = 0
        self.stage = "start"  # the stage of the step in progress, named in errors

    # ----- sampling ------------------------------------------------------------------------------------
    def _train_params(self) -> RolloutSamplingParams:
        rollout = self.cfg.actor_rollout_ref.rollout
        seed = rollout.seed if rollout.seed is not None else self.cfg.trainer.seed
        return RolloutSamplingParams(
            temperature=rollout.temperature, top_p=rollout.top_p, seed=seed * 100_003 + self.global_step
        )

    def _val_params(self) -> RolloutSamplingParams:
        val = self.cfg.actor_rollout_ref.rollout.val_kwargs
        return RolloutSamplingParams(temperature=val.temperature, top_p=val.top_p, seed=self.cfg.trainer.seed)

    @contextmanager
    def _stage(self, name: str, timings: dict[str, float]):
        """Time a stage of the step and remember it, so a failure can say where it happened."""
        self.stage = name
        with _timer(name, timings):
            yield

    # ----- one step ------------------------------------------------------------------------------------
    def train_step(self, items: dict[str, list]) -> dict[str, float]:
        """docs/design.md §4 steps 1-6 on one batch of prompts; returns the step's metrics."""
        cfg, algo, timings = self.cfg, self.cfg.algorithm, {}
        n = cfg.actor_rollout_ref.rollout.n
        with _timer("step", timings):
            prompts = batch_from_items(items)
            # One group id per prompt instance of this step (never the dataset index: indices repeat).
            prompts.non_tensor_batch["uid"] = np.array(
                [uuid.uuid4().hex for _ in range(len(prompts))], dtype=object
            )
            batch = prompts.repeat(n, interleave=True)
            with self._stage("gen", timings), self.engine.awake():
                gen, metrics = self.agent.rollout(
                    batch, self.engine, self._train_params(), self.global_step, False
                )
            batch = batch.union(gen)
            batch.meta_info["temperature"] = cfg.actor_rollout_ref.rollout.temperature
            with self._stage("reward", timings):
                scores, _ = self.reward(batch)
                batch.batch["token_level_scores"] = scores
            if cfg.needs_old_log_prob:  # else the actor takes its own forward's (an on-policy update)
                with self._stage("old_log_prob", timings):
                    batch = batch.union(self.actor_rollout_wg.compute_log_prob(batch))
            if cfg.needs_reference:
                with self._stage("ref", timings):
                    batch = batch.union(self.actor_rollout_wg.compute_ref_log_prob(batch))
            if self.critic_wg is not None:
                with self._stage("values", timings):
                    batch = batch.union(self.critic_wg.compute_values(batch))
            with self._stage("adv", timings):
                metrics.update(self._advantages(batch))
            if self.critic_wg is not None:
                with self._stage("update_critic", timings):
                    metrics.update(self.critic_wg.update_critic(batch).meta_info["metrics"])
            skip = algo.skip_step_without_signal and not batch.batch["advantages"].abs().gt(0).any()
            if self.critic_wg is not None and self.global_step <= cfg.trainer.critic_warmup:
                metrics["actor/critic_warmup"] = 1.0
            elif skip:
                metrics["actor/step_skipped"] = 1.0
            else:
                with self._stage("update_actor", timings):
                    out = self.actor_rollout_wg.update_actor(batch)
                metrics.update(out.meta_info["metrics"])
        metrics.update(timings)
        metrics.update(timing_shares(metrics))
        metrics.update(self._data_metrics(batch))
        metrics["tokens/s"] = float(batch.batch["attention_mask"].sum()) / timings["timing_s/step"]
        self._maybe_log_samples(batch)
        return metrics

    def _advantages(self, batch: DataProto) -> dict[str, float]:
        algo, metrics = self.cfg.algorithm, {}
        mask = batch.batch["response_mask"].float()
        rewards = batch.batch["token_level_scores"]
        if algo.use_kl_in_reward:
            rewards, metrics = algorithms.apply_kl_penalty(
                rewards,
                batch.batch["old_log_probs"],
                batch.batch["ref_log_prob"],
                mask,
                self.kl_ctrl,
                algo.kl_penalty,
            )
            self.kl_ctrl.update(metrics["actor/reward_kl_penalty"], n_steps=len(batch))
        batch.batch["token_level_rewards"] = rewards
        advantages, returns = algorithms.compute_advantage(
            algo.adv_estimator,
            rewards,
            mask,
            index=batch.non_tensor_batch["uid"],
            gamma=algo.gamma,
            lam=algo.lam,
            norm_adv_by_std=algo.norm_adv_by_std_in_grpo,
            values=batch.batch.get("values"),
        )
        batch.batch["advantages"], batch.batch["returns"] = advantages, returns
        return metrics

    @property
    def kl_ctrl(self):
        if not hasattr(self, "_kl_ctrl"):
            ctrl = self.cfg.algorithm.kl_ctrl
            self._kl_ctrl = (
                algorithms.AdaptiveKLController(ctrl.kl_coef, ctrl.target_kl, ctrl.horizon)
                if ctrl.type == "adaptive"
                else algorithms.FixedKLController(ctrl.kl_coef)
            )
        return self._kl_ctrl

    def _data_metrics(self, batch: DataProto) -> dict[str, float]:
        """Scores, advantages, lengths and the share of response tokens the policy wrote."""
        mask = batch.batch["response_mask"].bool()
        response_attn = batch.batch["attention_mask"][:, batch.batch["prompts"].shape[1] :].bool()
        scores = batch.batch["token_level_scores"].sum(-1)
        lengths = response_attn.sum(-1).float()
        adv = batch.batch["advantages"][mask]
        out = {
            "critic/score/mean": scores.mean().item(),
            "critic/score/max": scores.max().item(),
            "critic/score/min": scores.min().item(),
            "critic/advantages/mean": adv.mean().item() if adv.numel() else 0.0,
            "critic/advantages/max": adv.max().item() if adv.numel() else 0.0,
            "critic/advantages/min": adv.min().item() if adv.numel() else 0.0,
            "response_length/mean": lengths.mean().item(),
            "response_length/max": lengths.max().item(),
            "response_length/min": lengths.min().item(),
            "prompt_length/mean": batch.batch["attention_mask"][:, : batch.batch["prompts"].shape[1]]
            .sum(-1)
            .float()
            .mean()
            .item(),
            "state_tokens/total": float(mask.sum()),
            "state_tokens/coverage": float(mask.sum()) / max(float(response_attn.sum()), 1.0),
        }
        # The score over the rows a boolean per-row column marks (an agent's `answered`, or
        # `no_noisy_search`: the reward a noise curriculum did not touch), so a trend is not confounded.
        row_scores = scores.float().cpu().numpy()
        for name, column in batch.non_tensor_batch.items():
            if len(column) and all(isinstance(v, (bool, np.bool_)) for v in column):
                rows = column.astype(bool)
                if rows.any():
                    out[f"critic/score/mean_where/{name}"] = float(row_scores[rows].mean())
        return out

    def _maybe_log_samples(self, batch: DataProto) -> None:
        freq, rows = self.cfg.trainer.sample_table_freq, self.cfg.trainer.sample_table_rows
        if not freq or self.global_step % freq:
            return
        scores = batch.batch["token_level_scores"].sum(-1)
        full = [decode_tokens(self.tokenizer, ids.tolist()) for ids in batch.batch["responses"][:rows]]
        cols = batch.non_tensor_batch
        table = [
            [
                self.global_step,
                str(cols["data_source"][i]),
                str(cols["question"][i]),
                " | ".join(map(str, cols["golden_answers"][i])),
                full[i],
                float(scores[i]),
            ]
            for i in range(min(rows, len(batch)))
        ]
        self.tracker.log_table(
            "samples",
            ["step", "data_source", "question", "golden", "response", "score"],
            table,
            self.global_step,
        )

    # ----- validation ----------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Every validation prompt once (greedy by default, last partial batch kept); each metric (EM, cover-EM,
        F1, ...) per data_source, pooled over every row (`all`) and averaged over the sources (`avg_over_sources`,
        the paper's "Avg"), see verl.trainer.validation. Each row's record goes to
        <validation dir>/step_<N>/trajectories.jsonl (written by the agent's `report_validation(records,
        folder)` when it has one, with its own report beside them), the first `log_val_generations` to the
        trackers as a table."""
        records: list[dict] = []
        for items in validation_loader(self.val_dataset, self.cfg.data.val_batch_size):
            batch = batch_from_items(items)
            with self.engine.awake():
                gen, _ = self.agent.rollout(batch, self.engine, self._val_params(), self.global_step, True)
            batch = batch.union(gen)
            records.extend(validation.generation_records(batch, self.tokenizer, self.reward))
        self._write_validation(records)
        return validation.source_metrics(records)

    def _write_validation(self, records: list[dict]) -> None:
        trainer = self.cfg.trainer
        folder = trainer.validation_dir / f"step_{self.global_step}"
        report = getattr(self.agent, "report_validation", None)
        written = (
            report(records, folder) if report is not None else [validation.write_records(records, folder)]
        )
        if trainer.log_val_generations:
            columns, rows = validation.table_rows(records, trainer.log_val_generations, self.global_step)
            self.tracker.log_table("val/generations", columns, rows, self.global_step)
        if trainer.val_only:
            print(f"[validation] {len(records)} rows: {written[0]}", file=sys.stderr, flush=True)

    # ----- checkpoints ---------------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        """The settings that define this run: what a checkpoint must agree with to be resumed. The engine's
        (policy, training data, algorithm) and the agent's own (`fingerprint()`, when it has one), as flat
        JSON-safe `key: value` pairs named by their config keys."""
        cfg = self.cfg
        engine = {
            "actor_rollout_ref.model.path": cfg.actor_rollout_ref.model.path,
            "data.train_files": list(cfg.data.train_files),
            "algorithm.adv_estimator": cfg.algorithm.adv_estimator,
        }
        domain = getattr(self.agent, "fingerprint", None)
        return json.loads(json.dumps({**engine, **(domain() if domain else {})}, default=str))

    def save_checkpoint(self, step: int | None = None, loader_state: dict | None = None) -> Path:
        """Save the state after `step` (default: the current one) as checkpoints/global_step_<step>.

        Every role writes into one staging folder that is renamed into place and marked as the latest only
        when all parts are on disk (verl.utils.checkpoint), so a run killed while saving never resumes from
        half a checkpoint. loader_state: the data position to store (default: the loader's current one)."""
        step = self.global_step if step is None else step
        extra = {
            "dataloader": loader_state or self.train_loader.state_dict(),
            "fingerprint": self.fingerprint(),
        }
        if isinstance(self.kl_ctrl, algorithms.AdaptiveKLController):  # its coefficient moves with training
            extra["kl_coef"] = self.kl_ctrl.value
        with ckpt.write_checkpoint(self.ckpt_root, step) as staging:
            self.actor_rollout_wg.save_checkpoint(str(staging), step, extra)
            if self.critic_wg is not None:
                self.critic_wg.save_checkpoint(str(staging), step)
        ckpt.cleanup_checkpoints(self.ckpt_root, self.cfg.trainer.max_actor_ckpt_to_keep)
        return ckpt.step_dir(self.ckpt_root, step)

    def resume_path(self) -> Path | None:
        """The checkpoint trainer.resume_mode names: auto = this run's latest complete one (or None), disable =
        None, else the given folder (a checkpoint, or a checkpoints root whose latest one is used)."""
        mode = self.cfg.trainer.resume_mode
        if mode == "disable":
            return None
        if mode == "auto":
            return ckpt.find_latest_checkpoint(self.ckpt_root)
        path = Path(mode)
        if (path / "trainer_state.json").is_file():
            return path
        return ckpt.find_latest_checkpoint(path) or path  # a checkpoints root, else loading names the problem

    def maybe_resume(self) -> None:
        """Restore model, optimizer, schedule, RNG, data position, KL coefficient and step (so the curriculum)."""
        path = self.resume_path()
        if path is None:
            return
        self._check_fingerprint(path)
        state = self.actor_rollout_wg.load_checkpoint(str(path))[0]
        if self.critic_wg is not None:
            self.critic_wg.load_checkpoint(str(path))
        self.global_step = int(state["global_step"])
        extra = state["extra_state"]
        if self.train_loader is not None:  # None in trainer.val_only
            self.train_loader.load_state_dict(extra["dataloader"])
        if "kl_coef" in extra:
            self.kl_ctrl.value = float(extra["kl_coef"])
        logger.info("resumed from %s at step %d", path, self.global_step)

    def _check_fingerprint(self, path: Path) -> None:
        """Refuse to resume a checkpoint made with other defining settings (before any weight is loaded)."""
        state_file = Path(path) / "trainer_state.json"
        if not state_file.is_file():
            return  # loading names the problem
        saved = json.loads(state_file.read_text()).get("extra_state", {}).get("fingerprint")
        changes = fingerprint_changes(saved, self.fingerprint()) if saved is not None else []
        if changes:
            raise RunMismatch(
                f"{path} was saved by a run with other settings, so this run does not resume it:\n  "
                + "\n  ".join(changes)
                + "\nTo start a new run, give it its own folder (trainer.experiment_name or "
                "trainer.default_local_dir); to train from the start in this folder anyway, "
                "trainer.resume_mode=disable; to resume that run, use its settings."
            )

    def _stop(
        self, error: Exception, step: int, stage: str, intact: tuple[int, dict] | None
    ) -> TrainingStopped:
        """The error to raise when step `step` failed in `stage`, after saving what can be saved.

        intact: (the step whose state is still whole, the data position to store with it), or None. A failure
        before any weight changed (rollout, reward, log-probs: e.g. a search server that stayed down past its
        retry budget) leaves the state of step - 1 whole, saved with the data position before this step's
        batch, so rerunning the same command continues exactly here; a failure in validation leaves the
        state of this step whole. A failure during an update leaves the weights unknown: nothing is saved."""
        latest = ckpt.find_latest_checkpoint(self.ckpt_root)
        if intact is None:
            saved = f"nothing was saved (the weights may be half-updated); the latest checkpoint is {latest}"
        elif ckpt.step_dir(self.ckpt_root, intact[0]).is_dir():
            saved = f"the state of step {intact[0]} is already saved in {ckpt.step_dir(self.ckpt_root, intact[0])}"
        else:
            try:
                saved = f"the state of step {intact[0]} is saved in {self.save_checkpoint(*intact)}"
            except Exception as save_error:  # report both failures; the original one is the cause
                saved = f"saving the state of step {intact[0]} failed too ({save_error})"
        return TrainingStopped(
            f"training stopped in step {step} during '{stage}': {error}\n{saved}. Fix the cause, then rerun "
            f"the same command: trainer.resume_mode=auto continues from the latest checkpoint in "
            f"{self.ckpt_root}."
        )

    # ----- the loop ------------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Run until exactly total_training_steps steps are done; returns the last validation metrics.
        With trainer.val_only: validate once (the resumed checkpoint's weights, if any) and return."""
        trainer = self.cfg.trainer
        ckpt.remove_stale_staging(self.ckpt_root)  # parts of checkpoints whose writer was killed
        self.maybe_resume()
        if not trainer.val_only and self.global_step >= self.total_steps > 0:
            message = (
                f"this run is finished: it resumed at step {self.global_step} of {self.total_steps} from "
                f"{self.ckpt_root}; nothing to train. Raise trainer.total_training_steps to train on, or give a "
                "new run its own trainer.experiment_name."
            )
            logger.warning(message)
            print(message, file=sys.stderr, flush=True)
            return {}
        last_val: dict[str, float] = {}
        if self.val_dataset is not None and (
            trainer.val_only or (trainer.val_before_train and self.global_step == 0)
        ):
            last_val = self.validate()
            self.tracker.log(last_val, step=self.global_step)
            if trainer.val_only:
                return last_val
        progress = tqdm(total=self.total_steps, initial=self.global_step, desc="training", dynamic_ncols=True)
        while self.global_step < self.total_steps:
            loader_state = self.train_loader.state_dict()
            self.global_step += 1
            self.stage = "load_batch"
            try:
                metrics = self.train_step(self.train_loader.next_batch())
            except Exception as e:
                intact = None if self.stage.startswith("update") else (self.global_step - 1, loader_state)
                raise self._stop(e, self.global_step, self.stage, intact) from e
            if self.val_dataset is not None and trainer.due(trainer.test_freq, self.global_step):
                try:
                    with _timer("testing", metrics):
                        last_val = self.validate()
                except Exception as e:
                    intact = (self.global_step, self.train_loader.state_dict())
                    raise self._stop(e, self.global_step, "validation", intact) from e
                metrics.update(last_val)
            if trainer.due(trainer.save_freq, self.global_step):
                with _timer("save_checkpoint", metrics):
                    self.save_checkpoint()
            self.tracker.log(metrics, step=self.global_step)
            progress.update(1)
        progress.close()
        return last_val
