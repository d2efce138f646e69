"""configs/profile: `profile=gpu` composes with every preset and algorithm, changes engine settings only (never
the method's hyper-parameters), and its GPU-only parts are refused up front, by key, where they cannot run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from verl.trainer.config import PPOTrainerConfig
from verl.trainer.main_ppo import CONFIG_DIR
from verl.utils.config import ConfigError

PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "preset").glob("*.yaml") if p.stem != "toyworld")
ALGORITHMS = sorted(p.stem for p in (Path(CONFIG_DIR) / "algorithm").glob("*.yaml"))
# What a machine profile may change: where and how the engine computes, never what the method does.
ENGINE_KEYS = (
    "trainer.device",
    "actor_rollout_ref.model.dtype",
    "actor_rollout_ref.model.enable_gradient_checkpointing",
    "actor_rollout_ref.model.use_remove_padding",
    "actor_rollout_ref.model.attn_implementation",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
    "actor_rollout_ref.actor.fsdp_config.",
    "actor_rollout_ref.ref.",
    "actor_rollout_ref.rollout.name",
    "actor_rollout_ref.rollout.dtype",
    "actor_rollout_ref.rollout.gpu_memory_utilization",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
    "actor_rollout_ref.rollout.enforce_eager",
    "critic.model.enable_gradient_checkpointing",
    "critic.model.attn_implementation",
    "critic.model.fsdp_config.",
    "critic.ppo_micro_batch_size_per_gpu",
    "critic.forward_micro_batch_size_per_gpu",
)


def _compose(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return OmegaConf.to_container(compose(config_name="ppo_trainer", overrides=overrides), resolve=True)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _build(tmp_path: Path, model_dir, *overrides: str) -> PPOTrainerConfig:
    train = tmp_path / "train.parquet"
    train.write_bytes(b"")  # the config checks existence only
    return PPOTrainerConfig.from_dict(
        _compose([f"data.train_files={train}", f"actor_rollout_ref.model.path={model_dir}", *overrides])
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("preset", PRESETS)
def test_the_gpu_profile_changes_engine_settings_only(preset, algorithm):
    base = [
        f"preset={preset}",
        f"algorithm={algorithm}",
        "data.train_files=t",
        "actor_rollout_ref.model.path=m",
    ]
    plain, gpu = _flat(_compose(base)), _flat(_compose([*base, "profile=gpu"]))
    assert plain.keys() == gpu.keys()
    changed = sorted(key for key in plain if plain[key] != gpu[key])
    assert changed, "the profile changed nothing"
    assert [key for key in changed if not key.startswith(ENGINE_KEYS)] == []


def test_the_gpu_profile_validates_where_its_engines_are_installed(tmp_path, tiny_model_dir):
    profile = ["profile=gpu", "preset=qwen2.5-3b-base", "trainer.n_gpus_per_node=8"]
    missing = [package for package in ("vllm", "flash_attn") if importlib.util.find_spec(package) is None]
    if not missing:
        assert _build(tmp_path, tiny_model_dir, *profile).actor_rollout_ref.model.attn_implementation == (
            "flash_attention_2"
        )
        return
    # Here (no vLLM, no flash-attn): refused in the driver, naming the key and the package, before any worker.
    with pytest.raises((ConfigError, ValueError)) as caught:
        _build(tmp_path, tiny_model_dir, *profile)
    assert "vllm" in str(caught.value).lower() or "flash_attn" in str(caught.value)
    # Without the missing engines the rest of the profile is a valid config.
    typed = _build(
        tmp_path,
        tiny_model_dir,
        *profile,
        "actor_rollout_ref.rollout.name=hf",
        "actor_rollout_ref.model.attn_implementation=sdpa",
    )
    fsdp = typed.actor_rollout_ref.actor.fsdp_config
    assert (fsdp.param_dtype, fsdp.reduce_dtype) == ("bfloat16", "float32")
    assert typed.actor_rollout_ref.model.enable_gradient_checkpointing


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_flash_attention_without_its_package_is_refused_by_key(tmp_path, tiny_model_dir):
    with pytest.raises((ConfigError, ValueError)) as caught:
        _build(tmp_path, tiny_model_dir, "actor_rollout_ref.model.attn_implementation=flash_attention_2")
    text = str(caught.value)
    assert (
        "actor_rollout_ref.model.attn_implementation=flash_attention_2 needs the flash_attn package" in text
    )
    assert "make install-gpu" in text


def test_an_unknown_attention_implementation_lists_the_valid_ones(tmp_path, tiny_model_dir):
    with pytest.raises(
        (ConfigError, ValueError), match="unknown attention implementation 'flash'; valid: eager"
    ):
        _build(tmp_path, tiny_model_dir, "actor_rollout_ref.model.attn_implementation=flash")
