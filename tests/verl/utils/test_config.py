"""The typed-config builder: unknown keys with suggestions, derived fields, renamed keys, command-line checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from verl.trainer.config import DEPRECATED_KEYS
from verl.trainer.main_ppo import CONFIG_DIR
from verl.utils.config import ConfigError, build, check_overrides, derived, dotted_keys, rename_keys


@dataclass
class Inner:
    learning_rate: float = 1.0
    steps: int = derived(0, "trainer.steps")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    batch_size: int = 4

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"outer.batch_size must be >= 1, got {self.batch_size}")


def test_build_makes_nested_sections_and_keeps_defaults():
    config = build(Outer, {"inner": {"learning_rate": 0.5}}, "outer")
    assert config.inner.learning_rate == 0.5 and config.batch_size == 4 and config.inner.steps == 0


def test_an_unknown_key_is_named_in_full_with_the_closest_known_one():
    with pytest.raises(
        ConfigError,
        match=r"unknown config key outer\.inner\.learning_rte \(did you mean outer\.inner\.learning_rate\?\)",
    ):
        build(Outer, {"inner": {"learning_rte": 0.5}}, "outer")
    with pytest.raises(ConfigError, match=r"unknown config key outer\.colour$"):
        build(Outer, {"colour": 1}, "outer")


def test_a_derived_key_cannot_be_set_and_is_never_suggested():
    with pytest.raises(ConfigError, match=r"outer\.inner\.steps is derived \(trainer\.steps\)"):
        build(Outer, {"inner": {"steps": 3}}, "outer")
    with pytest.raises(ConfigError, match=r"outer\.inner\.step$"):
        build(Outer, {"inner": {"step": 3}}, "outer")


def test_a_section_check_becomes_a_config_error():
    with pytest.raises(ConfigError, match=r"outer\.batch_size must be >= 1"):
        build(Outer, {"batch_size": 0}, "outer")


def test_renamed_keys_move_to_their_new_name_and_win_over_the_default(caplog):
    data = {"a": {"old": 3, "new": 1}, "b": 2}
    out = rename_keys(data, {"a.old": "a.new", "c.gone": "c.here"})
    assert out == {"a": {"new": 3}, "b": 2}
    assert "config key a.old is deprecated; use a.new" in caplog.text


def test_dotted_keys_lists_sections_and_leaves():
    assert dotted_keys({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == ["a", "a.b", "a.c", "a.c.d", "e"]


def _check(*overrides: str) -> list[str]:
    return check_overrides(list(overrides), CONFIG_DIR, "ppo_trainer", DEPRECATED_KEYS)


def test_command_line_typos_are_refused_with_a_suggestion():
    with pytest.raises(
        ConfigError, match=r"trainer\.totl_training_steps \(did you mean trainer\.total_training_steps\?\)"
    ):
        _check("trainer.totl_training_steps=5")
    # a key that only a selected group brings (search=google adds api_key_env) is known once it is selected
    assert _check("search=google", "search.api_key_env=KEY") == ["search=google", "search.api_key_env=KEY"]
    with pytest.raises(ConfigError, match=r"search\.api_key_env"):
        _check("search.api_key_env=KEY")


def test_command_line_old_names_are_renamed_with_a_message(capsys):
    args = [
        "--cfg",
        "job",
        "actor_rollout_ref.actor.optim.warmup_steps_ratio=0.1",
        "+extra.key=1",
        "algorithm=ppo",
    ]
    assert _check(*args) == [
        "--cfg",
        "job",
        "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.1",
        "+extra.key=1",
        "algorithm=ppo",
    ]
    assert "actor_rollout_ref.actor.optim.warmup_steps_ratio is deprecated" in capsys.readouterr().err


def test_keys_added_on_the_command_line_are_known_and_another_config_is_not_checked():
    assert _check("+extra.key=1", "extra.key=2") == ["+extra.key=1", "extra.key=2"]
    assert _check("--config-name", "mine", "my.own.key=1") == ["--config-name", "mine", "my.own.key=1"]
