"""The CPU demo: ZeroSearch end to end on the toy world, from nothing to a trained policy and its summary.

    python -m toyworld.pipeline [--algorithm grpo] [--assets artifacts/toyworld]
        [--run-dir outputs/toyworld_demo/grpo] [--steps N] [--engine simulator|real]
        [-- hydra overrides for the RL trainer]

Stages (docs/design.md §8); each one is skipped when its output exists and was made with the same settings:
1. build the toy world (corpus, QA splits, simulation-tuning pairs, pretraining text, tokenizer, model_init);
2. with the SFT trainer: pretrain a tiny *base* model, first on copy lines alone, then on the world's text
   packed several lines to a row (tiny models must learn to copy before anything else works, and at every
   position), fine-tune the *simulator* from it on the simulation-tuning pairs, and
   warm-start the *policy* from it on demonstrations that teach the format but not the skill, answered by
   the base model's own reading (`demos.py`);
3. serve the simulator with the built-in server, run the RL trainer (GRPO by default) with 2 FSDP ranks
   under the noise curriculum, validating with the world's REAL engine (BM25) on held-out and on training
   people before training and at the end; the server is stopped whatever happens;
4. print the summary: warm start vs trained EM/F1, train reward first vs last steps, stage times, peak memory.
The RL stage always runs (into a fresh run folder): it is what the demo shows.

`--engine real` is the baseline the paper compares with (Search-R1: RL against a real engine): the RL
stage searches the world's real engine (BM25 over the documents training may see) instead of the
simulator, and the simulator is neither tuned nor served.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toyworld.base import BASE_THREADS, SHIPPED_BASE, ShippedBaseError, fit_problem, install, verify_files
from toyworld.memory import PeakMemory
from toyworld.questions import DATA_SOURCES
from toyworld.report import (
    HELDOUT_SOURCE,
    TRAIN_ENTITY_SOURCE,
    TRAIN_FIXED_SOURCE,
    LearningReport,
    read_learning,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
ALGORITHM_DIR = REPO_ROOT / "configs" / "algorithm"
TOYWORLD_PRESET = REPO_ROOT / "configs" / "preset" / "toyworld.yaml"
TOYWORLD_SEARCH = REPO_ROOT / "configs" / "search" / "toyworld_simulator.yaml"
SFT_STAGES_FILE = REPO_ROOT / "configs" / "toyworld" / "sft_stages.yaml"
STAGE_MARKER = "pipeline_stage.json"
ENGINES = ("simulator", "real")
# The documents training may see (none names a held-out person): what `--engine real` searches.
TRAIN_CORPUS = "corpus_train.jsonl"
# The RL stage's questions: the single-hop ones of train.parquet. With two turns and this policy, two-hop
# questions almost never pay, so they only add tied groups and noise to the train reward (dev/LOG.md).
RL_TRAIN_FILE = "train_rl.parquet"
RL_TRAIN_SOURCES = (DATA_SOURCES[1],)
# A fixed sample of those questions, validated with the RL stage's own engine at noise 0 (report.py).
TRAIN_FIXED_FILE = "eval_train_fixed.parquet"
# The simulator's audit (zerosearch.simtune audit): held-out people's single-hop questions, with good and weak
# queries; 100 questions x 4 cases x 2 replies, ~45 s. 40 x 1 (9 s) left the gap's standard error at 0.11.
AUDIT_FILE = "audit_questions.parquet"
AUDIT_QUESTIONS = 100
AUDIT_SAMPLES = 2
DEMOS_MARKER = "pipeline_demos.json"
# The SFT stages' threads wait for each other at every parallel region; spinning there (OpenMP's default)
# starves the other thread when another program shares the cores: 40 copy-stage steps took 198 s spinning
# and 36 s sleeping beside other jobs, with bitwise the same weights (dev/LOG.md, 2026-12-07).
SFT_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
ENV = {
    "RAY_AUTH_MODE": "disabled",
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass(frozen=True)
class SFTStage:
    """One supervised stage: train `init` on `data` into `<assets>/<name>` (configs/toyworld/sft_stages.yaml)."""

    name: str
    init: str
    data: str
    steps: int
    lr: float
    batch_size: int
    max_length: int
    warmup_steps: int
    lr_scheduler: str
    betas: tuple[float, float]
    weight_decay: float


def load_sft_stages(path: Path = SFT_STAGES_FILE) -> dict[str, SFTStage]:
    """The supervised stages (copy, pretrain, simulator, policy) from their YAML file; a missing or unknown
    field is an error naming the stage."""
    import yaml

    raw = yaml.safe_load(path.read_text())
    stages = {}
    for key in ("copy", "pretrain", "simulator", "policy"):
        values = dict(raw.get(key) or {})
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        try:
            stages[key] = SFTStage(**values)
        except TypeError as e:
            raise ValueError(f"{path}: stage {key!r}: {e}") from e
    return stages


@dataclass
class PipelineConfig:
    """Everything the demo runs with; the defaults are the tuned recipe (docs/demo.md)."""

    assets: Path = Path("artifacts/toyworld")
    run_dir: Path | None = None
    algorithm: str = "grpo"
    engine: str = "simulator"
    # RL steps. Over 40 steps the train reward rose in the first ~13 and stayed level after (10-step means
    # 0.184, 0.258, 0.238, 0.252; dev/LOG.md, 2026-12-07); 20 keeps the demo within 10 minutes.
    steps: int = 20
    overrides: list[str] = field(default_factory=list)
    # Train the base model here (the copy and pretraining stages) instead of installing the shipped one
    # (toyworld/base.py); every stage that starts from it is redone too.
    rebuild_base: bool = False
    shipped_base: Path = SHIPPED_BASE
    num_demos: int = 4000
    eval_size: int = 300
    # The supervised stages' recipe: configs/toyworld/sft_stages.yaml.
    copy: SFTStage = field(default_factory=lambda: load_sft_stages()["copy"])
    pretrain: SFTStage = field(default_factory=lambda: load_sft_stages()["pretrain"])
    simulator: SFTStage = field(default_factory=lambda: load_sft_stages()["simulator"])
    policy: SFTStage = field(default_factory=lambda: load_sft_stages()["policy"])

    def __post_init__(self) -> None:
        self.assets = Path(self.assets)
        self.shipped_base = Path(self.shipped_base)
        self.run_dir = Path(self.run_dir or f"outputs/toyworld_demo/{self.algorithm}")
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if not (ALGORITHM_DIR / f"{self.algorithm}.yaml").is_file():
            known = sorted(p.stem for p in ALGORITHM_DIR.glob("*.yaml"))
            raise ValueError(
                f"--algorithm {self.algorithm}: no config {ALGORITHM_DIR / (self.algorithm + '.yaml')}"
                f"; available: {', '.join(known)}"
            )


class Stages:
    """Runs named stages, printing progress and recording each one's wall time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, action, skip_reason: str | None = None) -> None:
        if skip_reason:
            print(f"[demo] {name}: skipped ({skip_reason})", flush=True)
            self.seconds[name + " (reused)"] = 0.0
            return
        print(f"[demo] {name}: running", flush=True)
        start = time.perf_counter()
        action()
        self.seconds[name] = time.perf_counter() - start
        print(f"[demo] {name}: done in {self.seconds[name]:.1f} s", flush=True)


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    """Run a child process with the demo's environment (and `env`); a failure names the command."""
    result = subprocess.run(command, env={**os.environ, **ENV, **(env or {})}, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"command failed (exit {result.returncode}): {' '.join(command)}")


def bucket_by_length(rows: list[dict], batch_size: int, seed: int) -> list[dict]:
    """Rows reordered so each consecutive batch holds rows of similar length, batches in random order.

    The SFT trainer pads a batch to its longest row; the pretraining text mixes 15-token facts with
    150-token reading lines, so random batches are mostly padding. Trained with data.shuffle=false.
    """
    ordered = sorted(rows, key=lambda r: len(json.dumps(r, ensure_ascii=False)))
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    random.Random(seed).shuffle(batches)
    return [row for batch in batches for row in batch]


# The base model's mix after the copy stage: copy lines sampled, reading-line repeats, documents sampled.
PRETRAIN_MIX = {"copies": 6000, "reading_repeats": 2, "documents": 6000}
# ... packed into rows of at most this many characters: ~420 tokens of the toy tokenizer, the length of a
# policy trajectory up to its answer (7 lines a row, so 4 rows a step see as many lines as 32 unpacked).
PRETRAIN_ROW_CHARS = 1600


def _is_copy(row: dict) -> bool:
    return row["text"].startswith("text: ")


def _is_reading(row: dict) -> bool:
    return "\nAnswer: " in row["text"]


def copy_lines(rows: list[dict]) -> list[dict]:
    """The `text: ... copy: ...` lines of the pretraining text: what the copy stage trains on."""
    return [r for r in rows if _is_copy(r)]


def pretraining_mix(
    rows: list[dict], copies: int, reading_repeats: int, documents: int, seed: int
) -> list[dict]:
    """The base model's training text after the copy stage: reading lines repeated, a sample of the copy
    lines (so copying is kept up), and a sample of the world's documents (its names and sentence forms)."""
    rng = random.Random(seed)
    copy = copy_lines(rows)
    reading = [r for r in rows if _is_reading(r)]
    other = [r for r in rows if not _is_copy(r) and not _is_reading(r)]
    return (
        rng.sample(copy, min(copies, len(copy)))
        + reading * reading_repeats
        + rng.sample(other, min(documents, len(other)))
    )


def pack_rows(rows: list[dict], max_chars: int, seed: int) -> list[dict]:
    """The texts of `rows`, shuffled and joined by newlines into rows of at most `max_chars` characters
    (a text longer than that is a row of its own).

    Trained one line per row, the base model learns to copy and to read only at the start of a sequence
    (dev/LOG.md: a single token before `text:` stops the copy); packed, every skill is trained at every
    position up to the length the simulator writes and the policy answers at.
    """
    texts = [r["text"] for r in rows]
    random.Random(seed).shuffle(texts)
    packed: list[list[str]] = []
    size = 0  # characters in the last row, newlines included
    for text in texts:
        if packed and size + 1 + len(text) <= max_chars:
            packed[-1].append(text)
            size += 1 + len(text)
        else:
            packed.append([text])
            size = len(text)
    return [{"text": "\n".join(row)} for row in packed]


def stage_settings(stage: SFTStage, assets: Path) -> dict:
    """What a trained stage's marker records: a stage is redone when its settings, its data file's content
    or the model it starts from (that model's own marker) changed. The content, not the file's time: the
    data stage rewrites every file when any of its settings changes (a new evaluation file, say), and a
    byte-identical training file must not retrain the models. JSON-shaped, as the marker reads back."""
    from toyworld.build import sha256_file

    init_marker = assets / stage.init / STAGE_MARKER
    settings = {
        **asdict(stage),
        "data_sha256": sha256_file(assets / stage.data),
        "init": json.loads(init_marker.read_text()) if init_marker.is_file() else None,
    }
    return json.loads(json.dumps(settings))


def chained_settings(stage: SFTStage, assets: Path, stages: Sequence[SFTStage]) -> dict:
    """The marker `stage` gets when the stages it starts from (those of `stages`) are trained here from what
    is in `assets` now: stage_settings with the starting model's marker computed the same way instead of read
    from its folder (an installed shipped base comes without the copy stage's folder)."""
    settings = stage_settings(stage, assets)
    earlier = [s for s in stages if s.name == stage.init]
    if earlier:
        settings["init"] = chained_settings(earlier[0], assets, stages)
    return settings


def _write_rows(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)


def _read_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return pq.read_table(path).to_pylist()


def write_train_corpus(assets: Path) -> Path:
    """`<assets>/corpus_train.jsonl`: the world's documents that name no held-out person (kept if there)."""
    from toyworld.corpus import build_corpus, visible_documents
    from toyworld.engine import ToyWorld

    path = assets / TRAIN_CORPUS
    if not path.is_file():
        world = ToyWorld.load(assets).world
        docs = visible_documents(world, build_corpus(world))
        _write_rows([{"id": d.id, "contents": d.contents} for d in docs], path)
    return path


def _rows_of_sources(table, data_sources: Sequence[str], where: Path):
    """The rows of `table` whose data_source is one of `data_sources`; an error naming `where` if none is."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = pa.array(list(data_sources), type=pa.string())
    subset = table.filter(pc.is_in(table.column("data_source"), value_set=wanted))
    if subset.num_rows == 0:
        found = sorted(set(table.column("data_source").to_pylist()))
        raise ValueError(f"{where}: no row with data_source in {list(data_sources)}; it has {found}")
    return subset


def write_source_subset(source: Path, out: Path, data_sources: Sequence[str]) -> None:
    """The rows of `source` whose data_source is one of `data_sources`; an error if none is."""
    import pyarrow.parquet as pq

    pq.write_table(_rows_of_sources(pq.read_table(source), data_sources, source), out)


def write_eval_file(
    source: Path,
    out: Path,
    data_source: str,
    size: int,
    only_sources: Sequence[str] | None = None,
    sample_seed: int | None = None,
) -> None:
    """`size` questions of `source` with data_source renamed, so validation reports them apart: the first
    ones, or a seeded random sample (kept in file order); `only_sources` keeps those data_sources only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    if only_sources is not None:
        table = _rows_of_sources(table, only_sources, source)
    if sample_seed is None:
        table = table.slice(0, size)
    else:
        rows = sorted(random.Random(sample_seed).sample(range(table.num_rows), min(size, table.num_rows)))
        table = table.take(rows)
    column = pa.array([data_source] * table.num_rows, type=pa.string())
    table = table.set_column(table.schema.get_field_index("data_source"), "data_source", column)
    pq.write_table(table, out)


def write_audit_file(assets: Path, count: int) -> Path:
    """The simulator audit's questions (toyworld.simtune.audit_rows) from the held-out test people."""
    from toyworld.simtune import audit_rows
    from toyworld.world import World
    from zerosearch.data.schema import read_dataset, write_dataset

    rows = audit_rows(World.load(assets / "world.json"), list(read_dataset(assets / "test.parquet")), count)
    return write_dataset(rows, assets / AUDIT_FILE)


class Pipeline:
    def __init__(self, config: PipelineConfig):
        self.config = config
        self.stages = Stages()
        self.python = sys.executable

    def _marker_ok(self, folder: Path, settings: dict) -> bool:
        marker = folder / STAGE_MARKER
        return marker.is_file() and json.loads(marker.read_text()) == settings

    def build_world(self) -> None:
        assets = self.config.assets
        done = (assets / "manifest.json").is_file()
        self.stages.run(
            "build toy world",
            lambda: _run([self.python, "-m", "toyworld", "build", "--out", str(assets)]),
            skip_reason=f"{assets}/manifest.json exists" if done else None,
        )

    def prepare_data(self) -> None:
        """Length-bucketed SFT files for the base model and the simulator, and the two evaluation files
        (cheap; redone if missing)."""
        a, c = self.config.assets, self.config
        settings = {
            "eval_size": c.eval_size,
            "train_fixed": [TRAIN_FIXED_FILE, list(RL_TRAIN_SOURCES)],
            "pretrain_mix": PRETRAIN_MIX,
            "pretrain_row_chars": PRETRAIN_ROW_CHARS,
            "batches": [c.copy.batch_size, c.pretrain.batch_size, c.simulator.batch_size],
            "audit": [AUDIT_FILE, AUDIT_QUESTIONS],
        }
        marker = a / "pipeline_data.json"

        def make() -> None:
            pretrain = _read_rows(a / "pretrain.jsonl")
            sets = {
                c.copy: copy_lines(pretrain),
                c.pretrain: pack_rows(
                    pretraining_mix(pretrain, **PRETRAIN_MIX, seed=0), PRETRAIN_ROW_CHARS, seed=0
                ),
                c.simulator: _read_rows(a / "simtune_pairs.parquet"),
            }
            for stage, rows in sets.items():
                _write_rows(bucket_by_length(rows, stage.batch_size, seed=0), a / stage.data)
            write_eval_file(a / "test.parquet", a / "eval_heldout.parquet", HELDOUT_SOURCE, c.eval_size)
            write_eval_file(
                a / "train_entity_eval.parquet",
                a / "eval_train_entities.parquet",
                TRAIN_ENTITY_SOURCE,
                c.eval_size,
            )
            write_eval_file(
                a / "train.parquet",
                a / TRAIN_FIXED_FILE,
                TRAIN_FIXED_SOURCE,
                c.eval_size,
                only_sources=RL_TRAIN_SOURCES,
                sample_seed=0,
            )
            write_audit_file(a, AUDIT_QUESTIONS)
            marker.write_text(json.dumps(settings))

        reuse = marker.is_file() and json.loads(marker.read_text()) == settings
        self.stages.run("SFT and evaluation data", make, skip_reason="files exist" if reuse else None)

    def write_demos(self) -> None:
        """The warm start's demonstrations, answered by the base model's own reading (demos.py), bucketed;
        redone when the base model or the settings change."""
        from toyworld.demos import DemoConfig, build_demo_file

        a, c = self.config.assets, self.config
        base_marker = a / c.policy.init / STAGE_MARKER
        settings = {
            "num_demos": c.num_demos,
            "batch": c.policy.batch_size,
            "reader": json.loads(base_marker.read_text()) if base_marker.is_file() else None,
        }
        marker = a / DEMOS_MARKER

        def make() -> None:
            build_demo_file(a, a / "demos.parquet", DemoConfig(num_demos=c.num_demos), a / c.policy.init)
            rows = _read_rows(a / "demos.parquet")
            _write_rows(bucket_by_length(rows, c.policy.batch_size, seed=0), a / c.policy.data)
            marker.write_text(json.dumps(settings))

        reuse = (
            marker.is_file() and json.loads(marker.read_text()) == settings and (a / c.policy.data).is_file()
        )
        self.stages.run(
            "warm-start demonstrations (the base model's answers)",
            make,
            skip_reason="files exist" if reuse else None,
        )

    def sft(self, stage: SFTStage, label: str, threads: int | None = None) -> None:
        """Train `stage` unless its marker says it is up to date; `threads` pins the trainer's intra-op
        threads (OMP_NUM_THREADS), else torch's default. The trainer's idle threads sleep (SFT_ENV)."""
        a = self.config.assets
        out = a / stage.name
        settings = stage_settings(stage, a)

        def train() -> None:
            scratch = a / f"{stage.name}_sft"
            shutil.rmtree(scratch, ignore_errors=True)
            _run(
                [
                    self.python,
                    "-m",
                    "verl.trainer.sft_trainer",
                    f"model.path={a / stage.init}",
                    f"data.train_files={a / stage.data}",
                    f"data.max_length={stage.max_length}",
                    "data.truncation=right",
                    "data.shuffle=false",
                    f"data.train_batch_size={stage.batch_size}",
                    f"data.micro_batch_size_per_gpu={stage.batch_size}",
                    f"optim.lr={stage.lr}",
                    f"optim.lr_warmup_steps={stage.warmup_steps}",
                    f"optim.lr_scheduler={stage.lr_scheduler}",
                    f"optim.betas=[{stage.betas[0]},{stage.betas[1]}]",
                    f"optim.weight_decay={stage.weight_decay}",
                    "optim.min_lr_ratio=0.1",
                    f"trainer.total_training_steps={stage.steps}",
                    f"trainer.default_local_dir={scratch}",
                    f"trainer.output_dir={out}",
                    "trainer.logger=[jsonl]",
                    f"trainer.experiment_name={stage.name}",
                ],
                env={**SFT_ENV, **({"OMP_NUM_THREADS": str(threads)} if threads else {})},
            )
            (out / STAGE_MARKER).write_text(json.dumps(settings))
            shutil.copy(scratch / "metrics.jsonl", out / "sft_metrics.jsonl")
            shutil.rmtree(scratch, ignore_errors=True)

        reuse = self._marker_ok(out, settings)
        self.stages.run(label, train, skip_reason=f"{out} exists" if reuse else None)

    def base_model(self) -> None:
        """The base model: the shipped one (toyworld/base.py) installed when it was trained from this very
        build with this recipe, else, or with --rebuild-base, trained here by the copy and pretraining stages.
        A shipped file that does not match its manifest stops the demo (ShippedBaseError)."""
        c, a = self.config, self.config.assets
        target = a / c.pretrain.name
        if c.rebuild_base:
            # Trained again even where the markers would reuse them, and so is every stage built on the base.
            for name in (c.copy.name, c.pretrain.name):
                shutil.rmtree(a / name, ignore_errors=True)
            for marker in (
                a / c.simulator.name / STAGE_MARKER,
                a / c.policy.name / STAGE_MARKER,
                a / DEMOS_MARKER,
            ):
                marker.unlink(missing_ok=True)
            self._train_base()
            return
        if self._marker_ok(target, chained_settings(c.pretrain, a, [c.copy, c.pretrain])):
            self.stages.run("base model", lambda: None, skip_reason=f"{target} exists")
            return
        shipped = c.shipped_base
        if not (shipped / "manifest.json").is_file():
            problem = f"{shipped} holds no shipped base model"
        else:
            problem = fit_problem(verify_files(shipped), a, c.copy, c.pretrain)
        if problem is None:
            self.stages.run(
                f"install the shipped base model ({shipped.name}/)", lambda: install(shipped, target)
            )
            return
        print(f"[demo] the shipped base model is not used: {problem}; training it here", flush=True)
        self._train_base()

    def _train_base(self) -> None:
        c = self.config
        self.sft(c.copy, "pretrain the base model to copy", threads=BASE_THREADS)
        self.sft(c.pretrain, "pretrain the base model", threads=BASE_THREADS)

    def rl_command(self, sim_url: str | None) -> list[str]:
        """The RL trainer's command line: the recipe is configs/preset/toyworld.yaml; this adds where the
        assets and the run folder are, the algorithm and step count, and what to search: the simulator at
        `sim_url`, or (None) the world's real engine over the documents training may see."""
        c, a = self.config, self.config.assets.resolve()
        if sim_url is None:
            search = ["search=local", f"search.corpus={a / TRAIN_CORPUS}"]
        else:
            search = [f"search.urls=[{sim_url}]"]
        overrides = [
            "preset=toyworld",
            f"toyworld.assets={a}",
            f"algorithm={c.algorithm}",
            *search,
            f"trainer.total_training_steps={c.steps}",
            f"trainer.default_local_dir={c.run_dir.resolve()}",
        ]
        return [self.python, "-m", "verl.trainer.main_ppo", *overrides, *c.overrides]

    def train_rl(self) -> None:
        from zerosearch.utils.serving import ServerProcess, find_free_port

        c = self.config
        shutil.rmtree(c.run_dir, ignore_errors=True)
        c.run_dir.mkdir(parents=True)
        write_source_subset(c.assets / "train.parquet", c.assets / RL_TRAIN_FILE, RL_TRAIN_SOURCES)
        if c.engine == "real":
            write_train_corpus(c.assets)
            self.stages.run(f"RL ({c.algorithm}) with the real engine", lambda: _run(self.rl_command(None)))
            return
        port = find_free_port()
        server = ServerProcess(
            "zerosearch.simulation.server",
            ["--model", str(c.assets / c.simulator.name), "--num-threads", "1"],
            port,
            log_path=c.run_dir / "simulation_server.log",
            env={**os.environ, **ENV},
        )

        def audit() -> None:
            server.start()
            _run(self.audit_command(server.url))

        try:
            self.stages.run("start and audit the simulator (zerosearch.simtune audit)", audit)
            self.stages.run(
                f"RL ({c.algorithm}) with the simulated engine", lambda: _run(self.rl_command(server.url))
            )
        finally:
            server.stop()

    def audit_command(self, sim_url: str) -> list[str]:
        """`python -m zerosearch.simtune audit` on the served simulator, sampled as the RL stage samples it
        (configs/search/toyworld_simulator.yaml)."""
        import yaml

        search = yaml.safe_load(TOYWORLD_SEARCH.read_text())
        return [
            self.python, "-m", "zerosearch.simtune", "audit", "--url", sim_url, "--name", "toy simulator",
            "--data", str(self.config.assets.resolve() / AUDIT_FILE),
            "--out", str(self.config.run_dir.resolve() / "simulator_audit"),
            "--questions", str(AUDIT_QUESTIONS), "--samples", str(AUDIT_SAMPLES), "--template", search["template"],
            "--max-tokens", str(search["max_tokens"]), "--temperature", str(search["temperature"]),
        ]  # fmt: skip

    def audit_line(self) -> str | None:
        """The summary's line on the simulator: answer rates per mode and the query-sensitivity gap."""
        path = self.config.run_dir / "simulator_audit" / "audit.json"
        if not path.is_file():
            return None
        (audit,) = json.loads(path.read_text())["simulators"].values()
        gap, se = audit["query_sensitivity_gap"], audit["query_sensitivity_gap_se"]
        return (
            f"simulator audit (held-out questions): useful {audit['useful_answer_rate']:.0%}, noisy "
            f"{audit['noisy_answer_rate']:.0%}, weak query {audit['weak_useful_answer_rate']:.0%}, unrelated "
            f"{audit['unrelated_useful_answer_rate']:.0%}; query-sensitivity gap {gap:+.2f} ± {se:.2f}; "
            f"{path.with_name('audit.md')}"
        )

    def eval_command(self) -> list[str]:
        """`python -m zerosearch.eval` on the trained policy: the held-out people, the world's real engine, and
        the agent loop's limits of the RL stage (configs/preset/toyworld.yaml)."""
        import yaml

        c, a = self.config, self.config.assets.resolve()
        agent = yaml.safe_load(TOYWORLD_PRESET.read_text())["agent"]
        policy = c.run_dir.resolve() / "checkpoints" / f"global_step_{c.steps}" / "actor" / "huggingface"
        return [
            self.python, "-m", "zerosearch.eval", "--model", str(policy),
            "--data", str(a / "eval_heldout.parquet"), "--out", str(c.run_dir.resolve() / "eval"),
            "--engine", "local", "--corpus", str(a / "corpus.jsonl"),
            "--max-turns", str(agent["max_turns"]), "--topk", str(agent["topk"]),
            "--max-tokens-per-turn", str(agent["max_tokens_per_turn"]),
            "--max-obs-length", str(agent["max_obs_length"]),
            "--max-response-length", str(agent["max_response_length"]), "--batch-size", "128",
        ]  # fmt: skip

    def evaluate_policy(self) -> None:
        """The evaluation harness on the trained policy, so every demo shows it end to end."""
        self.stages.run("evaluate the trained policy (zerosearch.eval)", lambda: _run(self.eval_command()))

    def evaluation_line(self) -> str | None:
        """The summary's pointer at the harness's results, with its held-out figure."""
        results = self.config.run_dir / "eval" / "results.json"
        if not results.is_file():
            return None
        pooled = json.loads(results.read_text())["pooled"]
        return (
            f"evaluation (zerosearch.eval, held-out, real engine): EM {pooled['em']:.3f}, F1 {pooled['f1']:.3f}; "
            f"{results.with_name('results.md')}"
        )

    def run(self) -> LearningReport:
        c = self.config
        start = time.perf_counter()
        with PeakMemory() as memory:
            self.build_world()
            self.prepare_data()
            self.base_model()
            if c.engine == "simulator":
                self.sft(c.simulator, "fine-tune the simulator")
            self.write_demos()
            self.sft(c.policy, "warm-start the policy")
            self.train_rl()
            self.evaluate_policy()
        report = read_learning(c.run_dir / "metrics.jsonl")
        report.evaluation = self.evaluation_line()
        report.audit = self.audit_line()
        report.stage_seconds = self.stages.seconds
        report.peak_memory_gib = memory.peak_gib
        report.wall_seconds = time.perf_counter() - start
        (c.run_dir / "summary.txt").write_text(report.table() + "\n", encoding="utf-8")
        return report


def parse_args(argv: Sequence[str]) -> PipelineConfig:
    argv = list(argv)
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m toyworld.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--algorithm", default="grpo", help="configs/algorithm/<name>.yaml (default grpo)")
    parser.add_argument("--assets", default="artifacts/toyworld", help="toy world and models folder")
    parser.add_argument(
        "--run-dir", default=None, help="RL run folder (default outputs/toyworld_demo/<algorithm>)"
    )
    parser.add_argument("--steps", type=int, default=PipelineConfig.steps, help="RL training steps")
    parser.add_argument(
        "--rebuild-base",
        action="store_true",
        help="train the base model here (~13 min on 2 cores) instead of installing the shipped one "
        "(toyworld/base_model/); the stages built on it are redone too",
    )
    parser.add_argument(
        "--engine",
        default=PipelineConfig.engine,
        help="what the RL stage searches: simulator (ZeroSearch, default) or real (the world's BM25: "
        "the Search-R1 baseline)",
    )
    args = parser.parse_args(argv)
    return PipelineConfig(
        assets=Path(args.assets),
        run_dir=args.run_dir,
        algorithm=args.algorithm,
        engine=args.engine,
        steps=args.steps,
        overrides=overrides,
        rebuild_base=args.rebuild_base,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        report = Pipeline(config).run()
    except ShippedBaseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n" + report.table(), flush=True)
    print(f"[demo] finished in {time.perf_counter() - start:.1f} s; run folder {config.run_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
