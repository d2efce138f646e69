"""zerosearch.eval with vLLM generation (vLLM's CPU build; skipped where vLLM is absent): the same trajectories
and table as the transformers rollout."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from tests.agent_model import eval_case, read_trajectories  # noqa: E402
from zerosearch.eval import evaluate  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]


def test_evaluation_with_vllm_equals_the_transformers_rollout(tmp_path, agent_model_dir, agent_corpus):
    data, search, limits = eval_case(tmp_path, agent_corpus)
    hf = evaluate(str(agent_model_dir), [data], tmp_path / "hf", search, rollout="hf", **limits)
    vllm = evaluate(str(agent_model_dir), [data], tmp_path / "vllm", search, rollout="vllm", **limits)
    assert read_trajectories(tmp_path / "vllm") == read_trajectories(tmp_path / "hf")
    assert vllm["sources"] == hf["sources"] and hf["sources"]["nq"]["em"] == 1.0
