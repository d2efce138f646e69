"""scripts/serve_simulator.sh: each engine started for real on 127.0.0.1, then searched through the
simulate_sft client (vLLM's own OpenAI server needs vLLM: make test-vllm-cpu)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_agent.search import SearchRequest
from zerosearch.search import SimulateConfig, SimulateSFTBackend
from zerosearch.search.simulate import row_context
from zerosearch.templates import render_simulation_prompt
from zerosearch.utils.serving import find_free_port

SCRIPT = Path(__file__).parents[2] / "scripts" / "serve_simulator.sh"


def _serve(engine: str, model: Path, port: int, extra: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHON": sys.executable, "VLLM_CPU_KVCACHE_SPACE": "1", "HEALTH_TIMEOUT": "300"}
    return subprocess.Popen(
        ["bash", str(SCRIPT), engine, str(model), str(port), "--", *extra],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_ready(proc: subprocess.Popen, log: Path, limit_s: float = 320) -> None:
    deadline = time.monotonic() + limit_s
    while "serve_simulator.sh: " not in log.read_text() or " serves " not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


def _search_through(engine: str, model: Path, extra: list[str], tmp_path: Path) -> list:
    port, log = find_free_port(), tmp_path / f"{engine}.log"
    proc = _serve(engine, model, port, extra, log)
    try:
        _wait_ready(proc, log)
        config = SimulateConfig(
            urls=f"http://127.0.0.1:{port}", model="simulator", max_tokens=16, max_retries=0
        )
        requests = [
            SearchRequest(f"query {i}", row_context(f"question {i}?", (f"answer {i}",)), seed=i)
            for i in range(4)
        ]
        with SimulateSFTBackend(config) as backend:
            results = backend.search(requests, noise_prob=0.5)
        _post_as_the_reference_client(f"http://127.0.0.1:{port}")
        return results
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the script's trap stops the server too
        proc.wait(timeout=60)


def _post_as_the_reference_client(url: str) -> None:
    """The request the released simulators were used with, byte for byte as the reference client builds it:
    model '', an empty system message, the prompt as a list of one text part, 600 tokens at temperature 0.8."""
    import httpx

    prompt = render_simulation_prompt(
        "eiffel tower architect", "Who designed the Eiffel Tower?", ["Eiffel"], True
    )
    body = {
        "model": "",
        "max_tokens": 600,
        "temperature": 0.8,
        "messages": [
            {"role": "system", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": prompt}]},
        ],
    }
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
    assert reply.status_code == 200, reply.text
    assert isinstance(reply.json()["choices"][0]["message"]["content"], str)


def _check(results: list) -> None:
    assert [r.error for r in results] == [None] * 4
    assert all(
        r.meta["model"] == "simulator" and r.meta["finish_reason"] in ("stop", "length") for r in results
    )


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_builtin_server_comes_up_healthy_and_answers_the_client(tiny_model_dir, tmp_path):
    _check(_search_through("builtin", tiny_model_dir, [], tmp_path))


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_vllm_serve_answers_the_simulate_client(tiny_model_dir, tmp_path):
    """A server nobody here wrote: vLLM's own OpenAI server (CPU build) behind the simulate_sft client."""
    pytest.importorskip("vllm")
    _check(
        _search_through("vllm", tiny_model_dir, ["--dtype", "float32", "--max-model-len", "1024"], tmp_path)
    )


def test_an_unknown_engine_or_port_is_refused(tiny_model_dir):
    bad_engine = subprocess.run(
        ["bash", str(SCRIPT), "tgi", str(tiny_model_dir)], capture_output=True, text=True
    )
    assert bad_engine.returncode == 2 and "unknown engine 'tgi'" in bad_engine.stderr
    bad_port = subprocess.run(
        ["bash", str(SCRIPT), "vllm", str(tiny_model_dir), "80x"], capture_output=True, text=True
    )
    assert bad_port.returncode == 2 and "PORT must be a number" in bad_port.stderr


def test_gpus_are_the_only_devices_the_engine_sees(tiny_model_dir, tmp_path):
    """GPUS=4,5 reaches the engine's process as CUDA_VISIBLE_DEVICES (a stand-in interpreter records it)."""
    record = tmp_path / "env.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\necho "$CUDA_VISIBLE_DEVICES $*" >> {record}\nexit 3\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "GPUS": "4,5"}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "builtin", str(tiny_model_dir), "6123"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "exited (code 3) before answering /health" in proc.stderr
    # The engine's process (and the health probe, in whatever order they ran) saw only GPUs 4 and 5.
    lines = record.read_text().splitlines()
    assert any(line.startswith("4,5 -m zerosearch.simulation.server") for line in lines), lines
    bad = subprocess.run(
        ["bash", str(SCRIPT), "builtin", str(tiny_model_dir)],
        env={**env, "GPUS": "4;5"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "GPUS must be a comma list of GPU ids" in bad.stderr
