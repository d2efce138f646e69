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


@pytest.fixture(scope="session")
def sharp_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with larger random weights: the untrained one repeats one token under greedy decoding,
    which would hide padding, position and cache bugs; this one varies token by token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny_fit import sharpen

    model = sharpen(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), seed=0)
    out = tmp_path_factory.mktemp("sharp-rollout-model")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def agent_corpus(tmp_path_factory):
    """The agent model's corpus (tests/agent_model.py CORPUS) as a jsonl file."""
    import json

    from tests.agent_model import CORPUS

    corpus = tmp_path_factory.mktemp("agent-corpus") / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"contents": doc}) + "\n" for doc in CORPUS))
    return corpus


@pytest.fixture(scope="session")
def agent_backend(agent_corpus):
    """BM25 over the agent model's corpus."""
    from zerosearch.search.local import LocalBackend, LocalConfig

    with LocalBackend(LocalConfig(corpus=agent_corpus)) as local:
        yield local


@pytest.fixture(scope="session")
def agent_model_dir(tiny_model_dir, agent_backend, tmp_path_factory):
    """A tiny policy that searches, then answers (tests/agent_model.py)."""
    from tests.agent_model import fit_agent_model

    return fit_agent_model(tiny_model_dir, agent_backend, tmp_path_factory.mktemp("agent-model"))
