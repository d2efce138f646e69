"""Which labelling teaches search? The paper's (useful = the documents hold the answer) against the engine's
(useful = what the real engine found for that query, answer or not), in the toy world (docs/simtune.md).

The paper labels a document set useful when it holds the answer, so a simulator tuned on it learns to put the
answer in useful documents whatever the query; RL under it pays a vague query like a precise one. For each
labelling this builds the simulation-tuning pairs (toyworld.simtune, the same scripted searches of the world's
BM25), fine-tunes a simulator from the same base model with the demo's recipe, and runs the demo's RL stage
under it with two seeds (`trainer.seed`): each run audits its simulator first (zerosearch.simtune audit) and
validates the warm start and the trained policy with the real engine on held-out people. Printed: each
simulator's audit, and held-out EM warm start -> trained per seed (a report: it has no target). Reuses the demo's assets
(artifacts/toyworld: the base model, demonstrations, warm-start policy); about 45 minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

KIND = "learning"  # tens of minutes: `make bench-learning`, not `make bench`
ASSETS = Path("artifacts/toyworld")
OUT = Path("outputs/bench_simulator_labelling")
SEEDS = (1, 2)


def write_pairs_file(assets: Path, labelling: str, batch_size: int) -> str:
    """The pairs of `labelling` for the assets' world, length-bucketed as the simulator stage reads them."""
    from toyworld.corpus import build_corpus
    from toyworld.pipeline import _write_rows, bucket_by_length
    from toyworld.questions import build_questions
    from toyworld.simtune import build_simtune_pairs
    from toyworld.world import World

    build = json.loads((assets / "manifest.json").read_text())["config"]
    world = World.load(assets / "world.json")
    splits = build_questions(world, build["val_size"], build["test_size"], build["train_entity_eval_size"])
    pairs, stats = build_simtune_pairs(
        world,
        build_corpus(world),
        splits.train,
        build["simtune_questions"],
        build["queries_per_question"],
        build["topk"],
        labelling=labelling,
    )
    name = f"simtune_{labelling}_bucketed.parquet"
    _write_rows(bucket_by_length(pairs, batch_size, seed=0), assets / name)
    print(f"{labelling}: {stats.kept_per_label} useful + {stats.kept_per_label} noisy pairs", flush=True)
    return name


def main() -> bool:
    from toyworld.pipeline import Pipeline, PipelineConfig, load_sft_stages
    from toyworld.report import HELDOUT_SOURCE

    base = load_sft_stages()["simulator"]
    rows = []
    for labelling in ("paper", "engine"):
        data = write_pairs_file(ASSETS, labelling, base.batch_size)
        simulator = dataclasses.replace(base, name=f"model_simulator_{labelling}", data=data)
        for seed in SEEDS:
            run_dir = OUT / labelling / f"seed{seed}"
            config = PipelineConfig(run_dir=run_dir, simulator=simulator, overrides=[f"trainer.seed={seed}"])
            report = Pipeline(config).run()
            (audit,) = json.loads((run_dir / "simulator_audit" / "audit.json").read_text())[
                "simulators"
            ].values()
            rows.append(
                (
                    labelling,
                    seed,
                    audit,
                    report.metric("before", "em", HELDOUT_SOURCE),
                    report.metric("after", "em", HELDOUT_SOURCE),
                )
            )
    print()
    print("| labelling | seed | useful | noisy | weak | unrelated | gap ± SE | held-out EM warm -> trained |")
    print("|---|---|---|---|---|---|---|---|")
    for labelling, seed, a, before, after in rows:
        print(
            f"| {labelling} | {seed} | {a['useful_answer_rate']:.0%} | {a['noisy_answer_rate']:.0%} | "
            f"{a['weak_useful_answer_rate']:.0%} | {a['unrelated_useful_answer_rate']:.0%} | "
            f"{a['query_sensitivity_gap']:+.2f} ± {a['query_sensitivity_gap_se']:.2f} | "
            f"{before:.3f} -> {after:.3f} ({after - before:+.3f}) |"
        )
    return True


if __name__ == "__main__":
    main()
