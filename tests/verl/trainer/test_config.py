"""The trainer's typed config: the validation/checkpoint cadence, val_only, the step count and its record."""

from __future__ import annotations

import pytest

from verl.trainer.config import PPOTrainerConfig, TrainerConfig
from verl.utils.config import ConfigError


@pytest.mark.parametrize(
    ("freq", "due_steps"),
    [(3, [3, 6, 9, 10]), (0, [10]), (-1, [])],
)
def test_every_n_steps_and_the_last_zero_only_the_last_minus_one_never(freq, due_steps):
    trainer = TrainerConfig(total_training_steps=10)
    assert [step for step in range(1, 11) if trainer.due(freq, step)] == due_steps


def test_freq_below_minus_one_is_refused():
    with pytest.raises(ValueError, match=r"trainer\.save_freq must be N > 0 .* -1 \(never\), got -2"):
        TrainerConfig(save_freq=-2)


def _raw(tmp_path, tiny_model_dir, **trainer) -> dict:
    val = tmp_path / "val.parquet"
    val.write_bytes(b"")  # the config checks that files exist; the trainer reads them
    return {
        "data": {"val_files": [str(val)], "max_prompt_length": 512},
        "actor_rollout_ref": {"model": {"path": str(tiny_model_dir)}},
        "trainer": trainer,
        "agent": {"_target_": "zerosearch.agent.ZeroSearchAgentLoop"},
        "curriculum": {"start": 0.0, "end": 0.5},
    }


def test_val_only_needs_no_training_data_but_needs_validation_data(tmp_path, tiny_model_dir):
    cfg = PPOTrainerConfig.from_dict(_raw(tmp_path, tiny_model_dir, val_only=True, total_training_steps=0))
    assert cfg.trainer.val_only and cfg.data.train_files == []
    with pytest.raises(ConfigError, match="data.train_files is required"):
        PPOTrainerConfig.from_dict(_raw(tmp_path, tiny_model_dir))
    raw = _raw(tmp_path, tiny_model_dir, val_only=True)
    raw["data"]["val_files"] = []
    with pytest.raises(ConfigError, match="trainer.val_only needs data.val_files"):
        PPOTrainerConfig.from_dict(raw)


def test_the_step_count_reaches_every_schedule_and_the_record_keeps_the_domain(tmp_path, tiny_model_dir):
    raw = _raw(tmp_path, tiny_model_dir, val_only=True)
    raw["algorithm"] = {"adv_estimator": "gae"}
    cfg = PPOTrainerConfig.from_dict(raw)
    cfg.set_total_training_steps(77)
    assert cfg.trainer.total_training_steps == 77
    assert (
        cfg.actor_rollout_ref.actor.optim.total_training_steps == cfg.critic.optim.total_training_steps == 77
    )
    record = cfg.to_dict()
    assert record["curriculum"] == {"start": 0.0, "end": 0.5} and record["critic"]["model"]["path"]
    assert record["actor_rollout_ref"]["actor"]["mini_batch_samples"] == 64  # derived fields are recorded


@pytest.mark.parametrize(
    ("settings", "count"),
    [
        ({"total_training_steps": 203, "test_freq": 300, "val_before_train": False}, 1),  # the paper preset
        ({"total_training_steps": 203, "test_freq": 10, "val_before_train": True}, 22),
        ({"total_training_steps": 10, "test_freq": -1, "val_before_train": False}, 0),
        ({"val_only": True}, 1),
    ],
)
def test_planned_validations(settings, count):
    assert TrainerConfig(**settings).planned_validations() == count


@pytest.mark.parametrize(
    ("mini_batch", "epochs", "kl_in_reward", "needed"),
    [(8, 1, False, False), (4, 1, False, True), (8, 2, False, True), (8, 1, True, True)],
)
def test_the_old_log_prob_pass_runs_unless_the_update_is_on_policy(
    tmp_path, tiny_model_dir, mini_batch, epochs, kl_in_reward, needed
):
    raw = _raw(tmp_path, tiny_model_dir, val_only=True)
    raw["data"]["train_batch_size"] = 8
    raw["actor_rollout_ref"]["actor"] = {"ppo_mini_batch_size": mini_batch, "ppo_epochs": epochs}
    raw["algorithm"] = {"use_kl_in_reward": kl_in_reward}
    assert PPOTrainerConfig.from_dict(raw).needs_old_log_prob is needed
