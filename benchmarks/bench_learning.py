"""Learning check: does ZeroSearch-GRPO on the toy world learn to search? (docs/design.md §7: a benchmark, not a test.)

Runs the CPU demo pipeline (`toyworld.pipeline`, reusing built assets in artifacts/toyworld) and
prints, side by side from that one run: mean train reward of the first 10 vs the last 10 GRPO steps, the
train reward of the warm start vs the trained policy on 300 fixed training questions (simulator, noise 0),
and real-search (BM25) EM of the warm start vs the trained policy on held-out people and on training people.
Target: train reward rises AND held-out EM rises. Train-entity EM is reported, not judged: rising alone it
would mean memorisation (docs/design.md §8).

A second RL run from the same warm start with the policy frozen (the control) sees the same questions in
the same steps under the same curriculum; the trained run's last-10-steps reward minus the control's, step
by step, is printed with its standard error. It is reported beside the target, not in it: the first/last
comparison the issue names carries about ±0.03 from which questions fall where, the paired one much less.
"""

from __future__ import annotations

from toyworld.pipeline import Pipeline, PipelineConfig
from toyworld.report import (
    FROZEN_POLICY_OVERRIDE,
    HELDOUT_SOURCE,
    TRAIN_ENTITY_SOURCE,
    WINDOW,
    gain_over_control,
)

KIND = "learning"  # tens of minutes: `make bench-learning`, not `make bench`


def main() -> bool:
    report = Pipeline(PipelineConfig(run_dir="outputs/bench_learning/grpo")).run()
    print(report.table())
    control = Pipeline(
        PipelineConfig(run_dir="outputs/bench_learning/frozen_control", overrides=[FROZEN_POLICY_OVERRIDE])
    ).run()
    rows = [
        ("train reward (first/last 10 steps)", report.reward_first, report.reward_last),
        (
            "held-out EM (warm start/trained)",
            report.metric("before", "em", HELDOUT_SOURCE),
            report.metric("after", "em", HELDOUT_SOURCE),
        ),
        (
            "train-entity EM (warm start/trained)",
            report.metric("before", "em", TRAIN_ENTITY_SOURCE),
            report.metric("after", "em", TRAIN_ENTITY_SOURCE),
        ),
    ]
    if report.fixed_reward is not None:
        rows.insert(1, ("train reward, fixed questions (warm/trained)", *report.fixed_reward))
    print()
    for label, before, after in rows:
        print(f"{label:40}{before:8.3f} -> {after:8.3f}")
    gain, se = gain_over_control(report, control)
    print(
        f"{f'train reward minus a frozen control, last {WINDOW} steps':56}{gain:+8.3f} ± {se:.3f} "
        f"(control: first/last {WINDOW} {control.reward_first:.3f} -> {control.reward_last:.3f})"
    )
    ok = report.reward_rose and report.heldout_em_rose
    print(f"target (train reward and held-out EM both rise): {'met' if ok else 'MISSED'}")
    return ok
