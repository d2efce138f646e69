"""Small toy worlds shared by the toy-world tests (a few hundred people: built in well under a second)."""

from __future__ import annotations

import pytest

from toyworld.build import BuildConfig, build
from toyworld.corpus import build_corpus
from toyworld.questions import build_questions
from toyworld.world import WorldConfig, generate_world

SMALL_WORLD = WorldConfig(
    num_people=400, num_countries=5, num_cities=30, num_companies=20, num_universities=8
)


def small_build_config(seed: int = 3, with_model: bool = True) -> BuildConfig:
    """A build small enough for tests; the model part is what takes the time."""
    return BuildConfig(
        seed=seed,
        world=SMALL_WORLD,
        val_size=60,
        test_size=80,
        train_entity_eval_size=40,
        simtune_questions=400,
        pretrain_copy=200,
        pretrain_reading=300,
        vocab_size=600,
        with_model=with_model,
    )


@pytest.fixture(scope="session")
def small_config():
    """Builds a small BuildConfig: `small_config(seed=..., with_model=...)`."""
    return small_build_config


@pytest.fixture(scope="session")
def small_world():
    return generate_world(3, SMALL_WORLD)


@pytest.fixture(scope="session")
def small_corpus(small_world):
    return build_corpus(small_world)


@pytest.fixture(scope="session")
def small_splits(small_world):
    return build_questions(small_world, val_size=60, test_size=80, train_entity_eval_size=40)


@pytest.fixture(scope="session")
def built_world(tmp_path_factory):
    """A complete build (tokenizer and model included) and its manifest."""
    out = tmp_path_factory.mktemp("toyworld") / "world"
    return out, build(out, small_build_config())
