"""Multi-node training on a real Ray cluster of two nodes (a head and a worker node, started with `ray start` as
separate Ray nodes on this machine): the driver joins it through RAY_ADDRESS, trainer.nnodes=2 puts one CPU
rank on each node, FSDP2's gloo process group spans them, two GRPO steps search two simulation-server replicas,
the run checkpoints, and a second run resumes from that checkpoint on the same two nodes.

The cluster's state lives in its own temporary folder, and its nodes are stopped through the processes this
test started (never `ray stop`, which would end every Ray process on the machine). `pytest -k multinode`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.verl.trainer.cli_runs import read_steps, trainer_command, trainer_env, write_toy_dataset
from zerosearch.utils.serving import ServerProcess, find_free_port

RAY = str(Path(sys.executable).with_name("ray"))
# Each node is sized by `ray start`, as on a cluster: one CPU (so one rank) and a small object store.
NODE_OPTIONS = ["--num-cpus=1", "--num-gpus=0", "--object-store-memory=150000000", "--block"]


class TwoNodeCluster:
    """A head node and a worker node, each a `ray start --block` process in its own process group."""

    def __init__(self, log_dir: Path):
        # Ray's socket paths must stay under ~100 characters: a short folder of its own under /tmp.
        self.temp_dir = tempfile.mkdtemp(prefix="zsmn")
        self.port = find_free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": self.temp_dir}
        self.env.pop("RAY_ADDRESS", None)
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.log_dir / f"ray_{name}.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                [RAY, "start", *args, *NODE_OPTIONS],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def __enter__(self) -> TwoNodeCluster:
        self._start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                "--node-ip-address=127.0.0.1",
                f"--temp-dir={self.temp_dir}",
                "--include-dashboard=false",
            ],
        )
        self.wait_for_nodes(1)
        self._start("worker", [f"--address={self.address}", "--node-ip-address=127.0.0.1"])
        self.node_ids = self.wait_for_nodes(2)
        return self

    def wait_for_nodes(self, count: int, timeout_s: float = 120.0) -> list[str]:
        """The ids of the cluster's alive nodes once there are `count` of them."""
        probe = (
            "import json, ray\n"
            f"ray.init(address='{self.address}', logging_level='ERROR')\n"
            "print(json.dumps(sorted(n['NodeID'] for n in ray.nodes() if n['Alive'])))\n"
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"a ray start process exited with {proc.returncode}: see {self.log_dir}"
                    )
            result = subprocess.run(
                [sys.executable, "-c", probe], env=self.env, capture_output=True, text=True, timeout=60
            )
            if result.returncode == 0:
                nodes = json.loads(result.stdout.strip().splitlines()[-1])
                if len(nodes) >= count:
                    return nodes
            time.sleep(1.0)
        raise TimeoutError(f"the Ray cluster at {self.address} did not reach {count} nodes in {timeout_s:g}s")

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):  # the worker node first, then the head
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _train(cluster: TwoNodeCluster, cmd: list[str], log: Path) -> str:
    env = {**trainer_env(), "RAY_ADDRESS": cluster.address, "RAY_TMPDIR": cluster.temp_dir}
    with log.open("wb") as out:
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    return text


def _requests_served(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{url}/stats", timeout=10) as reply:
        return int(json.loads(reply.read())["rows"])  # generations served


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_multinode_grpo_on_two_ray_nodes_checkpoints_and_resumes(
    tiny_model_dir, searching_model_dir, tmp_path
):
    dataset = write_toy_dataset(tmp_path / "train.parquet")
    run_dir = tmp_path / "run"
    extra = [
        "trainer.nnodes=2",
        "trainer.n_gpus_per_node=1",  # one rank per node
        "actor_rollout_ref.actor.optim.lr=1e-4",  # slow enough that the tiny policy keeps searching
        "+search.max_tokens=64",
    ]
    sim = ["--model", str(tiny_model_dir)]
    with (
        ServerProcess("zerosearch.simulation.server", sim, find_free_port()) as first,
        ServerProcess("zerosearch.simulation.server", sim, find_free_port()) as second,
        TwoNodeCluster(tmp_path) as cluster,
    ):
        urls = f"{first.url},{second.url}"
        # ray_init.num_cpus=2 is in the command (a local-start option): joining must drop it, not fail.
        log = _train(
            cluster,
            trainer_command(dataset, searching_model_dir, urls, run_dir, 2, extra),
            tmp_path / "a.log",
        )
        assert "joining the Ray cluster at 127.0.0.1" in log and "num_cpus=2" in log
        first_placement = json.loads((run_dir / "placement.json").read_text())
        assert (run_dir / "checkpoints" / "global_step_2" / "trainer_state.json").is_file()
        served = [_requests_served(first.url), _requests_served(second.url)]

        log = _train(
            cluster,
            trainer_command(dataset, searching_model_dir, urls, run_dir, 3, extra),
            tmp_path / "b.log",
        )
        assert "resumed from" in log and "global_step_2" in log
        second_placement = json.loads((run_dir / "placement.json").read_text())
        node_ids = cluster.node_ids

    for placement in (first_placement, second_placement):
        # One rank on each of the two Ray nodes: different node ids, every node of the cluster used.
        assert [p["rank"] for p in placement] == [0, 1]
        assert sorted(p["node_id"] for p in placement) == node_ids
        assert [p["local_rank"] for p in placement] == [0, 0]  # counted per node, though both share an IP
    assert [s["step"] for s in read_steps(run_dir)] == [1, 2, 3]
    assert (run_dir / "checkpoints" / "global_step_3" / "actor" / "huggingface" / "config.json").is_file()
    # Both replicas answered searches (the client balances over search.urls).
    assert all(count > 0 for count in served), served
