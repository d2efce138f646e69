"""The trainer end to end through its real entry point, and the config checks that run before any worker."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import ray
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.verl.trainer.cli_runs import (
    read_samples,
    read_steps,
    trainer_command,
    trainer_env,
    valid_overrides,
    write_toy_dataset,
)
from verl.trainer.config import PPOTrainerConfig
from verl.trainer.main_ppo import CONFIG_DIR, run
from verl.utils.config import ConfigError
from zerosearch.utils.serving import ServerProcess, find_free_port


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "train.parquet")


def _config(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def test_default_overrides_build_the_typed_config(dataset, tiny_model_dir):
    cfg = PPOTrainerConfig.from_dict(_config(valid_overrides(dataset, tiny_model_dir)))
    assert cfg.trainer.world_size == 2 and cfg.critic is None and cfg.needs_reference
    assert cfg.actor_rollout_ref.rollout.prompt_length == cfg.data.max_prompt_length == 4096
    assert set(cfg.domain) == {"search", "val_search", "curriculum"}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("actor_rollout_ref.model.path=/no/such/model", "actor_rollout_ref.model.path"),
        ("actor_rollout_ref.actor.ppo_mini_batch_size=3", "ppo_mini_batch_size"),
        ("trainer.n_gpus_per_node=3", "number of ranks"),
        ("algorithm.adv_estimator=magic", "algorithm.adv_estimator"),
        ("trainer.logger=[console,carrier_pigeon]", "trainer.logger"),
        ("actor_rollout_ref.actor.loss_agg_mode=sum", "actor.loss_agg_mode"),
        ("data.overlong_prompts=ignore", "data.overlong_prompts"),
        ("data.val_files=[/no/such.parquet]", "data.val_files"),
        ("data.skip_bad_rows=sometimes", "data.skip_bad_rows"),
    ],
)
def test_bad_config_names_the_key(dataset, tiny_model_dir, override, key):
    cfg = _config([*valid_overrides(dataset, tiny_model_dir), override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        PPOTrainerConfig.from_dict(cfg)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("critic.model.path=/no/such/critic", "critic.model.path"),
        ("critic.ppo_mini_batch_size=3", "critic.ppo_mini_batch_size"),
        ("critic.optim.lr=0", "critic.optim.lr"),
        ("critic.cliprange_value=-1", "critic.cliprange_value"),
        ("trainer.critic_warmup=-1", "trainer.critic_warmup"),
    ],
)
def test_bad_critic_config_names_the_key_when_the_estimator_needs_one(dataset, tiny_model_dir, override, key):
    cfg = _config([*valid_overrides(dataset, tiny_model_dir), "algorithm=ppo", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        PPOTrainerConfig.from_dict(cfg)
    # GRPO builds no critic, so its section is not checked
    PPOTrainerConfig.from_dict(_config([*valid_overrides(dataset, tiny_model_dir), override]))


def test_the_critic_defaults_to_the_actor_model_and_counts_samples(dataset, tiny_model_dir):
    cfg = PPOTrainerConfig.from_dict(_config([*valid_overrides(dataset, tiny_model_dir), "algorithm=ppo"]))
    assert cfg.needs_critic and cfg.needs_reference  # PPO puts the KL in the reward
    critic = cfg.critic
    assert critic.model.path == str(tiny_model_dir)
    assert critic.ppo_mini_batch_size == 4 and critic.mini_batch_samples == 4 * 2  # 4 prompts x rollout.n 2
    assert critic.mini_batch_samples_per_rank == 4  # over 2 ranks
    assert critic.optim.total_training_steps == cfg.trainer.total_training_steps


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.name=bing", "unknown search backend 'bing'"),
        ("curriculum.end=1.5", r"curriculum\.end must be a probability"),
        ("+curriculum.ned=0.5", r"unknown config key curriculum\.ned \(did you mean curriculum\.end\?\)"),
    ],
)
def test_the_domain_sections_fail_before_any_worker_starts(dataset, tiny_model_dir, override, message):
    cfg = _config([*valid_overrides(dataset, tiny_model_dir), override])
    PPOTrainerConfig.from_dict(cfg)  # the engine does not read the domain's sections: the agent does
    ray_was_running = ray.is_initialized()  # other test modules may share a session cluster
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert ray.is_initialized() == ray_was_running


def test_paid_validation_without_a_budget_stops_before_any_worker_starts(
    dataset, tiny_model_dir, monkeypatch
):
    monkeypatch.setenv("SERPAPI_API_KEY", "sk-test")
    cfg = _config(
        [
            *valid_overrides(dataset, tiny_model_dir),
            f"data.val_files=[{dataset}]",
            "val_search={name: google, base_url: 'http://127.0.0.1:9'}",
        ]
    )
    ray_was_running = ray.is_initialized()
    # the trainer config's defaults: 203 steps, validation before training and every 10 steps = 22 passes
    message = r"22 validation\(s\) of 4 rows may send up to 440 .*val_search\.max_requests"
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert ray.is_initialized() == ray_was_running


def _train_three_steps(dataset: Path, model: Path, tmp_path: Path, extra: list[str]) -> Path:
    """python -m verl.trainer.main_ppo, 3 steps against the built-in simulation server: on 2 CPU ranks unless
    `extra` overrides say otherwise; returns the run folder."""
    run_dir = tmp_path / "run"
    with ServerProcess("zerosearch.simulation.server", ["--model", str(model)], find_free_port()) as sim:
        cmd = trainer_command(dataset, model, sim.url, run_dir, 3, extra)
        proc = subprocess.run(cmd, env=trainer_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir / "console.txt").write_text(proc.stdout + proc.stderr)
    return run_dir


def _steps(run_dir: Path) -> list[dict]:
    steps = read_steps(run_dir)
    assert [s["step"] for s in steps] == [1, 2, 3]
    return steps


@pytest.mark.slow
def test_three_grpo_steps_write_a_checkpoint_transformers_can_use(dataset, tiny_model_dir, tmp_path):
    run_dir = _train_three_steps(dataset, tiny_model_dir, tmp_path, [])
    steps = _steps(run_dir)
    assert all("actor/pg_loss" in s and "critic/score/mean" in s for s in steps)
    assert "critic/score/mean_where/no_noisy_search" in steps[0]  # little noise at the curriculum's start
    assert "val/f1/toy" in steps[-1] and "val/cover_em/all" in steps[-1]
    assert steps[-1]["val/f1/avg_over_sources"] == steps[-1]["val/f1/toy"]  # one source: its own mean
    assert [s["search/noise_prob"] for s in steps] == sorted(s["search/noise_prob"] for s in steps)
    for s in steps:  # the agent's search wait, part of `gen`, as a share of the step
        assert 0 <= s["timing_s/search"] < s["timing_s/gen"] < s["timing_s/step"]
        assert (s["timing_s/search"] > 0) == (s["search/calls_per_sample"] > 0)
        assert s["timing_share/search"] == pytest.approx(s["timing_s/search"] / s["timing_s/step"])
    assert (run_dir / "samples.jsonl").read_text().count("\n") >= 3
    final = run_dir / "validation" / "step_3" / "trajectories.jsonl"  # validation writes its generations
    assert len(final.read_text().splitlines()) == 4

    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = run_dir / "checkpoints" / "global_step_3" / "actor" / "huggingface"
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = any(
        not (a == b).all()
        for a, b in zip(model.state_dict().values(), initial.state_dict().values(), strict=True)
    )
    assert changed, "three updates with an entropy bonus left every weight unchanged"
    ids = tokenizer("Question: Where was Alice Smith born?", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5


@pytest.mark.slow
def test_overlapped_search_streams_generations_over_the_ranks(dataset, searching_model_dir, tmp_path):
    """agent.overlap_search=true on 2 ranks: the transformers engines serve in the background of their
    workers (verl/workers/rollout/stream.py) and every trajectory searches and generates at its own pace."""
    run_dir = _train_three_steps(dataset, searching_model_dir, tmp_path, ["agent.overlap_search=true"])
    assert (
        "[rollout] overlapped turns: requests streamed to 2 rank(s)" in (run_dir / "console.txt").read_text()
    )
    steps = _steps(run_dir)
    assert sum(s["search/calls_per_sample"] for s in steps) > 0
    for s in steps:
        assert all(k in s for k in ("actor/pg_loss", "env/turns/mean", "response_length/mean"))
        assert 0 <= s["timing_s/search"] < s["timing_s/gen"]
    assert "val/f1/toy" in steps[-1]


@pytest.mark.slow
def test_three_ppo_steps_train_and_save_the_critic(dataset, tiny_model_dir, tmp_path):
    """PPO: actor and critic colocated on 2 ranks; the critic trains every step (alone during the warm-up
    step) and is checkpointed."""
    run_dir = _train_three_steps(
        dataset,
        tiny_model_dir,
        tmp_path,
        ["algorithm=ppo", "critic.optim.lr=1e-3", "trainer.critic_warmup=1"],
    )
    steps = _steps(run_dir)
    for s in steps:
        assert s["critic/vf_loss"] >= 0 and s["critic/step_skipped"] == 0.0
        assert "actor/reward_kl_penalty" in s and "timing_s/update_critic" in s
    assert steps[0]["actor/critic_warmup"] == 1.0 and "actor/pg_loss" not in steps[0]
    assert all("actor/pg_loss" in s and "actor/critic_warmup" not in s for s in steps[1:])

    from transformers import AutoModelForTokenClassification

    step_dir = run_dir / "checkpoints" / "global_step_3"
    assert (step_dir / "actor" / "huggingface").is_dir()
    critic = AutoModelForTokenClassification.from_pretrained(step_dir / "critic" / "huggingface")
    assert critic.config.num_labels == 1
    initial = AutoModelForTokenClassification.from_pretrained(
        tiny_model_dir, num_labels=1, ignore_mismatched_sizes=True
    )
    backbone = {k: v for k, v in initial.state_dict().items() if not k.startswith("score")}
    trained = critic.state_dict()
    assert any(not (trained[k] == v).all() for k, v in backbone.items()), "the critic's backbone never moved"


@pytest.mark.slow
def test_val_only_validates_once_and_trains_nothing(dataset, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    with ServerProcess(
        "zerosearch.simulation.server", ["--model", str(tiny_model_dir)], find_free_port()
    ) as sim:
        cmd = trainer_command(dataset, tiny_model_dir, sim.url, run_dir, 3, ["trainer.val_only=true"])
        proc = subprocess.run(cmd, env=trainer_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (line,) = read_steps(run_dir)
    assert line["step"] == 0 and "val/f1/toy" in line and "actor/pg_loss" not in line
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())
    # The evaluation harness's files, in the run folder: every row, the table, the figures.
    folder = run_dir / "validation" / "step_0"
    rows = [json.loads(x) for x in (folder / "trajectories.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == [0, 1, 2, 3] and all("answer" in r for r in rows)
    results = json.loads((folder / "results.json").read_text())
    assert results["pooled"]["f1"] == pytest.approx(line["val/f1/all"])
    assert results["sources"]["toy"]["cover_em"] == pytest.approx(line["val/cover_em/toy"])
    assert "| **Avg (over datasets)** |" in (folder / "results.md").read_text()
    assert (folder / "em_vs_paper.png").is_file() and (folder / "searches.png").is_file()
    assert f"[validation] 4 rows: {folder / 'results.md'}" in proc.stderr
    table = [r for r in read_samples(run_dir) if r["table"] == "val/generations"]
    assert len(table) == 4 and {"question", "response", "f1"} <= set(table[0]["row"])


@pytest.mark.slow
def test_three_reinforce_plus_plus_steps(dataset, tiny_model_dir, tmp_path):
    run_dir = _train_three_steps(dataset, tiny_model_dir, tmp_path, ["algorithm=reinforce_plus_plus"])
    steps = _steps(run_dir)
    for s in steps:
        assert "actor/pg_loss" in s and "actor/reward_kl_penalty" in s
        assert "critic/vf_loss" not in s and "actor/kl_loss" not in s
    assert (run_dir / "checkpoints" / "global_step_3" / "actor" / "huggingface").is_dir()
    assert not (run_dir / "checkpoints" / "global_step_3" / "critic").exists()


def _gpu_profile(*extra: str) -> list[str]:
    """profile=gpu as this host can run it: its vLLM rollout and flash-attention where installed, else the
    transformers rollout and sdpa (what ran is in docs/engine.md, "Last run on a GPU")."""
    overrides = ["profile=gpu"]
    if importlib.util.find_spec("vllm") is None:
        overrides.append("actor_rollout_ref.rollout.name=hf")
    if importlib.util.find_spec("flash_attn") is None:
        overrides.append("actor_rollout_ref.model.attn_implementation=sdpa")
    return [*overrides, *extra]


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "extra",
    [
        [],
        _gpu_profile(),
        _gpu_profile(
            "actor_rollout_ref.actor.fsdp_config.param_offload=true",
            "actor_rollout_ref.actor.fsdp_config.optimizer_offload=true",
            "actor_rollout_ref.ref.fsdp_config.param_offload=true",
        ),
        _gpu_profile(
            "algorithm=ppo", "critic.optim.lr=1e-3", "critic.model.fsdp_config.optimizer_offload=true"
        ),
    ],
    ids=["grpo", "grpo-profile-gpu", "grpo-profile-gpu-offload", "ppo-profile-gpu"],
)
def test_three_steps_on_one_gpu(dataset, searching_model_dir, tmp_path, extra):
    """The CLI on CUDA: one FSDP2 rank over nccl, searches answered by the built-in server, plain and with the
    GPU profile (bf16 compute, checkpointing, padding-free, offloads); the checkpoint reloads."""
    run_dir = _train_three_steps(
        dataset, searching_model_dir, tmp_path, ["trainer.device=cuda", "trainer.n_gpus_per_node=1", *extra]
    )
    steps = _steps(run_dir)
    assert all("actor/pg_loss" in s for s in steps)
    assert sum(s["search/calls_per_sample"] for s in steps) > 0
    assert "val/f1/toy" in steps[-1]
    from transformers import AutoModelForCausalLM

    hf_dir = run_dir / "checkpoints" / "global_step_3" / "actor" / "huggingface"
    assert AutoModelForCausalLM.from_pretrained(hf_dir).config.vocab_size > 0


@pytest.mark.slow
@pytest.mark.vllm
def test_three_grpo_steps_with_vllm_rollouts(dataset, tiny_model_dir, tmp_path, monkeypatch):
    """rollout.name=vllm: each of the 2 ranks runs a colocated vLLM engine (vLLM's CPU build) that starts from
    dummy weights and follows the actor by weight pushes; training and the checkpoint work as with hf."""
    pytest.importorskip("vllm")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    run_dir = _train_three_steps(
        dataset,
        tiny_model_dir,
        tmp_path,
        ["actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.rollout.max_model_len=1024"],
    )
    steps = _steps(run_dir)
    assert all("actor/pg_loss" in s and s["response_length/mean"] > 0 for s in steps)
    assert "val/f1/toy" in steps[-1]
    assert (
        run_dir / "checkpoints" / "global_step_3" / "actor" / "huggingface" / "model.safetensors"
    ).is_file()


def _cli(*args: str) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", *args],
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_toyworld_preset_composes_from_the_command_line():
    proc = _cli("preset=toyworld", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "train_files: ${toyworld.assets}/train_rl.parquet" in proc.stdout


def test_a_misspelt_key_on_the_command_line_is_refused_with_a_suggestion():
    proc = _cli("trainer.totl_training_steps=3")
    assert proc.returncode == 2
    assert "unknown config key trainer.totl_training_steps (did you mean trainer.total_training_steps?)" in (
        proc.stderr
    )
