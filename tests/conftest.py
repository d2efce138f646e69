"""Shared fixtures: tiny models are built once per test session, locally, from nothing."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

TOKENIZER_TEXTS = [
    "Doc 1: Alice Smith was born in Paris. She works for Acme Corporation.",
    "Question: Where was Alice Smith born? <think> I should search. </think> <search> Alice Smith birthplace </search>",
    "<information>Doc 1: Bob Jones lives in Rome.</information> <answer> Rome </answer>",
    "The user is trying to answer the question whose answer is Paris. Useful Output: Noisy Output: Query:",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    from toyworld.tiny import train_tokenizer

    return train_tokenizer(TOKENIZER_TEXTS, tmp_path_factory.mktemp("tiny-tokenizer"), vocab_size=512)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_tokenizer_dir, tmp_path_factory):
    """An untrained tiny Qwen2-style model folder (weights + tokenizer) in Hugging Face format."""
    from toyworld.tiny import build_tiny_model

    return build_tiny_model(tiny_tokenizer_dir, tmp_path_factory.mktemp("tiny-model"))


TINY_HUB_ID = "tiny-org/tiny-qwen"


@pytest.fixture(scope="session")
def tiny_model_hub_cache(tiny_model_dir, tmp_path_factory):
    """A Hugging Face cache folder (the hub's layout: models--owner--name/refs/main + snapshots/<commit>/)
    holding the tiny model as TINY_HUB_ID: what a model downloaded by id looks like, built offline."""
    import shutil
    from pathlib import Path

    cache = tmp_path_factory.mktemp("hf-cache")
    repo = cache / ("models--" + TINY_HUB_ID.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(Path(tiny_model_dir), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return cache
