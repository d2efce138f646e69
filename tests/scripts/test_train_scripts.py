"""The training scripts' command line: NAME VALUE pairs by name, in any order, then Hydra overrides after `--`.
train_grpo.sh, train_ppo.sh and train_reinforce.sh share it (scripts/train_common.sh)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, script: str = "train_grpo.sh") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(ROOT / script), *args], env=env, capture_output=True, text=True, timeout=120
    )


def _job_config(*pairs: str, script: str = "train_grpo.sh") -> dict:
    """The composed config the pairs produce, resolved (`--cfg job` prints it instead of training)."""
    separator = () if "--" in pairs else ("--",)
    proc = _run(*pairs, *separator, "--cfg", "job", "--resolve", script=script)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_unknown_name_is_an_error_that_lists_the_names():
    proc = _run("MODEL_PATH", "m", "DATA_PATH", "d", "LEARNING_RATE", "1")
    assert proc.returncode == 2
    assert "unknown argument name 'LEARNING_RATE'" in proc.stderr
    assert "START_THRESHOLD" in proc.stderr


def test_a_name_without_value_and_missing_required_names_are_errors():
    assert "'TOPK' needs a value" in _run("MODEL_PATH", "m", "DATA_PATH", "d", "TOPK").stderr
    assert "DATA_PATH is required" in _run("MODEL_PATH", "m").stderr


def test_pairs_map_to_the_trainer_config_in_any_order():
    a = _job_config(
        "TOPK",
        "3",
        "MODEL_PATH",
        "/m",
        "START_THRESHOLD",
        "0.25",
        "DATA_PATH",
        "/d",
        "END_THRESHOLD",
        "0.75",
        "NUM_GPUS_PER_NODE",
        "4",
        "TOTAL_STEPS",
        "7",
        "IP",
        "10.1.2.3",
        "SEARCH_MODE",
        "simulate_prompt",
        "SIMULATION_LLM",
        "sim-3b",
        "MAX_TURNS",
        "2",
    )
    b = _job_config(
        "MODEL_PATH",
        "/m",
        "DATA_PATH",
        "/d",
        "START_THRESHOLD",
        "0.25",
        "END_THRESHOLD",
        "0.75",
        "NUM_GPUS_PER_NODE",
        "4",
        "TOTAL_STEPS",
        "7",
        "IP",
        "10.1.2.3",
        "SEARCH_MODE",
        "simulate_prompt",
        "SIMULATION_LLM",
        "sim-3b",
        "MAX_TURNS",
        "2",
        "TOPK",
        "3",
    )
    assert a == b
    assert a["actor_rollout_ref"]["model"]["path"] == "/m"
    assert a["data"]["train_files"] == "/d/train.parquet" and a["data"]["val_files"] == ["/d/test.parquet"]
    assert (a["curriculum"]["start"], a["curriculum"]["end"]) == (0.25, 0.75)
    assert a["trainer"]["n_gpus_per_node"] == 4 and a["trainer"]["total_training_steps"] == 7
    assert a["search"] == {
        "name": "simulate_prompt",
        "urls": ["http://10.1.2.3:6001"],
        "model": None,  # read from the server; SIMULATION_LLM is a label, as in the reference scripts
        "template": "reference",
    }
    assert a["trainer"]["experiment_name"] == "m_grpo_simulate_prompt_sim-3b_0.25_0.75_simulate_turns_2"
    assert (a["agent"]["topk"], a["agent"]["max_turns"]) == (3, 2)
    assert a["algorithm"]["adv_estimator"] == "grpo"


def test_search_engine_selects_the_validation_backend_and_overrides_pass_through():
    cfg = _job_config(
        "MODEL_PATH",
        "/m",
        "DATA_PATH",
        "/d",
        "SEARCH_MODE",
        "google",
        "SEARCH_ENGINE",
        "wiki",
        "RETRIEVER_URL",
        "http://127.0.0.1:9000",
        "--",
        "actor_rollout_ref.actor.optim.lr=3e-6",
    )
    assert cfg["search"] == {"name": "google", "api_key_env": "SERPAPI_API_KEY"}
    assert cfg["val_search"] == {"name": "wiki", "url": "http://127.0.0.1:9000"}
    assert cfg["actor_rollout_ref"]["actor"]["optim"]["lr"] == 3e-6


@pytest.mark.parametrize(
    ("script", "pairs", "estimator", "kl_in_reward"),
    [
        ("train_ppo.sh", (), "gae", True),
        ("train_reinforce.sh", (), "reinforce", False),
        ("train_reinforce.sh", ("ALGORITHM", "reinforce_plus_plus"), "reinforce_plus_plus", True),
        ("train_grpo.sh", ("ALGORITHM", "ppo"), "gae", True),
    ],
)
def test_each_script_selects_its_algorithm(script, pairs, estimator, kl_in_reward):
    cfg = _job_config("MODEL_PATH", "/m", "DATA_PATH", "/d", *pairs, script=script)
    assert cfg["algorithm"]["adv_estimator"] == estimator
    assert cfg["algorithm"]["use_kl_in_reward"] is kl_in_reward
    assert cfg["actor_rollout_ref"]["actor"]["use_kl_loss"] is not kl_in_reward


def test_unknown_algorithm_lists_the_available_ones():
    proc = _run("MODEL_PATH", "/m", "DATA_PATH", "/d", "ALGORITHM", "dpo", script="train_ppo.sh")
    assert proc.returncode == 2
    assert "ALGORITHM 'dpo'" in proc.stderr and "reinforce_plus_plus" in proc.stderr


@pytest.mark.parametrize(
    ("script", "algorithm"),
    [("train_grpo.sh", "grpo"), ("train_ppo.sh", "ppo"), ("train_reinforce.sh", "reinforce")],
)
def test_no_arguments_says_it_runs_the_cpu_demo_and_runs_it(script, algorithm):
    # /bin/echo stands in for Python: what the script would run is printed instead of run.
    env = {**os.environ, "PYTHON": "/bin/echo"}
    proc = subprocess.run(["bash", str(ROOT / script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["-m", "toyworld.pipeline", "--algorithm", algorithm]
    assert "no arguments: running the CPU toy-world demo" in proc.stderr
    assert "NAME VALUE pairs" in proc.stderr


def test_ip_takes_a_comma_list_and_each_search_mode_has_its_own_port():
    cfg = _job_config("MODEL_PATH", "/m", "DATA_PATH", "/d", "IP", "10.0.0.1, 10.0.0.2")
    assert cfg["search"]["urls"] == ["http://10.0.0.1:6001", "http://10.0.0.2:6001"]
    wiki = _job_config("MODEL_PATH", "/m", "DATA_PATH", "/d", "IP", "10.0.0.3", "SEARCH_MODE", "wiki")
    assert wiki["search"] == {"name": "wiki", "url": "http://10.0.0.3:8000"}


def test_runs_with_other_thresholds_get_other_run_folders():
    low = _job_config("MODEL_PATH", "/models/Qwen2.5-3B", "DATA_PATH", "/d", "END_THRESHOLD", "0.25")
    high = _job_config("MODEL_PATH", "/models/Qwen2.5-3B", "DATA_PATH", "/d", "END_THRESHOLD", "0.5")
    # the run folder is outputs/<project>/<experiment_name>
    assert low["trainer"]["experiment_name"] != high["trainer"]["experiment_name"]
    assert (
        low["trainer"]["experiment_name"]
        == "Qwen2.5-3B_grpo_simulate_sft_simulator_0.0_0.25_simulate_turns_5"
    )


def test_a_preset_wins_over_the_script_defaults_and_only_given_pairs_override_it():
    preset = _job_config("MODEL_PATH", "/m/Qwen2.5-3B", "DATA_PATH", "/d", "PRESET", "qwen2.5-3b-base")
    assert (preset["curriculum"]["start"], preset["curriculum"]["end"]) == (0.0, 0.25)  # paper appendix
    assert (
        preset["trainer"]["experiment_name"]
        == "Qwen2.5-3B_grpo_simulate_sft_simulator_0.0_0.25_simulate_turns_5"
    )
    mine = _job_config(
        "MODEL_PATH", "/m", "DATA_PATH", "/d", "PRESET", "qwen2.5-3b-base", "END_THRESHOLD", "0.4"
    )
    assert mine["curriculum"]["end"] == 0.4
    bad = _run("MODEL_PATH", "/m", "DATA_PATH", "/d", "PRESET", "qwen9")
    assert bad.returncode == 2 and "PRESET 'qwen9'" in bad.stderr and "qwen2.5-3b-base" in bad.stderr


@pytest.mark.parametrize(
    ("script", "warmup"), [("train_grpo.sh", 0.95), ("train_reinforce.sh", 0.95), ("train_ppo.sh", 0.285)]
)
def test_the_defaults_are_the_reference_scripts(script, warmup):
    cfg = _job_config("MODEL_PATH", "/m", "DATA_PATH", "/d", script=script)
    assert cfg["actor_rollout_ref"]["actor"]["optim"]["lr_warmup_steps_ratio"] == warmup
    trainer = cfg["trainer"]
    assert (trainer["val_before_train"], trainer["test_freq"], trainer["save_freq"]) == (False, 300, 50)
    assert trainer["total_training_steps"] == 203 and cfg["actor_rollout_ref"]["rollout"]["n"] == 5


def test_profile_gpu_is_one_switch_for_the_gpu_recipe():
    cfg = _job_config("PROFILE", "gpu", "PRESET", "qwen2.5-3b-base", "MODEL_PATH", "/m", "DATA_PATH", "/d")
    arr = cfg["actor_rollout_ref"]
    assert cfg["trainer"]["device"] == "cuda"
    assert arr["rollout"]["name"] == "vllm" and arr["rollout"]["dtype"] == "bfloat16"
    assert arr["model"]["enable_gradient_checkpointing"] and arr["model"]["use_remove_padding"]
    assert arr["model"]["attn_implementation"] == "flash_attention_2"
    assert (arr["actor"]["fsdp_config"]["param_dtype"], arr["actor"]["fsdp_config"]["reduce_dtype"]) == (
        "bfloat16",
        "float32",
    )
    assert cfg["curriculum"]["end"] == 0.25  # the preset's method settings are untouched
    plain = _job_config("PRESET", "qwen2.5-3b-base", "MODEL_PATH", "/m", "DATA_PATH", "/d")
    assert (
        plain["trainer"]["device"] == "auto"
        and plain["actor_rollout_ref"]["model"]["attn_implementation"] is None
    )


def _fake_python(tmp_path: Path) -> Path:
    """An interpreter stand-in that records the environment and command line the script hands the trainer."""
    fake = tmp_path / "python"
    fake.write_text(
        '#!/usr/bin/env bash\necho "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"\necho "$@"\n'
    )
    fake.chmod(0o755)
    return fake


def test_trainer_gpus_are_the_only_devices_the_trainer_sees_and_set_the_rank_count(tmp_path):
    env = {**os.environ, "PYTHON": str(_fake_python(tmp_path))}
    env.pop("RAY_ADDRESS", None)
    pairs = ["MODEL_PATH", "/m", "DATA_PATH", "/d", "TRAINER_GPUS", "0,1,2,3", "SIMULATOR_GPUS", "4,5,6,7"]
    proc = subprocess.run(
        ["bash", str(ROOT / "train_grpo.sh"), *pairs], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3" in proc.stdout and "trainer.n_gpus_per_node=4" in proc.stdout


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["TRAINER_GPUS", "0,1,2", "SIMULATOR_GPUS", "2,3,1"], "share GPU(s) 1,2"),
        (["SIMULATOR_GPUS", "4,5"], "SIMULATOR_GPUS is given without TRAINER_GPUS"),
        (["TRAINER_GPUS", "0,1,1"], "TRAINER_GPUS lists a GPU twice"),
        (["TRAINER_GPUS", "0", "SIMULATOR_GPUS", "cuda:1"], "SIMULATOR_GPUS must be a comma list of GPU ids"),
        (
            ["TRAINER_GPUS", "0,1", "NUM_GPUS_PER_NODE", "4"],
            "NUM_GPUS_PER_NODE 4 differs from the 2 TRAINER_GPUS",
        ),
        (["PROFILE", "tpu"], "PROFILE 'tpu' has no configs/profile/tpu.yaml; available: gpu"),
    ],
)
def test_bad_or_overlapping_device_lists_are_refused(pairs, message):
    proc = _run("MODEL_PATH", "/m", "DATA_PATH", "/d", *pairs)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_trainer_gpus_cannot_apply_to_a_cluster_being_joined():
    env = {**os.environ, "PYTHON": sys.executable, "RAY_ADDRESS": "10.0.0.1:6379"}
    pairs = ["MODEL_PATH", "/m", "DATA_PATH", "/d", "TRAINER_GPUS", "0"]
    proc = subprocess.run(
        ["bash", str(ROOT / "train_grpo.sh"), *pairs], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "TRAINER_GPUS cannot apply when joining" in proc.stderr


def test_help_prints_the_usage_and_succeeds():
    proc = _run("--help")
    assert (
        proc.returncode == 0
        and proc.stdout.startswith("usage: train_grpo.sh")
        and "TOTAL_STEPS" in proc.stdout
    )
    assert _run("-h").returncode == 0


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["TOTAL_STEPS", "abc"], "TOTAL_STEPS must be a whole number >= 1, got 'abc'"),
        (["NUM_GPUS_PER_NODE", "0"], "NUM_GPUS_PER_NODE must be a whole number >= 1, got '0'"),
        (["TOPK", "2.5"], "TOPK must be a whole number >= 1"),
        (["PORT", "80x"], "PORT must be a whole number >= 1"),
        (["START_THRESHOLD", "1.5"], "START_THRESHOLD must be a number from 0 to 1, got '1.5'"),
        (["END_THRESHOLD", "-0.1"], "END_THRESHOLD must be a number from 0 to 1"),
        (["TOPK", "--", "x=1"], "'TOPK' needs a value"),
        (["MODEL_PATH", "/a'b\"c"], "MODEL_PATH holds both kinds of quote"),
    ],
)
def test_bad_values_are_refused_naming_the_pair(pairs, message):
    proc = _run("MODEL_PATH", "/m", "DATA_PATH", "/d", *pairs)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_paths_with_hydra_syntax_pass_through_intact():
    model, data = "/models/a,b=c [x]'s", "/data/x=1,2"
    cfg = _job_config("MODEL_PATH", model, "DATA_PATH", data, "PROJECT_NAME", "p,q", "START_THRESHOLD", ".25")
    assert cfg["actor_rollout_ref"]["model"]["path"] == model
    assert cfg["data"]["train_files"] == f"{data}/train.parquet" and cfg["data"]["val_files"] == [
        f"{data}/test.parquet"
    ]
    assert cfg["trainer"]["project_name"] == "p,q" and cfg["curriculum"]["start"] == 0.25
    assert cfg["trainer"]["experiment_name"].startswith("a,b=c [x]'s_grpo_")
