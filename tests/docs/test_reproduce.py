"""docs/reproduce.md, run for real at toy scale on CPU: its settings block replaced, every step block run in
order, exactly as written, by bash from the repository root."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_HUB_ID
from tests.zerosearch.data.flashrag import SPLITS, write_flashrag
from zerosearch.utils.serving import find_free_port

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "reproduce.md"
# The run made small: 2 steps of 4 questions x 2 samples on 2 CPU ranks, one short turn, a short simulator.
TOY_EXTRA = " ".join(
    [
        "trainer.total_training_steps=2",
        "data.train_batch_size=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.rollout.response_length=16",
        "agent.max_turns=1",
        "agent.max_tokens_per_turn=16",
        "agent.max_response_length=256",
        "agent.max_obs_length=128",
        "+search.max_tokens=32",
        "ray_init.num_cpus=2",
    ]
)


def blocks(text: str) -> tuple[str, list[str]]:
    """(the settings block, the step blocks in order): the ```bash block after '## Settings' and after each
    heading that ends in '(step)'."""
    sections = re.split(r"^## ", text, flags=re.M)
    settings, steps = None, []
    for section in sections:
        heading = section.split("\n", 1)[0]
        code = re.search(r"```bash\n(.*?)```", section, re.S)
        if heading.strip() == "Settings":
            settings = code.group(1)
        elif heading.rstrip().endswith("(step)"):
            steps.append(code.group(1))
    assert settings is not None and steps
    return settings, steps


def test_the_guide_has_its_settings_and_steps_in_order():
    settings, steps = blocks(GUIDE.read_text())
    assert "export EXTRA=" in settings
    assert [s.split()[0] for s in steps] == [
        "python",
        "GPUS=$SIM_GPUS",
        "bash",
        "bash",
        "kill",
    ]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_every_step_of_the_guide_runs_at_toy_scale(tmp_path, tiny_model_dir, tiny_model_hub_cache):
    _, steps = blocks(GUIDE.read_text())
    rows = {name: 5 if name == "bamboogle" else 3 for name in SPLITS}  # one dataset larger than the rest
    source = write_flashrag(tmp_path / "flashrag", {n: dict.fromkeys(s, rows[n]) for n, s in SPLITS.items()})
    run_dir = tmp_path / "run"
    settings = {
        "DATA": str(tmp_path / "data"),
        "SOURCE": str(source),
        "POLICY": TINY_HUB_ID,  # a hub id, resolved offline from the test's cache
        "SIMULATOR": str(tiny_model_dir),
        "ENGINE": "builtin",
        "SIM_PORT": str(find_free_port()),
        "SIM_PYTHON": sys.executable,
        "SIM_GPUS": "",
        "TRAIN_GPUS": "",  # no GPUs: the device lists stay empty and the profile off
        "NGPUS": "2",
        "PROFILE": "",
        "EXTRA": f"{TOY_EXTRA} trainer.default_local_dir={run_dir}",
        "PYTHON": sys.executable,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # the guide's activated venv
        "HF_HUB_CACHE": str(tiny_model_hub_cache),
        "HF_HUB_OFFLINE": "1",
        "RAY_AUTH_MODE": "disabled",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
    }
    script = "set -euo pipefail\n" + "\n".join(steps)
    pid_file = ROOT / "simulator.pid"
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=ROOT,
        env={**os.environ, **settings},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=1100)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if pid_file.is_file():  # the guide's last step failed to stop it: do it here
            subprocess.run(["kill", pid_file.read_text().strip()], check=False)
        for leftover in (pid_file, ROOT / "simulator.log"):
            leftover.unlink(missing_ok=True)
    assert proc.returncode == 0, output[-4000:]
    assert (tmp_path / "data" / "train.parquet").is_file() and (tmp_path / "data" / "test.parquet").is_file()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [
        1,
        2,
        2,
    ]  # two steps (the last validated), then the evaluation
    assert (
        "val/f1/bamboogle" in lines[1] and lines[2]["val/f1/nq"] == lines[1]["val/f1/nq"]
    )  # same weights, greedy
    assert (run_dir / "checkpoints" / "global_step_2").is_dir()
    # the paper's Avg counts each dataset once; the pooled figure counts each row
    per_source = {name: lines[2][f"val/f1/{name}"] for name in SPLITS}
    assert lines[2]["val/f1/avg_over_sources"] == pytest.approx(sum(per_source.values()) / len(per_source))
    pooled = sum(per_source[n] * rows[n] for n in SPLITS) / sum(rows.values())
    assert lines[2]["val/f1/all"] == pytest.approx(pooled)
