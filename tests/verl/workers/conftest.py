"""Launch `dist_scenarios.py` as N real processes (one per rank), the way torchrun would: over gloo on the CPU,
or over nccl on CUDA (one rank per GPU) where a test asks for it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zerosearch.utils.serving import find_free_port

SCRIPT = Path(__file__).with_name("dist_scenarios.py")


def run_scenario(
    world_size: int,
    model_dir: Path,
    out_dir: Path,
    timeout: float = 240,
    script: Path = SCRIPT,
    cuda: bool = False,
) -> dict:
    """Run `script` (default dist_scenarios.py) on `world_size` ranks; rank 0's OUT_DIR/result.pt, on the CPU.
    cuda=False hides every GPU (gloo ranks even where one exists); cuda=True leaves them visible (nccl)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    port = find_free_port()
    procs = []
    for rank in range(world_size):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE=str(world_size),
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        if not cuda:
            env["CUDA_VISIBLE_DEVICES"] = ""
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(model_dir), str(out_dir)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = [(rank, proc.returncode) for rank, proc in enumerate(procs) if proc.returncode != 0]
    if failed:
        raise AssertionError(f"the scenario failed on ranks {failed}:\n" + "\n".join(logs)[-6000:])
    return torch.load(out_dir / "result.pt", weights_only=True, map_location="cpu")


@pytest.fixture(scope="session")
def scenario_runner():
    return run_scenario


@pytest.fixture(scope="session")
def scenarios():
    """dist_scenarios as a module (the batch builder and config the distributed tests use)."""
    spec = importlib.util.spec_from_file_location("verl_worker_dist_scenarios", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
