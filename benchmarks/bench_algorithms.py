"""Learning check per algorithm: do GRPO, PPO and Reinforce++ each raise the toy world's train reward?

Runs the CPU demo pipeline (`toyworld.pipeline`, reusing the built assets in artifacts/toyworld)
once per algorithm, from the same warm start with the same data order, and prints side by side: mean train
reward of the first 10 vs the last 10 steps, and real-search (BM25) held-out EM of the warm start vs the
trained policy. Target: each algorithm raises mean train reward (issue 3/5's learning check; held-out EM is
reported, and judged for GRPO by bench_learning).
"""

from __future__ import annotations

from toyworld.pipeline import Pipeline, PipelineConfig
from toyworld.report import HELDOUT_SOURCE

KIND = "learning"  # tens of minutes: `make bench-learning`, not `make bench`
ALGORITHMS = ("grpo", "ppo", "reinforce_plus_plus")


def main() -> bool:
    reports = {
        name: Pipeline(PipelineConfig(algorithm=name, run_dir=f"outputs/bench_algorithms/{name}")).run()
        for name in ALGORITHMS
    }
    print(
        f"\n{'algorithm':22}{'reward first 10':>16}{'last 10':>10}{'held-out EM before':>20}{'after':>8}  rose"
    )
    for name, r in reports.items():
        before, after = r.metric("before", "em", HELDOUT_SOURCE), r.metric("after", "em", HELDOUT_SOURCE)
        rl_seconds = sum(s for stage, s in r.stage_seconds.items() if stage.startswith("RL"))
        print(
            f"{name:22}{r.reward_first:16.3f}{r.reward_last:10.3f}{before:20.3f}{after:8.3f}  "
            f"{'yes' if r.reward_rose else 'NO'}   (RL {rl_seconds:.0f} s)"
        )
    ok = all(r.reward_rose for r in reports.values())
    print(f"target (every algorithm raises mean train reward): {'met' if ok else 'MISSED'}")
    return ok
