"""Models by Hugging Face hub id, offline, from a cache folder in the hub's layout (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from tests.conftest import TINY_HUB_ID
from verl.trainer.config import PPOTrainerConfig
from verl.trainer.sft_trainer import run_sft
from verl.utils.config import ConfigError
from verl.utils.hub import ModelNotFoundError, resolve_model
from zerosearch.utils.serving import ServerProcess, find_free_port


@pytest.fixture
def offline_cache(tiny_model_hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_model_hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tiny_model_hub_cache


def test_a_hub_id_resolves_to_its_snapshot_in_the_cache_and_loads(offline_cache):
    folder = resolve_model(TINY_HUB_ID, "actor_rollout_ref.model.path")
    assert Path(folder).parent.parent == offline_cache / "models--tiny-org--tiny-qwen"
    assert AutoModelForCausalLM.from_pretrained(folder).config.model_type == "qwen2"


def test_a_folder_is_taken_as_it_is(offline_cache, tiny_model_dir):
    assert resolve_model(str(tiny_model_dir), "model.path") == str(tiny_model_dir)


def test_a_missing_model_names_the_key_the_id_and_the_cache(offline_cache):
    with pytest.raises(
        ModelNotFoundError, match=rf"critic\.model\.path: other-org/absent .*{offline_cache}.*HF_HUB_OFFLINE"
    ):
        resolve_model("other-org/absent", "critic.model.path")
    with pytest.raises(ModelNotFoundError, match=r"model\.path: no such folder: /no/such/model"):
        resolve_model("/no/such/model", "model.path")


def test_the_trainer_config_takes_hub_ids_for_the_policy_and_the_critic(offline_cache, tmp_path):
    train = tmp_path / "train.parquet"
    train.write_bytes(b"")
    raw = {
        "data": {"train_files": [str(train)], "max_prompt_length": 512},
        "actor_rollout_ref": {"model": {"path": TINY_HUB_ID}},
        "algorithm": {"adv_estimator": "gae"},
        "critic": {"model": {"path": TINY_HUB_ID}},
        "agent": {"_target_": "zerosearch.agent.ZeroSearchAgentLoop"},
    }
    cfg = PPOTrainerConfig.from_dict(raw)
    assert (
        Path(cfg.actor_rollout_ref.model.path).is_dir()
        and cfg.critic.model.path == cfg.actor_rollout_ref.model.path
    )
    raw["actor_rollout_ref"]["model"]["path"] = "other-org/absent"
    with pytest.raises(ConfigError, match=r"actor_rollout_ref\.model\.path: other-org/absent"):
        PPOTrainerConfig.from_dict(raw)


def test_sft_starts_from_a_hub_id(offline_cache, tmp_path):
    rows = "".join(f'{{"prompt": "q{i}?", "response": "a{i}"}}\n' for i in range(4))
    (tmp_path / "pairs.jsonl").write_text(rows)
    final = run_sft(
        {
            "model": {"path": TINY_HUB_ID},
            "data": {"train_files": str(tmp_path / "pairs.jsonl"), "train_batch_size": 4},
            "trainer": {
                "total_training_steps": 1,
                "default_local_dir": str(tmp_path / "ckpt"),
                "logger": ["jsonl"],
            },
        }
    )
    assert AutoModelForCausalLM.from_pretrained(str(final)).config.model_type == "qwen2"


@pytest.mark.slow
def test_the_simulation_server_serves_a_hub_id_and_names_a_missing_one(tiny_model_hub_cache, tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tiny_model_hub_cache), "HF_HUB_OFFLINE": "1"}
    with ServerProcess(
        "zerosearch.simulation.server", ["--model", TINY_HUB_ID], find_free_port(), env=env
    ) as server:
        import httpx

        assert httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"] == TINY_HUB_ID
    proc = subprocess.run(
        [sys.executable, "-m", "zerosearch.simulation.server", "--model", "other-org/absent", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "--model: other-org/absent is not a folder" in proc.stderr
