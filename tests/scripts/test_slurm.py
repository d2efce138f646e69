"""scripts/slurm_zerosearch.sbatch, run outside SLURM with stand-ins for `srun` and `scontrol` that record what
the job would start: a simulation server per node of component 0, a Ray head and worker nodes on component 1,
then the trainer's driver on the head, joining the cluster with the simulators balanced by the client."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _stand_ins(bin_dir: Path, log: Path) -> None:
    bin_dir.mkdir()
    scripts = {
        # `scontrol show hostnames a,b` -> one host per line (a compressed list like a[1-2] is not needed here)
        "scontrol": 'echo "$3" | tr "," "\\n"\n',
        "srun": f'echo "srun $*" >> {log}\n',
        "python": "exit 0\n",  # every /health probe answers
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/usr/bin/env bash\n{body}")
        path.chmod(0o755)


def test_the_heterogeneous_job_starts_simulators_a_ray_cluster_and_the_trainer(tmp_path):
    log = tmp_path / "srun.log"
    bin_dir = tmp_path / "bin"
    _stand_ins(bin_dir, log)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST_HET_GROUP_0": "sim1,sim2",
        "SLURM_JOB_NODELIST_HET_GROUP_1": "gpu1,gpu2",
        "SLURM_SUBMIT_DIR": str(ROOT),
        "SIM_MODEL": "/shared/SimulationLLM_14B",
        "SIM_TP": "2",
        "PYTHON": str(bin_dir / "python"),
        "RAY": "ray",
        "HEAD_IP": "10.0.0.11",
        "RAY_HEAD_WAIT": "0",
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts/slurm_zerosearch.sbatch"), "MODEL_PATH", "/m", "DATA_PATH", "/d"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    simulators = [c for c in calls if "serve_simulator.sh" in c]
    assert len(simulators) == 2 and all(
        "--het-group=0" in c and "HOST=0.0.0.0,TP=2,DP=4" in c for c in simulators
    )
    assert sorted(c.split(" -w ")[1].split()[0] for c in simulators) == [
        "sim1",
        "sim2",
    ]  # started in parallel
    head = next(c for c in calls if "start --head" in c)
    assert "--het-group=1" in head and "-w gpu1" in head and "--node-ip-address=10.0.0.11" in head
    worker = next(c for c in calls if "start --block --address=10.0.0.11:6379" in c)
    assert "-w gpu2" in worker
    trainer = next(c for c in calls if "train_grpo.sh" in c)
    assert "-w gpu1" in trainer and "RAY_ADDRESS=10.0.0.11:6379" in trainer
    assert (
        "train_grpo.sh NNODES 2 NUM_GPUS_PER_NODE 8 IP sim1,sim2 PORT 6001 MODEL_PATH /m DATA_PATH /d"
        in trainer
    )


def test_the_job_names_what_is_missing():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.pop("SIM_MODEL", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts/slurm_zerosearch.sbatch")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "set SIM_MODEL" in proc.stderr
