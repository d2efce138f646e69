"""Running `python -m verl.trainer.main_ppo` for real in the trainer's end-to-end tests: a tiny toy dataset,
the overrides of a 2-rank CPU run with short rollouts, and readers for what the run writes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from zerosearch.data.schema import make_row, write_dataset
from zerosearch.templates import policy_messages

QUESTIONS = [
    ("Where was Alice Smith born?", ["Paris"]),
    ("Who employs Bob Jones?", ["Acme Corporation", "Acme"]),
    ("Where does Carol Diaz live?", ["Rome"]),
    ("Which university did Dan Wu attend?", ["Halvic Institute"]),
]


def write_toy_dataset(path: Path) -> Path:
    rows = [
        make_row(
            question=q, golden_answers=a, prompt=policy_messages(q), data_source="toy", split="train", index=i
        )
        for i, (q, a) in enumerate(QUESTIONS)
    ]
    return write_dataset(rows, path)


def valid_overrides(dataset: Path, model: Path) -> list[str]:
    """The smallest valid config: 4 prompts x 2 samples per step on 2 ranks."""
    return [
        f"data.train_files={dataset}",
        f"actor_rollout_ref.model.path={model}",
        "data.train_batch_size=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.rollout.n=2",
        "trainer.n_gpus_per_node=2",
    ]


def trainer_env() -> dict[str, str]:
    return {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
    }


def trainer_command(dataset: Path, model: Path, sim_url: str, run_dir: Path, steps: int, extra: list[str]):
    """The command line of a short CPU run against the simulation server at sim_url (run_dir: its folder)."""
    return [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        *valid_overrides(dataset, model),
        f"data.val_files=[{dataset}]",
        "trainer.device=cpu",  # 2 gloo ranks on every host, GPU or not (a test overrides it for CUDA)
        "data.max_prompt_length=512",
        f"search.urls=[{sim_url}]",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        # An untrained model rarely answers, so rewards (and GRPO advantages) are 0: the entropy bonus is
        # what gives the update a gradient, proving the trained weights reach the checkpoint.
        "actor_rollout_ref.actor.entropy_coeff=0.01",
        "actor_rollout_ref.rollout.response_length=16",
        "agent.max_tokens_per_turn=16",
        "agent.max_response_length=256",
        "agent.max_obs_length=128",
        "agent.max_turns=1",
        "algorithm.skip_step_without_signal=false",
        f"trainer.total_training_steps={steps}",
        "trainer.test_freq=0",
        "trainer.save_freq=0",
        "trainer.val_before_train=false",
        "ray_init.num_cpus=2",
        "trainer.sample_table_freq=1",
        f"trainer.default_local_dir={run_dir}",
        *extra,
    ]


def read_steps(run_dir: Path) -> list[dict]:
    """Every metrics line the run wrote, in order."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def read_samples(run_dir: Path) -> list[dict]:
    """Every sample-table row the run wrote, in order."""
    path = run_dir / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
