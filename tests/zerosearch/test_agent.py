"""ZeroSearchAgentLoop: which backend each row searches, in training and in validation.

Real local BM25 backends over two one-document corpora tell the backends apart by what they return; the
scripted rollout engine (tests/llm_agent/test_generation.py) makes every row search once, then answer.
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from tests.llm_agent.test_generation import PARAMS, ScriptedRollout, encode
from verl.protocol import DataProto
from zerosearch.agent import ZeroSearchAgentLoop
from zerosearch.search.local import LocalBackend, LocalConfig

SOURCES = ["real", "probe", "real", "probe", "other"]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


def corpus(path, text: str) -> str:
    path.write_text(json.dumps({"id": "0", "contents": text}) + "\n", encoding="utf-8")
    return str(path)


def make_loop(tokenizer, tmp_path, by_source=None, val_search=None, max_turns=1) -> ZeroSearchAgentLoop:
    """A loop training on one local page and validating on another (or on `val_search`)."""
    return ZeroSearchAgentLoop(
        tokenizer,
        total_training_steps=10,
        max_prompt_length=64,
        search={"name": "local", "corpus": corpus(tmp_path / "train.jsonl", "training engine page")},
        curriculum={"start": 0.0, "end": 0.5},
        val_search=val_search
        or {"name": "local", "corpus": corpus(tmp_path / "val.jsonl", "validation engine page")},
        val_search_by_source=by_source,
        max_turns=max_turns,
    )


def rollout(tokenizer, loop, validate: bool, global_step: int = 1) -> list[str]:
    """Each row searches once and answers; returns each row's response text, in row order."""
    prompts = [encode(tokenizer, f"Question: where is item {k}?") for k in range(len(SOURCES))]
    scripts = [[f"<search> item {k} page </search>", f"<answer> a{k} </answer>"] for k in range(len(prompts))]
    batch = DataProto.from_dict(
        non_tensors={
            "prompt_token_ids": prompts,
            "question": [f"where is item {k}?" for k in range(len(prompts))],
            "golden_answers": [[f"a{k}"] for k in range(len(prompts))],
            "data_source": SOURCES,
        }
    )
    engine = ScriptedRollout(tokenizer, prompts, scripts)
    out, _ = loop.rollout(batch, engine, PARAMS, global_step=global_step, validate=validate)
    return [tokenizer.decode(row, skip_special_tokens=True) for row in out.batch["responses"]]


def test_validation_rows_search_the_backend_their_source_is_routed_to(tokenizer, tmp_path):
    loop = make_loop(tokenizer, tmp_path, by_source={"probe": None})
    texts = rollout(tokenizer, loop, validate=True)
    loop.close()
    for k, (source, text) in enumerate(zip(SOURCES, texts, strict=True)):
        engine = "training" if source == "probe" else "validation"
        assert f"{engine} engine page" in text, (source, text)
        assert f"item {k} page" in text and f"a{k}" in text  # trajectories come back in row order


def test_routing_applies_to_validation_only(tokenizer, tmp_path):
    loop = make_loop(tokenizer, tmp_path, by_source={"probe": None})
    texts = rollout(tokenizer, loop, validate=False)
    loop.close()
    assert all("training engine page" in text for text in texts)


def test_a_source_can_name_its_own_backend(tokenizer, tmp_path):
    own = {"name": "local", "corpus": corpus(tmp_path / "own.jsonl", "own engine page")}
    loop = make_loop(tokenizer, tmp_path, by_source={"other": own})
    texts = rollout(tokenizer, loop, validate=True)
    loop.close()
    assert ["own" in t for t in texts] == [s == "other" for s in SOURCES]
    assert all("validation engine page" in t for t, s in zip(texts, SOURCES, strict=True) if s != "other")


def test_a_bad_backend_for_a_source_names_the_key(tokenizer, tmp_path):
    with pytest.raises(
        ValueError, match=r"agent\.val_search_by_source\.probe: unknown search backend 'nope'"
    ):
        make_loop(tokenizer, tmp_path, by_source={"probe": {"name": "nope"}})


class RecordingLocal(LocalBackend):
    """The real local backend, recording what each search call was given."""

    def __init__(self, config):
        super().__init__(config)
        self.calls: list[tuple[float, list]] = []

    async def _search_batch(self, requests, noise_prob):
        self.calls.append((noise_prob, list(requests)))
        return await super()._search_batch(requests, noise_prob)


def test_the_step_noise_is_bound_into_the_backend_and_each_request_carries_its_row(tokenizer, tmp_path):
    loop = make_loop(tokenizer, tmp_path)
    loop.search.close()  # replaced by a recording one
    loop.search = recording = RecordingLocal(
        LocalConfig(corpus=corpus(tmp_path / "r.jsonl", "recorded page"))
    )
    rollout(tokenizer, loop, validate=False, global_step=6)
    loop.val_search.close()
    ((noise, requests),) = recording.calls
    assert noise == pytest.approx(loop.schedule(5)) and 0.0 < noise < 0.5  # step 6 is schedule step 5
    assert [r.context for r in requests] == [
        {"question": f"where is item {k}?", "golden_answers": (f"a{k}",)} for k in range(len(SOURCES))
    ]
    recording.close()


def test_paid_validation_needs_a_budget_and_prints_its_estimate(tokenizer, tmp_path, monkeypatch, capsys):
    from verl.utils.config import ConfigError

    monkeypatch.setenv("SERPAPI_API_KEY", "sk-test")
    google = {"name": "google", "base_url": "http://127.0.0.1:9"}

    def loop(**val_search):
        return make_loop(tokenizer, tmp_path, val_search={**google, **val_search}, max_turns=2)

    unbudgeted = loop()
    with pytest.raises(
        ConfigError, match=r"3 validation\(s\) of 500 rows may send up to 3,000 .*val_search\.max_requests"
    ):
        unbudgeted.plan_validation(rows=500, validations=3)
    unbudgeted.close()
    budgeted = loop(max_requests=5000, cost_per_1k_requests=10.0)
    budgeted.plan_validation(rows=500, validations=3)
    budgeted.close()
    assert (
        "val_search (google): up to 3,000 SerpAPI requests (~$30.00); budget max_requests=5000"
        in capsys.readouterr().err
    )
    free = make_loop(tokenizer, tmp_path)  # a local engine costs nothing: no budget asked
    free.plan_validation(rows=500, validations=3)
    free.close()
