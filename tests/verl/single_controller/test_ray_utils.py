"""init_ray: join or start (never a stale cluster), idempotent reuse, job-wide env vars, an object-store floor.

Joining a real multi-node cluster through RAY_ADDRESS is tested in tests/verl/trainer/test_multinode.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import ray

from verl.single_controller.ray_utils import cluster_address, free_port, init_ray


def test_init_ray_reuses_the_running_cluster(ray_cluster):
    node, cpus = ray.get_runtime_context().get_node_id(), ray.cluster_resources()["CPU"]
    assert init_ray(num_cpus=cpus + 1)["CPU"] == cpus
    assert ray.get_runtime_context().get_node_id() == node


def test_job_env_vars_and_auth_setting_reach_ray_workers(ray_cluster):
    @ray.remote(num_cpus=0)
    def read_env() -> tuple[str | None, str | None]:
        return os.environ.get("ZS_RAY_TEST_JOB"), os.environ.get("RAY_AUTH_MODE")

    assert ray.get(read_env.remote()) == ("1", "disabled")


def test_a_too_small_object_store_is_refused():
    with pytest.raises(ValueError, match="object_store_memory is 1024 bytes; Ray needs at least"):
        init_ray(object_store_memory=1024)


def test_free_port_can_be_bound():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_the_cluster_to_join_is_the_argument_else_ray_address_and_local_means_start_one(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address() is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert cluster_address() == "10.0.0.1:6379"
    assert cluster_address("auto") == "auto"
    assert cluster_address("local") is None


def _run_init_ray(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    """init_ray in a fresh interpreter (this test session's own Ray stays out of it), with its Ray state in a
    short private folder (Ray's socket paths must stay under ~100 characters)."""
    ray_tmp = tempfile.mkdtemp(prefix="zsray")
    try:
        full_env = {**os.environ, "RAY_TMPDIR": ray_tmp, **env}
        if "RAY_ADDRESS" not in env:
            full_env.pop("RAY_ADDRESS", None)
        script = (
            "import ray\nfrom verl.single_controller.ray_utils import init_ray\n"
            f"{code}\nprint('CPUS', ray.cluster_resources()['CPU'])\nray.shutdown()\n"
        )
        stale = Path(ray_tmp) / "ray"
        stale.mkdir()
        # What a `ray start` whose cluster has since gone leaves behind.
        (stale / "ray_current_cluster").write_text("127.0.0.1:9")
        return subprocess.run(
            [sys.executable, "-c", script], env=full_env, capture_output=True, text=True, timeout=120
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_stale_ray_current_cluster_file_cannot_capture_a_local_start():
    result = _run_init_ray({}, "init_ray(num_cpus=1)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CPUS 1.0" in result.stdout


def test_local_starts_a_private_cluster_even_with_ray_address_set():
    result = _run_init_ray({"RAY_ADDRESS": "127.0.0.1:9"}, "init_ray(num_cpus=1, address='local')")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CPUS 1.0" in result.stdout
