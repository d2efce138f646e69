"""The build and its CLI: every file written, byte-identical for the same seed, valid datasets."""

from __future__ import annotations

import hashlib
import json
import re

import pyarrow.parquet as pq

from toyworld.__main__ import main
from toyworld.build import build
from zerosearch.data.schema import read_dataset

EXPECTED = {
    "world.json",
    "corpus.jsonl",
    "train.parquet",
    "val.parquet",
    "test.parquet",
    "train_entity_eval.parquet",
    "simtune_pairs.parquet",
    "pretrain.jsonl",
    "manifest.json",
    "tokenizer/tokenizer.json",
    "model_init/model.safetensors",
    "model_init/config.json",
}


def _hashes(folder) -> dict[str, str]:
    """sha256 of every file in `folder`, computed here rather than trusted from the manifest."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_build_writes_every_file_and_the_manifest_hashes_them(built_world):
    out, manifest = built_world
    hashes = _hashes(out)
    assert set(hashes) >= EXPECTED
    assert manifest["files"] == {k: v for k, v in hashes.items() if k != "manifest.json"}
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_same_seed_gives_byte_identical_files(built_world, small_config, tmp_path):
    out, _ = built_world
    again = tmp_path / "again"
    build(again, small_config(seed=3))
    first, second = _hashes(out), _hashes(again)
    assert first == second
    assert "model_init/model.safetensors" in first and "tokenizer/tokenizer.json" in first


def test_different_seed_gives_different_data(small_config, tmp_path):
    a = build(tmp_path / "a", small_config(seed=3, with_model=False))["files"]
    b = build(tmp_path / "b", small_config(seed=4, with_model=False))["files"]
    for name in ("world.json", "corpus.jsonl", "train.parquet", "simtune_pairs.parquet", "pretrain.jsonl"):
        assert a[name] != b[name]


def test_every_split_passes_schema_validation(built_world):
    out, manifest = built_world
    for split in ("train", "val", "test", "train_entity_eval"):
        rows = read_dataset(out / f"{split}.parquet")
        assert len(rows) == manifest["counts"]["questions"][split] > 0
        assert {r["extra_info"]["split"] for r in rows} == {split}


def test_heldout_people_absent_from_every_training_file(built_world):
    out, _ = built_world
    world = json.loads((out / "world.json").read_text())
    heldout = [f"{p['first']} {p['last']}" for p in world["people"] if p["group"] != "train"]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, heldout)) + r")\b")
    training = [
        (out / "pretrain.jsonl").read_text(),
        json.dumps(pq.read_table(out / "simtune_pairs.parquet").to_pylist()),
        json.dumps(pq.read_table(out / "train.parquet").to_pylist()),
    ]
    assert all(pattern.search(text) is None for text in training)
    # ...while the corpus the real engine searches at test time has them.
    assert pattern.search((out / "corpus.jsonl").read_text())


def test_model_and_tokenizer_load_and_agree(built_world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = built_world
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    model = AutoModelForCausalLM.from_pretrained(out / "model_init")
    assert model.config.vocab_size == len(tokenizer)
    first_doc = json.loads((out / "corpus.jsonl").read_text().splitlines()[0])["contents"]
    ids = tokenizer(first_doc)["input_ids"]
    assert tokenizer.decode(ids) == first_doc
    # The world's words are in the vocabulary: far fewer tokens than bytes.
    assert len(ids) < len(first_doc.encode()) / 2


def test_cli_build_and_stats(tmp_path, capsys):
    out = tmp_path / "w"
    args = [
        "build",
        "--out",
        str(out),
        "--seed",
        "1",
        "--num-people",
        "60",
        "--num-cities",
        "10",
        "--num-companies",
        "8",
        "--num-universities",
        "4",
        "--num-countries",
        "3",
        "--simtune-questions",
        "60",
        "--pretrain-copy",
        "10",
        "--pretrain-reading",
        "10",
        "--no-model",
    ]
    assert main(args) == 0
    assert not (out / "model_init").exists()
    assert main(["stats", "--out", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert stats["people"]["train"] + stats["people"]["val"] + stats["people"]["test"] == 60


def test_cli_refuses_to_overwrite_without_the_flag(tmp_path, capsys):
    out = tmp_path / "w"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["build", "--out", str(out), "--num-people", "20", "--no-model"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_stats_without_a_build_says_so(tmp_path, capsys):
    assert main(["stats", "--out", str(tmp_path)]) == 2
    assert "manifest.json not found" in capsys.readouterr().err


def test_cli_bad_option_names_it(tmp_path, capsys):
    assert main(["build", "--out", str(tmp_path / "w"), "--num-people", "3", "--no-model"]) == 2
    assert "error: --num-people must be >= 10" in capsys.readouterr().err


def test_whole_word_names_make_train_name_words_single_tokens(small_config, tmp_path):
    from dataclasses import replace

    from transformers import AutoTokenizer

    from toyworld.world import World

    out = tmp_path / "w"
    build(out, replace(small_config(), whole_word_names=True))
    world = World.load(out / "world.json")
    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    person = world.people_in("train")[0]
    tokens = tokenizer.tokenize(f"Where was {person.name} born?")
    assert tokens[2:4] == ["Ġ" + person.first, "Ġ" + person.last]
    # A word that only held-out people have was never seen by the tokenizer: it stays in pieces.
    train_words = {w for p in world.people_in("train") for w in (p.first, p.last)}
    heldout_only = [p.last for p in world.people_in("val", "test") if p.last not in train_words]
    assert heldout_only and len(tokenizer.tokenize(" " + heldout_only[0])) > 1
