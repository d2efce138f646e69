"""Build a toy world folder: world, corpus, QA splits, sim-tuning pairs, pretraining text, tokenizer, model.

Everything is drawn from explicitly seeded streams, so the same seed and options give byte-identical
files; `manifest.json` records each file's sha256 so two builds can be compared at a glance.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toyworld.corpus import build_corpus, write_corpus
from toyworld.pretrain import build_pretrain_texts, write_pretrain
from toyworld.questions import build_questions, dataset_rows
from toyworld.simtune import build_simtune_pairs, write_pairs
from toyworld.world import World, WorldConfig, generate_world
from zerosearch.data.schema import write_dataset

logger = logging.getLogger(__name__)

SPLIT_FILES = {
    "train": "train.parquet",
    "val": "val.parquet",
    "test": "test.parquet",
    "train_entity_eval": "train_entity_eval.parquet",
}
# Everything a build writes; only these are removed when a build overwrites a folder.
OUTPUTS = (
    "world.json",
    "corpus.jsonl",
    *SPLIT_FILES.values(),
    "simtune_pairs.parquet",
    "pretrain.jsonl",
    "tokenizer",
    "model_init",
    "manifest.json",
)


@dataclass(frozen=True)
class BuildConfig:
    """Every option of a build; recorded in the manifest."""

    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)
    val_size: int = 200
    test_size: int = 500
    train_entity_eval_size: int = 200
    simtune_questions: int = 3000
    queries_per_question: int = 4
    simtune_miss_share: float = 0.0
    simtune_labelling: str = "paper"
    topk: int = 5
    pretrain_copy: int = 30000
    pretrain_reading: int = 6000
    vocab_size: int = 2048
    whole_word_names: bool = False
    policy_template: str = "policy_default"
    with_model: bool = True

    def check(self) -> None:
        self.world.check()
        for name in (
            "val_size",
            "test_size",
            "train_entity_eval_size",
            "simtune_questions",
            "queries_per_question",
            "topk",
            "vocab_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.simtune_miss_share < 1.0:
            raise ValueError(f"simtune_miss_share must be in [0, 1), got {self.simtune_miss_share}")
        if self.simtune_labelling not in ("paper", "engine"):
            raise ValueError(f"simtune_labelling must be paper or engine, got {self.simtune_labelling!r}")
        for name in ("pretrain_copy", "pretrain_reading"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(out: Path) -> dict[str, str]:
    """sha256 of every file under `out` except the manifest, by relative path."""
    return {
        str(p.relative_to(out)): sha256_file(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def entity_words(world: World) -> list[str]:
    """The words of every name training may see (train people, places, organisations), for the tokenizer.

    Held-out people's names share first and last names with train people, so almost all of their words
    are in this list too; a word only a held-out person has stays out, as the tokenizer never saw it.
    """
    names = [p.name for p in world.people_in("train")]
    names += [n for e in (*world.cities, *world.countries, *world.orgs) for n in (e.name, *e.aliases)]
    return sorted({word for name in names for word in name.split()})


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to replace a previous build there")
        for name in OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


class _Steps:
    """Numbered progress lines with the time each step took (a build has few, long steps)."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        self.done += 1
        logger.info("[%d/%d] %s (%.1fs)", self.done, self.total, message, now - self.start)
        self.start = now


def build(out_dir: str | Path, config: BuildConfig | None = None, overwrite: bool = False) -> dict:
    """Build the toy world into `out_dir` and return the manifest (also written as manifest.json)."""
    from zerosearch.templates import load_template

    config = config or BuildConfig()
    config.check()
    out = Path(out_dir)
    _prepare(out, overwrite)
    step = _Steps(8 if config.with_model else 6)
    world = generate_world(config.seed, config.world)
    world.save(out / "world.json")
    step(f"world: {len(world.people)} people, {len(world.cities)} cities, {len(world.orgs)} organisations")
    documents = build_corpus(world)
    write_corpus(documents, out / "corpus.jsonl")
    step(f"corpus: {len(documents)} documents")
    splits = build_questions(world, config.val_size, config.test_size, config.train_entity_eval_size)
    counts = {}
    for split, filename in SPLIT_FILES.items():
        questions = getattr(splits, split)
        write_dataset(dataset_rows(questions, split, config.policy_template), out / filename)
        counts[split] = len(questions)
    step("questions: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    pairs, simtune_stats = build_simtune_pairs(
        world,
        documents,
        splits.train,
        config.simtune_questions,
        config.queries_per_question,
        config.topk,
        miss_share=config.simtune_miss_share,
        labelling=config.simtune_labelling,
    )
    write_pairs(pairs, out / "simtune_pairs.parquet")
    step(
        f"simulation-tuning pairs: {len(pairs)} ({simtune_stats.kept_per_label} useful, "
        f"{simtune_stats.kept_per_label} noisy) from {simtune_stats.candidates} real-engine searches"
    )
    pretrain = build_pretrain_texts(world, documents, config.pretrain_copy, config.pretrain_reading)
    write_pretrain(pretrain, out / "pretrain.jsonl")
    step(f"pretraining text: {len(pretrain)} lines")
    if config.with_model:
        from toyworld.tiny import build_tiny_model, train_tokenizer

        # The tokenizer sees what the models will read, held-out people excepted: pretraining text,
        # training questions, the policy template and the simulation prompts.
        texts = (
            pretrain
            + [q.text for q in splits.train]
            + [load_template(config.policy_template)]
            + [m["content"] for pair in pairs for m in pair["prompt"]]
        )
        words = entity_words(world) if config.whole_word_names else []
        train_tokenizer(texts, out / "tokenizer", config.vocab_size, whole_words=words)
        step(f"tokenizer: vocabulary {config.vocab_size}" + (f" + {len(words)} name words" if words else ""))
        build_tiny_model(out / "tokenizer", out / "model_init", seed=config.seed)
        step("untrained tiny model: model_init/")
    manifest = {
        "seed": config.seed,
        "config": asdict(config),
        "counts": {
            "people": {g: len(world.people_in(g)) for g in ("train", "val", "test")},
            "documents": len(documents),
            "questions": counts,
            "simtune_pairs": len(pairs),
            "pretrain_lines": len(pretrain),
        },
        "simtune": asdict(simtune_stats),
        "files": file_hashes(out),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    step(f"manifest: {len(manifest['files'])} files hashed")
    return manifest
