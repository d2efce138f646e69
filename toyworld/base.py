"""The toy world's pretrained base model, shipped in the repository (`toyworld/base_model/`).

The demo's copy and pretraining stages (docs/demo.md) take about 13 minutes of two CPU cores, and their output
is a function of the default toy-world build and the two stages' recipe only: every step is seeded, the data
order is fixed, and the stages run with a pinned number of threads. So the repository ships that output (a
3 MB model with its tokenizer) and the demo installs it instead of training it, after checking

- every shipped file against the sha256 in the folder's `manifest.json` (a changed file is refused, by name);
- that it was trained from exactly this build: the untrained model and tokenizer (`model_init/`) and the two
  stages' data files hash as the manifest records, and the stages' settings (configs/toyworld/sft_stages.yaml)
  are the manifest's.

When the build or the recipe differs, the demo trains the base itself, as it does with `--rebuild-base`.

    python -m toyworld rebuild-base            # rebuild from nothing; rewrite toyworld/base_model/
    python -m toyworld rebuild-base --check    # rebuild and compare with the shipped files; writes nothing

The rebuild is bit for bit on the machine and software it was made with (the manifest's `environment`:
torch version, CPU instruction set, threads); float32 kernels of another instruction set or torch version may
round differently, and then `--check` names the files that differ.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from toyworld.build import sha256_file

if TYPE_CHECKING:
    from toyworld.pipeline import SFTStage

SHIPPED_BASE = Path(__file__).resolve().parent / "base_model"
MANIFEST = "manifest.json"
STAGE_MARKER = "pipeline_stage.json"  # the pipeline's stage marker (toyworld.pipeline.STAGE_MARKER)
# The shipped files: the model, its tokenizer and the pipeline's stage marker (what the demo's later stages
# key on). The training log (sft_metrics.jsonl, 0.6 MB) is left out.
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    STAGE_MARKER,
)
# What the base is trained from, besides the data files: the build's untrained model and its tokenizer.
INIT_FILES = MODEL_FILES[:-1]
# Intra-op threads of the base stages' trainer. Pinned, so the rounding of the float32 reductions does not
# follow the host's core count; 2 is what the demo machine's default gave when the base was first shipped.
BASE_THREADS = 2
REBUILD_COMMAND = "python -m toyworld rebuild-base"


class ShippedBaseError(RuntimeError):
    """The shipped base model's files do not match its manifest."""


def base_inputs(assets: Path, copy: SFTStage, pretrain: SFTStage) -> dict[str, str | None]:
    """sha256 of what the two base stages train from, by path under `assets` (None: missing)."""
    paths = [f"{copy.init}/{name}" for name in INIT_FILES] + [copy.data, pretrain.data]
    return {p: sha256_file(assets / p) if (assets / p).is_file() else None for p in paths}


def stage_recipe(copy: SFTStage, pretrain: SFTStage) -> dict:
    """The two stages' settings as the manifest records them (JSON-shaped)."""
    return json.loads(json.dumps({"copy": asdict(copy), "pretrain": asdict(pretrain)}))


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise ShippedBaseError(f"{path} not found")
    return json.loads(path.read_text(encoding="utf-8"))


def verify_files(folder: Path) -> dict:
    """The manifest of `folder` after checking every model file against its sha256; a missing, unlisted or
    changed file is a ShippedBaseError naming it."""
    manifest = read_manifest(folder)
    listed = manifest.get("files", {})
    for name in MODEL_FILES:
        path = folder / name
        if name not in listed:
            raise ShippedBaseError(f"{folder / MANIFEST} lists no sha256 for {name}")
        if not path.is_file():
            raise ShippedBaseError(f"{path} is missing")
        found = sha256_file(path)
        if found != listed[name]:
            raise ShippedBaseError(
                f"{path} does not match {folder / MANIFEST} (sha256 {found}, manifest {listed[name]}): "
                f"restore it (git checkout -- {folder}) or rebuild it ({REBUILD_COMMAND})"
            )
    return manifest


def fit_problem(manifest: dict, assets: Path, copy: SFTStage, pretrain: SFTStage) -> str | None:
    """Why the shipped base does not belong to the build in `assets` with this recipe (None: it does)."""
    if manifest.get("stages") != stage_recipe(copy, pretrain):
        return "the copy/pretraining stages' settings differ from the manifest's (configs/toyworld/sft_stages.yaml)"
    shipped, here = manifest.get("inputs", {}), base_inputs(assets, copy, pretrain)
    differ = [p for p in sorted(set(shipped) | set(here)) if shipped.get(p) != here.get(p)]
    if differ:
        return f"{', '.join(differ)} in {assets} differ from the build it was trained from"
    return None


def install(folder: Path, target: Path) -> None:
    """Copy the model files of `folder` into `target` (replaced whole, once the copy is complete)."""
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copy2(folder / name, staging / name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def environment() -> dict:
    """What the bits of a float32 CPU training run depend on besides the code and the data."""
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": BASE_THREADS,
    }


def _commit(repo: Path) -> dict:
    """The repository's commit and whether the code the base depends on had uncommitted changes."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    paths = ["toyworld", "verl", "configs", "zerosearch", ":!toyworld/base_model"]
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--", *paths)),
    }


def write_shipped(model: Path, assets: Path, copy: SFTStage, pretrain: SFTStage, out: Path) -> dict:
    """Copy the trained base in `model` to `out` with its manifest; returns the manifest."""
    install(model, out)
    manifest = {
        "what": "the toy world's pretrained base model (toyworld/base.py, docs/demo.md)",
        "command": REBUILD_COMMAND,
        "built_from": _commit(Path(__file__).resolve().parents[1]),
        "environment": environment(),
        "stages": stage_recipe(copy, pretrain),
        "inputs": base_inputs(assets, copy, pretrain),
        "files": {name: sha256_file(out / name) for name in MODEL_FILES},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def rebuild(assets: Path) -> Path:
    """The default toy world built into `assets` and its base model trained there by the demo's own stages
    (build, data, copy, pretraining); returns the model folder."""
    from toyworld.pipeline import Pipeline, PipelineConfig

    pipeline = Pipeline(PipelineConfig(assets=assets, run_dir=assets / "run", rebuild_base=True))
    pipeline.build_world()
    pipeline.prepare_data()
    pipeline.base_model()
    return assets / pipeline.config.pretrain.name


def compare(built: dict, shipped: dict) -> list[str]:
    """The files whose sha256 differ between two manifests (or that one of them lacks)."""
    a, b = built.get("files", {}), shipped.get("files", {})
    return [name for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)]


def add_arguments(parser) -> None:
    """The options of `python -m toyworld rebuild-base`."""
    parser.add_argument(
        "--out", type=Path, default=SHIPPED_BASE, help=f"shipped folder (default {SHIPPED_BASE})"
    )
    parser.add_argument(
        "--check", action="store_true", help="compare the rebuild with --out's files; write nothing there"
    )
    parser.add_argument(
        "--assets", type=Path, default=None, help="build folder to keep (default: a temporary one, removed)"
    )


def run(out: Path, check: bool = False, assets: Path | None = None) -> int:
    """Rebuild the base from nothing and write it to `out` (or, with `check`, compare it with `out`'s files);
    1 when `check` finds a difference."""
    from toyworld.pipeline import PipelineConfig

    start = time.perf_counter()
    keep = assets is not None
    assets = Path(assets or tempfile.mkdtemp(prefix="toyworld_base_"))
    try:
        model = rebuild(assets)
        config = PipelineConfig(assets=assets)
        shipped = read_manifest(out) if (out / MANIFEST).is_file() else {}
        target = assets / "base_model_rebuilt" if check else out
        built = write_shipped(model, assets, config.copy, config.pretrain, target)
    finally:
        if not keep:
            shutil.rmtree(assets, ignore_errors=True)
    differ = compare(built, shipped) if shipped else list(built["files"])
    print(
        f"model.safetensors sha256 {built['files']['model.safetensors']} ({time.perf_counter() - start:.0f} s)"
    )
    if check:
        if differ:
            print(f"the rebuild differs from {out} in: {', '.join(differ)}", file=sys.stderr)
            return 1
        print(f"the rebuild is bit for bit identical to {out}")
    elif shipped and not differ:
        print(f"wrote {out}: identical to what was there")
    else:
        print(f"wrote {out}; changed: {', '.join(differ)}")
    return 0
