"""Typed configs from plain dicts: one builder for every config tree of the engine (trainer, workers, SFT).

A config section is a dataclass whose fields are the YAML keys; `build` makes one from a nested dict, so a
key no dataclass declares is refused with its full dotted name and the closest known names (did you mean),
and a *derived* field (declared with `derived()`: computed from other keys, documented where it is declared)
cannot be set by hand. Renamed keys go through `rename_keys` first: the old name still works for a while,
with a deprecation message naming the new one.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any, get_type_hints

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config that cannot run; the message names the key."""


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ok."""
    if not ok:
        raise ConfigError(message)


def derived(default: Any = None, doc: str = "") -> Any:
    """A dataclass field computed from other keys when the config is built; setting it is an error."""
    return dataclasses.field(default=default, metadata={"derived": doc or True})


def _unknown_key_error(prefix: str, key: str, known: Iterable[str]) -> ConfigError:
    def full(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(full(k) for k in close)}?)" if close else ""
    return ConfigError(f"unknown config key {full(key)}{hint}")


def build(cls: type, data: Any, prefix: str) -> Any:
    """Dataclass `cls` from the mapping `data`; nested dataclass fields are built from nested mappings.

    Errors are ConfigError naming the full key (`prefix.key`): an unknown key (with the closest known
    names), a derived key given by hand, a value the section's own checks refuse (its __post_init__)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        spec = fields.get(key)
        if spec is None:
            raise _unknown_key_error(
                prefix, key, [n for n, f in fields.items() if not f.metadata.get("derived")]
            )
        full = f"{prefix}.{key}" if prefix else key
        if spec.metadata.get("derived"):
            raise ConfigError(f"{full} is derived ({spec.metadata['derived']}); do not set it")
        sub = hints.get(key)
        is_section = dataclasses.is_dataclass(sub) and isinstance(value, Mapping)
        kwargs[key] = build(sub, value, full) if is_section else value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e


def rename_keys(data: dict, renamed: Mapping[str, str]) -> dict:
    """`data` (a nested dict) with each deprecated dotted key in `renamed` moved to its new dotted key, and a
    deprecation message for each one found. The old key's value wins: the new key may hold the YAML default."""
    for old, new in renamed.items():
        *old_path, old_leaf = old.split(".")
        parent = _walk(data, old_path)
        if parent is None or old_leaf not in parent:
            continue
        value = parent.pop(old_leaf)
        *new_path, new_leaf = new.split(".")
        target = _walk(data, new_path, create=True)
        logger.warning("config key %s is deprecated; use %s", old, new)
        target[new_leaf] = value
    return data


def _walk(data: dict, path: list[str], create: bool = False) -> dict | None:
    node = data
    for part in path:
        if not isinstance(node, dict):
            return None
        if part not in node and create:
            node[part] = {}
        node = node.get(part)
    return node if isinstance(node, dict) else None


def dotted_keys(data: Mapping, prefix: str = "") -> list[str]:
    """Every key of a nested mapping as a dotted path (sections and leaves)."""
    keys = []
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        keys.append(full)
        if isinstance(value, Mapping):
            keys.extend(dotted_keys(value, full))
    return keys


def check_overrides(
    overrides: list[str], config_dir: str, config_name: str, deprecated: Mapping[str, str]
) -> list[str]:
    """The command line's Hydra overrides with `deprecated` keys renamed (a message names the new key), after
    checking that every plain `key=value` names a key of the composed config: Hydra would refuse an unknown
    one too, but without saying which key was meant. Group selections (`algorithm=ppo`), additions (`+key`),
    deletions (`~key`), `hydra.*` keys and flags (`--cfg job`) pass unchecked; with another config chosen
    (`--config-name`, `--config-path`, `--config-dir`) nothing is checked here, only renamed."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    renamed, plain = [], []
    for arg in overrides:
        key, eq, value = arg.partition("=")
        if eq and key in deprecated:
            print(f"warning: config key {key} is deprecated; use {deprecated[key]}", file=sys.stderr)
            arg = f"{deprecated[key]}={value}"
            key = deprecated[key]
        renamed.append(arg)
        if eq and not arg.startswith(("-", "+", "~", "hydra.")) and "." in key:
            plain.append(key)
    other_config = any(a.startswith(("--config-", "-cn", "-cp", "-cd")) for a in overrides)
    if not plain or other_config:
        return renamed
    # Group selections, and additions (their keys exist once added), compose the tree the keys must be in.
    groups = [
        a
        for a in renamed
        if "=" in a and not a.startswith(("-", "~")) and ("." not in a.partition("=")[0] or a.startswith("+"))
    ]
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        composed = OmegaConf.to_container(compose(config_name=config_name, overrides=groups), resolve=False)
    known = dotted_keys(composed)
    for key in plain:
        if key not in known:
            raise ConfigError(f"unknown config key {key}{_closest(key, known)}")
    return renamed


def _closest(key: str, known: list[str]) -> str:
    """' (did you mean ...?)': the closest keys in the same section, else anywhere, else ''."""
    parent, _, leaf = key.rpartition(".")
    siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent]
    close = [f"{parent}.{k}" for k in difflib.get_close_matches(leaf, siblings, n=3, cutoff=0.6)]
    close = close or difflib.get_close_matches(key, known, n=3, cutoff=0.75)
    return f" (did you mean {' or '.join(close)}?)" if close else ""
