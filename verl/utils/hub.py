"""Models named by Hugging Face hub id as well as by folder, wherever a model path is taken (policy,
reference, critic, SFT, simulation server).

`resolve_model("Qwen/Qwen2.5-3B", key)` returns the model's snapshot folder in the Hugging Face cache
(`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`), downloading it first when the hub can be
reached; with `HF_HUB_OFFLINE=1` it only looks in the cache. A missing model is an error that names the config
key, the id and the cache. The driver resolves once and hands the folder on, so every worker loads the same
files; on several nodes the cache must be on storage every node sees (or populated on each).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# owner/name, or a bare name as older hub models have; letters, digits, '-', '_', '.'
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class ModelNotFoundError(FileNotFoundError):
    """Neither a folder nor a model the hub or its cache holds; the message names the key, the id and the cache."""


def hub_cache_dir() -> Path:
    """The Hugging Face cache this process uses, read from the environment now (not at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_model(name_or_path: str, key: str) -> str:
    """A local folder as it is; a hub id as its snapshot folder in the cache (see the module doc)."""
    name = str(name_or_path)
    if Path(name).expanduser().is_dir():
        return name
    if not _HUB_ID.match(name):
        raise ModelNotFoundError(f"{key}: no such folder: {name}")
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    try:
        return snapshot_download(name, cache_dir=str(cache), local_files_only=_offline())
    except Exception as e:  # missing from the cache offline, unknown id, no network: one message for all
        how = (
            "HF_HUB_OFFLINE is set, so only the cache is read: download the model where there is network "
            f"(`huggingface-cli download {name}`) into this cache, or pass a local folder"
            if _offline()
            else "check the id, the network, and HF_TOKEN for a gated model, or pass a local folder"
        )
        raise ModelNotFoundError(
            f"{key}: {name} is not a folder, and the Hugging Face cache {cache} does not hold it "
            f"({type(e).__name__}). {how}."
        ) from e
