"""The project's GRPO step beside TRL's GRPOTrainer, timed in one run (issue 29, item 3).

Both trainers train the same tiny Qwen2 model (hidden 128, 2 layers, 4 heads, 2 KV heads, tied embeddings,
a byte-level BPE of 1024 tokens trained here, ChatML template; built by toyworld.tiny into one folder both
load) on the same single-turn task (benchmarks.peer_task: "what is the code word for ...?", a two-word
answer, token-F1 reward): 8 prompts x 5 samples per step, at most 32 new tokens, temperature 1, one
optimizer step per generation, no reference model (KL off), fp32, no gradient checkpointing, token-mean
loss, 12 steps.

* The project's side is the real trainer: `python -m verl.trainer.main_ppo` with one CPU rank
  (ActorRolloutRefWorker on Ray, FSDP2, the transformers rollout), the search-free single-turn agent loop
  (benchmarks.peer_agent, llm_agent's loop with max_turns=0) and the task's reward (reward.score_fn).
  Its per-phase times are the trainer's own metrics (metrics.jsonl): timing_s/step, timing_s/gen,
  timing_s/old_log_prob, and the actor's timing_s/actor/forward_backward and timing_s/actor/optimizer.
* TRL's side is benchmarks/trl_harness.py run by TRL's environment (.venv-trl: `make .venv-trl/.installed`,
  trl 1.16.0 on the same torch), with `use_cpu`, no vLLM, bf16 and gradient checkpointing off.
* Threads: TRL runs in one process with 2 torch threads (this machine's cores); the project's rank gets
  `trainer.cpu_threads_per_rank=2` (its default is 1 thread per rank, right for the 2-rank demo), so each
  side computes on both cores.

The two alternate, RUNS each (P T, T P, P T, ...), because this machine's speed drifts by up to 1.5x
between runs. Each run's figures are medians of steps 3-12; the figures below are medians over runs.
TRL computes no old log-probs when it is on-policy; the project always runs that forward, so the ratio is
given with it (as run) and without it (the project's step less its old-log-prob phase).
Target: the project's step at most 1.0x TRL's (the stretch goal is 0.5x).
Peak memory: TRL's one process; the project's driver plus its rank (Ray's own daemons not counted).

    python -m benchmarks bench_trl        (9-11 minutes on 2 shared cores; KIND "peer": not in `make bench`)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.peer_task import (
    measured,
    median_over_runs,
    parse_result,
    run_median,
    task_rows,
    tokenizer_corpus,
)

KIND = "peer"  # needs TRL's environment and minutes: `make bench-trl`, or by name, not `make bench`

RUNS, STEPS, PROMPTS, GROUP, NEW_TOKENS, THREADS = 3, 12, 8, 5, 32, 2
TARGET = 1.0
ROOT = Path(__file__).resolve().parents[1]
TRL_PYTHON = ROOT / ".venv-trl" / "bin" / "python"
WORKDIR = ROOT / "outputs" / "bench_trl"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
PHASES = ("generate_s", "old_log_prob_s", "forward_backward_s", "optimizer_s")


def build_model(folder: Path) -> Path:
    """The tiny Qwen2 policy and its tokenizer in `folder`/model (rebuilt every run: a few seconds)."""
    from toyworld.tiny import build_tiny_model, train_tokenizer

    tokenizer = train_tokenizer(tokenizer_corpus(), folder / "tokenizer", vocab_size=1024, tag_tokens=False)
    return build_tiny_model(tokenizer, folder / "model", num_layers=2, num_heads=4, num_kv_heads=2)


def write_prompts(path: Path) -> Path:
    """The task's rows (one epoch of STEPS batches) as a parquet file in the trainer's question format."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "data_source": "code_word",
            "prompt": [{"role": "user", "content": row["question"]}],
            "reward_model": {"ground_truth": row["code"]},
            "extra_info": {"index": i},
        }
        for i, row in enumerate(task_rows(PROMPTS * STEPS))
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def project_overrides(model: Path, prompts: Path, run_dir: Path) -> list[str]:
    """The trainer's command line for the benchmark's configuration (see the module docstring)."""
    arr = "actor_rollout_ref"
    return [
        f"data.train_files={prompts}",
        "data.val_files=[]",
        f"data.train_batch_size={PROMPTS}",
        "data.max_prompt_length=128",
        "data.use_chat_template=true",
        "data.row_check=null",
        f"{arr}.model.path={model}",
        f"{arr}.model.dtype=float32",
        f"{arr}.model.enable_gradient_checkpointing=false",
        f"{arr}.actor.ppo_mini_batch_size={PROMPTS}",
        f"{arr}.actor.ppo_micro_batch_size_per_gpu={PROMPTS * GROUP}",
        f"{arr}.actor.ppo_epochs=1",
        f"{arr}.actor.use_kl_loss=false",
        f"{arr}.actor.entropy_coeff=0.0",
        f"{arr}.actor.loss_agg_mode=token-mean",
        f"{arr}.actor.optim.lr=1e-6",
        f"{arr}.actor.optim.lr_warmup_steps_ratio=0.0",
        f"{arr}.actor.optim.lr_scheduler=constant",
        f"{arr}.rollout.name=hf",
        f"{arr}.rollout.n={GROUP}",
        f"{arr}.rollout.temperature=1.0",
        f"{arr}.rollout.top_p=1.0",
        f"{arr}.rollout.response_length={NEW_TOKENS}",
        f"{arr}.rollout.dtype=float32",
        f"{arr}.rollout.log_prob_micro_batch_size_per_gpu={PROMPTS * GROUP}",
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=false",
        "algorithm.skip_step_without_signal=false",
        "agent._target_=benchmarks.peer_agent.SingleTurnAgentLoop",
        f"agent.max_tokens_per_turn={NEW_TOKENS}",
        f"agent.max_response_length={NEW_TOKENS}",
        "reward.score_fn=benchmarks.peer_task.score",
        "reward.metric=f1",
        "reward.metrics_fn=null",
        f"trainer.total_training_steps={STEPS}",
        "trainer.test_freq=-1",
        "trainer.val_before_train=false",
        "trainer.save_freq=-1",
        "trainer.sample_table_freq=0",
        "trainer.logger=[jsonl]",
        "trainer.device=cpu",
        "trainer.n_gpus_per_node=1",
        f"trainer.cpu_threads_per_rank={THREADS}",
        "trainer.resume_mode=disable",
        "trainer.seed=1",
        f"trainer.default_local_dir={run_dir}",
        f"ray_init.num_cpus={THREADS}",
    ]


def _run(command: list[str], log: Path) -> float:
    """Run `command` from the repository root, its output to `log`; returns its peak RSS in MiB (wait4).
    A failure raises with the log's tail."""
    env = {**os.environ, **OFFLINE, "TOKENIZERS_PARALLELISM": "false"}
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"{command[:3]} failed (exit {proc.returncode}); {log}:\n{tail}")
    return usage.ru_maxrss / 1024


def project_result(metrics: list[dict], driver_peak_mib: float) -> dict:
    """A project run's figures from its metrics.jsonl records (one per step, in step order)."""
    steps = sorted((m for m in metrics if "timing_s/step" in m), key=lambda m: m["step"])
    if len(steps) != STEPS:
        raise RuntimeError(f"the project's run logged {len(steps)} steps, expected {STEPS}")

    def series(key):
        return [float(m[key]) for m in steps]

    tokens = series("response_tokens/total")
    return {
        "side": "project",
        "step_s": run_median(series("timing_s/step")),
        "generate_s": run_median(series("timing_s/gen")),
        # An on-policy update runs no old-log-prob pass (PPOTrainerConfig.needs_old_log_prob): 0 s then.
        "old_log_prob_s": run_median([float(m.get("timing_s/old_log_prob", 0.0)) for m in steps]),
        "forward_backward_s": run_median(series("timing_s/actor/forward_backward")),
        "optimizer_s": run_median(series("timing_s/actor/optimizer")),
        "update_actor_s": run_median(series("timing_s/update_actor")),
        "tokens_per_step": run_median(tokens),
        "prompt_tokens_per_step": run_median([m["prompt_length/mean"] * PROMPTS * GROUP for m in steps]),
        "tokens_per_s": sum(measured(tokens)) / sum(measured(series("timing_s/step"))),
        "peak_rss_mib": driver_peak_mib + max(series("perf/peak_rss_mib")),
        "driver_peak_rss_mib": driver_peak_mib,
        "rank_peak_rss_mib": max(series("perf/peak_rss_mib")),
        "steps": [round(s, 5) for s in series("timing_s/step")],
    }


def run_project(model: Path, prompts: Path, index: int) -> dict:
    import json

    run_dir = WORKDIR / f"project_{index}"
    if (run_dir / "metrics.jsonl").exists():
        (run_dir / "metrics.jsonl").unlink()
    command = [sys.executable, "-m", "verl.trainer.main_ppo", *project_overrides(model, prompts, run_dir)]
    peak = _run(command, WORKDIR / f"project_{index}.log")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return project_result(records, peak)


def run_trl(model: Path, index: int) -> dict:
    log = WORKDIR / f"trl_{index}.log"
    command = [
        str(TRL_PYTHON),
        str(ROOT / "benchmarks" / "trl_harness.py"),
        f"--model={model}",
        f"--steps={STEPS}",
        f"--prompts={PROMPTS}",
        f"--group={GROUP}",
        f"--max-new-tokens={NEW_TOKENS}",
        f"--threads={THREADS}",
    ]
    _run(command, log)
    return parse_result(log.read_text())


def ratios(project: list[dict], trl: list[dict]) -> tuple[float, float]:
    """(project step / TRL step, project step less its old-log-prob pass / TRL step), medians over runs."""
    trl_step = median_over_runs(trl, "step_s")
    with_old = median_over_runs(project, "step_s") / trl_step
    without = [{"s": run["step_s"] - run["old_log_prob_s"]} for run in project]
    return with_old, median_over_runs(without, "s") / trl_step


def _row(run: dict) -> str:
    phases = "  ".join(f"{run[p] * 1e3:6.1f}" for p in PHASES)
    return (
        f"{run['side']:8} {run['step_s'] * 1e3:7.1f}  {phases}  {run['tokens_per_s']:7.0f}  "
        f"{run['tokens_per_step']:5.0f}  {run['peak_rss_mib']:6.0f}"
    )


def table(project: list[dict], trl: list[dict]) -> str:
    header = (
        "side     step ms  gen ms  oldlp ms  fwd+bwd ms  optim ms  tok/s  tok/step  peak MiB\n"
        "         (each: median of steps 3-12 of one run; tok/s: generated tokens / step wall time)"
    )
    lines = [header]
    for i, (p, t) in enumerate(zip(project, trl, strict=True), 1):
        pair = p["step_s"] / t["step_s"]
        lines += [f"run {i} (this pair's step ratio {pair:.2f})", "  " + _row(p), "  " + _row(t)]
    keys = ("step_s", *PHASES, "tokens_per_s", "tokens_per_step", "peak_rss_mib")
    medians = [
        {"side": side, **{k: median_over_runs(runs, k) for k in keys}}
        for side, runs in (("project", project), ("trl", trl))
    ]
    lines += ["median over runs", "  " + _row(medians[0]), "  " + _row(medians[1])]
    return "\n".join(lines)


def main() -> bool:
    if not TRL_PYTHON.exists():
        print(f"not run: TRL's environment {TRL_PYTHON.parent.parent} is missing (make .venv-trl/.installed)")
        return False
    WORKDIR.mkdir(parents=True, exist_ok=True)
    model = build_model(WORKDIR)
    prompts = write_prompts(WORKDIR / "prompts.parquet")
    project, trl = [], []
    start = time.perf_counter()
    for i in range(RUNS):
        order = ("project", "trl") if i % 2 == 0 else ("trl", "project")
        for side in order:
            if side == "project":
                project.append(run_project(model, prompts, i))
            else:
                trl.append(run_trl(model, i))
            print(
                f"run {i + 1} {side}: step {(project if side == 'project' else trl)[-1]['step_s'] * 1e3:.1f} ms"
                f" ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    print(table(project, trl))
    with_old, without = ratios(project, trl)
    print(
        f"prompt tokens per step: project {median_over_runs(project, 'prompt_tokens_per_step'):.0f}, "
        f"TRL {median_over_runs(trl, 'prompt_tokens_per_step'):.0f} (the same prompts, tokenized by each side)"
    )
    print(f"ratio project / TRL step time: {with_old:.2f} (the project's old-log-prob pass included)")
    print(f"ratio project / TRL step time without the old-log-prob pass: {without:.2f}")
    ok = with_old <= TARGET
    print(f"target: at most {TARGET:.1f}x TRL's step ({'met' if ok else 'MISSED'}; stretch goal 0.5x)")
    return ok
