"""What a toy-world run learned, read from the trainer's metrics.jsonl, and the demo's summary table.

The trainer logs validation before training (step 0: the warm start) and at the end (the trained policy),
per data_source. The pipeline's evaluation files name their sources `heldout` (test people, never seen in
any training or SFT data) and `train_entities` (people the run trains on), so both EMs sit side by side:
memorisation shows as train-entity EM rising alone (docs/design.md §8).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

HELDOUT_SOURCE = "heldout"
TRAIN_ENTITY_SOURCE = "train_entities"
# Fixed single-hop training questions searched with the RL stage's own engine at noise 0: their F1 is the
# train reward on the same questions before and after training (greedy), where the first/last-10-steps
# means compare different questions under a rising noise.
TRAIN_FIXED_SOURCE = "train_fixed"
REWARD_KEY = "critic/score/mean"
# The same over trajectories none of whose searches came back noisy: the curriculum raises the noise to
# its end value over the run, which lowers the plain train reward's last steps whatever the policy learnt.
USEFUL_REWARD_KEY = "critic/score/mean_where/no_noisy_search"
WINDOW = 10


@dataclass
class LearningReport:
    """Warm start vs trained policy (real-search EM/F1 per source) and train reward first vs last steps."""

    before: dict[str, float]
    after: dict[str, float]
    rewards: list[float]
    useful_rewards: list[float] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # Mean seconds per RL step of each trainer phase (`timing_s/<phase>`), the agent's search wait included.
    step_seconds: dict[str, float] = field(default_factory=dict)
    peak_memory_gib: float = 0.0
    wall_seconds: float | None = None  # the pipeline from its start to the summary, as a clock measures it
    evaluation: str | None = None  # the evaluation harness's line: its held-out figure and results folder
    audit: str | None = None  # the simulator audit's line: answer rates and the query-sensitivity gap

    @property
    def reward_first(self) -> float:
        return _mean(self.rewards[:WINDOW])

    @property
    def reward_last(self) -> float:
        return _mean(self.rewards[-WINDOW:])

    def metric(self, when: str, name: str, source: str) -> float:
        values = self.before if when == "before" else self.after
        key = f"val/{name}/{source}"
        if key not in values:
            raise KeyError(f"validation metric {key} missing ({when} training); logged: {sorted(values)}")
        return values[key]

    @property
    def reward_rose(self) -> bool:
        return self.reward_last > self.reward_first

    @property
    def reward_change_se(self) -> float:
        """One standard error of reward_last - reward_first, from the scatter of the steps' rewards within
        each window (which questions fall in which step, and the sampling): an unchanged policy moves the
        reward by more than two of these only about one run in twenty."""
        return _window_change_se(self.rewards)

    @property
    def fixed_reward(self) -> tuple[float, float] | None:
        """Train reward on the fixed training questions, warm start and trained (None if not validated)."""
        key = f"val/f1/{TRAIN_FIXED_SOURCE}"
        if key not in self.before or key not in self.after:
            return None
        return self.before[key], self.after[key]

    @property
    def heldout_em_rose(self) -> bool:
        return self.metric("after", "em", HELDOUT_SOURCE) > self.metric("before", "em", HELDOUT_SOURCE)

    def table(self) -> str:
        """The summary the demo prints."""
        lines = [f"{'':36}{'warm start':>12}{'trained':>12}{'change':>10}{'± s.e.':>9}"]
        for label, name, source in (
            ("held-out EM (real search)", "em", HELDOUT_SOURCE),
            ("held-out F1", "f1", HELDOUT_SOURCE),
            ("train-entity EM", "em", TRAIN_ENTITY_SOURCE),
            ("train-entity F1", "f1", TRAIN_ENTITY_SOURCE),
        ):
            a, b = self.metric("before", name, source), self.metric("after", name, source)
            lines.append(f"{label:36}{a:12.3f}{b:12.3f}{b - a:+10.3f}")
        n = min(WINDOW, len(self.rewards))
        lines.append(
            f"{f'train reward, first/last {n} steps':36}{self.reward_first:12.3f}{self.reward_last:12.3f}"
            f"{self.reward_last - self.reward_first:+10.3f}{self.reward_change_se:9.3f}"
        )
        if self.useful_rewards:
            first, last = _mean(self.useful_rewards[:WINDOW]), _mean(self.useful_rewards[-WINDOW:])
            lines.append(
                f"{'  ... trajectories no noise touched':36}{first:12.3f}{last:12.3f}{last - first:+10.3f}"
                f"{_window_change_se(self.useful_rewards):9.3f}"
            )
        if self.fixed_reward is not None:
            a, b = self.fixed_reward
            lines.append(f"{'train reward, fixed questions, noise 0':36}{a:12.3f}{b:12.3f}{b - a:+10.3f}")
        lines.append("")
        for stage, seconds in self.stage_seconds.items():
            lines.append(f"{'time: ' + stage:52}{seconds:8.1f} s")
        lines.append(f"{'time: total':52}{sum(self.stage_seconds.values()):8.1f} s")
        if self.wall_seconds is not None:
            lines.append(f"{'time: wall clock (pipeline)':52}{self.wall_seconds:8.1f} s")
        if self.step_seconds.get("step"):
            step = self.step_seconds["step"]
            lines.append(f"{'time per RL step (mean)':52}{step:8.1f} s")
            for phase in ("gen", "search", "update_actor"):
                if phase in self.step_seconds:
                    label = "  waiting for search (in gen)" if phase == "search" else f"  {phase}"
                    seconds = self.step_seconds[phase]
                    lines.append(f"{label:52}{seconds:8.1f} s{seconds / step:6.0%}")
        lines.append(f"{'peak memory (process tree)':52}{self.peak_memory_gib:8.2f} GiB")
        verdict = f"learning: train reward {'rose' if self.reward_rose else 'did NOT rise'}"
        change = self.reward_last - self.reward_first
        if self.reward_rose and change < 2 * self.reward_change_se:
            verdict += " (by less than two standard errors)"
        if self.fixed_reward is not None:
            rose = self.fixed_reward[1] > self.fixed_reward[0]
            verdict += f" (on fixed questions: {'rose' if rose else 'did NOT rise'})"
        lines.append(f"{verdict}; held-out EM {'rose' if self.heldout_em_rose else 'did NOT rise'}")
        if self.audit:
            lines.append(self.audit)
        if self.evaluation:
            lines.append(self.evaluation)
        return "\n".join(lines)


# The override that freezes the policy for a control run. The trainer takes no lr of 0; Adam's steps of at
# most ~1e-12 per update move no weight by more than ~1e-10 over a run, and a run with it validated exactly
# like its warm start (dev/LOG.md).
FROZEN_POLICY_OVERRIDE = "actor_rollout_ref.actor.optim.lr=1e-12"


def gain_over_control(trained: LearningReport, control: LearningReport) -> tuple[float, float]:
    """Mean over the last WINDOW steps of the trained run's train reward minus the control's, step by step,
    and its standard error. The control is the same run with the policy frozen (FROZEN_POLICY_OVERRIDE):
    the same questions in the same steps under the same curriculum, so the difference is what training
    changed, free of which questions fall in which step, which moves the first/last comparison most."""
    if len(trained.rewards) != len(control.rewards):
        raise ValueError(
            f"the trained run logged {len(trained.rewards)} steps and the control {len(control.rewards)}: "
            "a control must run the same steps"
        )
    diffs = [a - b for a, b in zip(trained.rewards[-WINDOW:], control.rewards[-WINDOW:], strict=True)]
    return _mean(diffs), _variance_of_mean(diffs) ** 0.5


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _variance_of_mean(values: list[float]) -> float:
    """The squared standard error of mean(values) (sample variance over the count); nan for fewer than two."""
    return statistics.variance(values) / len(values) if len(values) >= 2 else float("nan")


def _window_change_se(values: list[float]) -> float:
    """Standard error of mean(last WINDOW) - mean(first WINDOW); nan when a window holds fewer than two steps."""
    return (_variance_of_mean(values[:WINDOW]) + _variance_of_mean(values[-WINDOW:])) ** 0.5


def read_learning(metrics_path: str | Path) -> LearningReport:
    """Warm-start and final validation metrics and the per-step train reward from a run's metrics.jsonl."""
    path = Path(metrics_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (did the RL run start?)")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    validations = [r for r in records if any(k.startswith("val/") for k in r)]
    if len(validations) < 2:
        raise ValueError(f"{path}: expected validation before and after training, found {len(validations)}")
    by_step: dict[int, dict] = {}  # a resumed run may log a step again: the last record counts
    for r in records:
        if REWARD_KEY in r:
            by_step[int(r.get("step", len(by_step) + 1))] = r
    steps = [by_step[s] for s in sorted(by_step)]
    if not steps:
        raise ValueError(f"{path}: no training step logged {REWARD_KEY}")
    timed = {k for r in steps for k in r if k.startswith("timing_s/")}  # not the validation or the saving
    timed -= {"timing_s/testing", "timing_s/save_checkpoint"}
    step_seconds = {k[len("timing_s/") :]: _mean([r[k] for r in steps if k in r]) for k in sorted(timed)}
    before = {k: v for k, v in validations[0].items() if k.startswith("val/")}
    after = {k: v for k, v in validations[-1].items() if k.startswith("val/")}
    return LearningReport(
        before,
        after,
        [float(r[REWARD_KEY]) for r in steps],
        [float(r[USEFUL_REWARD_KEY]) for r in steps if USEFUL_REWARD_KEY in r],
        step_seconds=step_seconds,
    )
