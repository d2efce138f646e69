"""The shipped base model (toyworld/base.py): its hash checks, how the demo installs it instead of training it,
and (slow) that the default build rebuilds it bit for bit."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from toyworld.base import (
    BASE_THREADS,
    MANIFEST,
    MODEL_FILES,
    SHIPPED_BASE,
    ShippedBaseError,
    fit_problem,
    read_manifest,
    stage_recipe,
    verify_files,
    write_shipped,
)
from toyworld.build import sha256_file
from toyworld.pipeline import (
    DEMOS_MARKER,
    STAGE_MARKER,
    Pipeline,
    PipelineConfig,
    chained_settings,
    parse_args,
)
from toyworld.pipeline import main as pipeline_main


@pytest.fixture
def shipped(built_world, tmp_path):
    """A small build with its SFT files, and a 'shipped base' made from it: the untrained model stands in for
    the trained one, with the marker the pipeline's base stages would write."""
    out, _ = built_world
    assets = tmp_path / "assets"
    shutil.copytree(out, assets)
    config = PipelineConfig(assets=assets, run_dir=tmp_path / "run")
    Pipeline(config).prepare_data()
    model = tmp_path / "trained"
    shutil.copytree(assets / "model_init", model)
    marker = chained_settings(config.pretrain, assets, [config.copy, config.pretrain])
    (model / STAGE_MARKER).write_text(json.dumps(marker))
    folder = tmp_path / "base_model"
    write_shipped(model, assets, config.copy, config.pretrain, folder)
    return assets, folder


def _pipeline(assets: Path, folder: Path, monkeypatch, **options) -> tuple[Pipeline, list]:
    """A pipeline whose SFT stages only record that they ran (stage name, threads) and leave a model."""
    trained = []

    def fake_sft(self, stage, label, threads=None):
        trained.append((stage.name, threads))
        (self.config.assets / stage.name).mkdir(exist_ok=True)
        self.stages.seconds[label] = 0.0

    monkeypatch.setattr(Pipeline, "sft", fake_sft)
    config = PipelineConfig(assets=assets, run_dir=assets.parent / "run", shipped_base=folder, **options)
    return Pipeline(config), trained


def test_the_manifest_records_every_file_and_what_the_base_was_trained_from(shipped):
    assets, folder = shipped
    manifest = verify_files(folder)
    assert sorted(manifest["files"]) == sorted(MODEL_FILES)
    assert manifest["files"]["model.safetensors"] == sha256_file(folder / "model.safetensors")
    assert manifest["inputs"]["model_init/model.safetensors"] == sha256_file(
        assets / "model_init/model.safetensors"
    )
    assert manifest["inputs"]["copy_bucketed.jsonl"] == sha256_file(assets / "copy_bucketed.jsonl")
    assert manifest["command"] == "python -m toyworld rebuild-base"
    assert manifest["environment"]["threads"] == BASE_THREADS
    assert set(manifest["built_from"]) == {"commit", "dirty"}


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", STAGE_MARKER])
def test_a_changed_shipped_file_is_refused_by_name(shipped, name, monkeypatch, capsys):
    assets, folder = shipped
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 1
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(ShippedBaseError, match=rf"{name} does not match .*manifest\.json"):
        verify_files(folder)
    pipeline, trained = _pipeline(assets, folder, monkeypatch)
    with pytest.raises(ShippedBaseError, match=name):
        pipeline.base_model()
    assert trained == [] and not (assets / "model_base").exists()  # neither installed nor trained around it


def test_a_missing_shipped_file_is_refused_by_name(shipped):
    _, folder = shipped
    (folder / "config.json").unlink()
    with pytest.raises(ShippedBaseError, match=r"config\.json is missing"):
        verify_files(folder)


def test_the_demo_installs_the_shipped_base_instead_of_training_it(shipped, monkeypatch):
    assets, folder = shipped
    pipeline, trained = _pipeline(assets, folder, monkeypatch)
    pipeline.base_model()
    assert trained == []
    assert list(pipeline.stages.seconds) == ["install the shipped base model (base_model/)"]
    for name in MODEL_FILES:
        assert (assets / "model_base" / name).read_bytes() == (folder / name).read_bytes()
    assert not (assets / "model_copy").exists()
    # the installed marker is what the stages would have written, so the next run reuses it and the stages
    # built on the base key on it as before
    config = pipeline.config
    installed = json.loads((assets / "model_base" / STAGE_MARKER).read_text())
    assert installed == chained_settings(config.pretrain, assets, [config.copy, config.pretrain])
    again, trained = _pipeline(assets, folder, monkeypatch)
    again.base_model()
    assert trained == [] and list(again.stages.seconds) == ["base model (reused)"]


def test_rebuild_base_trains_both_stages_with_pinned_threads_and_redoes_what_follows(shipped, monkeypatch):
    assets, folder = shipped
    pipeline, _ = _pipeline(assets, folder, monkeypatch)
    pipeline.base_model()  # installed
    for name in ("model_simulator", "model_policy"):
        (assets / name).mkdir()
        (assets / name / STAGE_MARKER).write_text("{}")
    (assets / DEMOS_MARKER).write_text("{}")
    rebuild, trained = _pipeline(assets, folder, monkeypatch, rebuild_base=True)
    rebuild.base_model()
    assert trained == [("model_copy", BASE_THREADS), ("model_base", BASE_THREADS)]
    assert not (assets / "model_base" / STAGE_MARKER).exists()  # the installed copy was removed first
    assert not (assets / "model_simulator" / STAGE_MARKER).exists()
    assert not (assets / "model_policy" / STAGE_MARKER).exists()
    assert not (assets / DEMOS_MARKER).exists()
    assert parse_args(["--rebuild-base"]).rebuild_base and not parse_args([]).rebuild_base


def test_a_shipped_base_from_another_build_or_recipe_is_not_used(shipped, monkeypatch, capsys):
    assets, folder = shipped
    (assets / "copy_bucketed.jsonl").write_text((assets / "copy_bucketed.jsonl").read_text() + "\n")
    pipeline, trained = _pipeline(assets, folder, monkeypatch)
    pipeline.base_model()
    assert trained == [("model_copy", BASE_THREADS), ("model_base", BASE_THREADS)]
    assert "shipped base model is not used: copy_bucketed.jsonl" in capsys.readouterr().out

    config = pipeline.config
    other = dataclasses.replace(config.pretrain, steps=config.pretrain.steps + 1)
    problem = fit_problem(read_manifest(folder), assets, config.copy, other)
    assert problem.startswith("the copy/pretraining stages' settings differ")


def test_the_demo_stops_on_a_changed_shipped_file_naming_it(shipped, monkeypatch, capsys):
    assets, folder = shipped
    (folder / "config.json").write_text("{}")
    monkeypatch.setattr(Pipeline, "build_world", lambda self: None)
    monkeypatch.setattr(Pipeline, "prepare_data", lambda self: None)
    config = PipelineConfig(assets=assets, run_dir=assets.parent / "run", shipped_base=folder)
    monkeypatch.setattr("toyworld.pipeline.parse_args", lambda argv: config)
    assert pipeline_main([]) == 2
    assert "config.json does not match" in capsys.readouterr().err


def test_the_repository_ships_a_base_that_matches_its_manifest_and_the_current_recipe():
    """Fails when a shipped file changed, or when configs/toyworld/sft_stages.yaml changed the base stages
    without a rebuild (python -m toyworld rebuild-base)."""
    manifest = verify_files(SHIPPED_BASE)
    config = PipelineConfig()
    assert manifest["stages"] == stage_recipe(config.copy, config.pretrain)
    assert (SHIPPED_BASE / MANIFEST).stat().st_size < 10_000
    assert sum((SHIPPED_BASE / name).stat().st_size for name in MODEL_FILES) < 5_000_000


@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    """The demo's default toy world and its SFT files, as the pipeline builds them (~30 s)."""
    assets = tmp_path_factory.mktemp("default") / "assets"
    pipeline = Pipeline(PipelineConfig(assets=assets, run_dir=assets.parent / "run"))
    pipeline.build_world()
    pipeline.prepare_data()
    return assets


@pytest.mark.slow
def test_the_shipped_base_was_trained_from_the_default_build(default_build):
    config = PipelineConfig(assets=default_build)
    assert fit_problem(verify_files(SHIPPED_BASE), default_build, config.copy, config.pretrain) is None


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_rebuilding_the_base_gives_the_shipped_files_bit_for_bit(default_build, capsys):
    """The copy and pretraining stages from the default build (~13 min on 2 cores)."""
    from toyworld.base import run

    assert run(SHIPPED_BASE, check=True, assets=default_build) == 0, capsys.readouterr().err


def test_the_base_stages_pin_their_threads_and_every_sft_stage_sleeps_when_idle(shipped, monkeypatch):
    """What the trainer processes are started with (the bits of a float32 CPU run follow the thread count)."""
    assets, folder = shipped
    runs = []

    def fake_run(command, env=None):
        runs.append((command, env))
        args = dict(a.split("=", 1) for a in command[3:])
        Path(args["trainer.output_dir"]).mkdir(parents=True, exist_ok=True)
        Path(args["trainer.default_local_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(args["trainer.default_local_dir"]) / "metrics.jsonl").write_text("")

    monkeypatch.setattr("toyworld.pipeline._run", fake_run)
    config = PipelineConfig(assets=assets, run_dir=assets.parent / "run", rebuild_base=True)
    pipeline = Pipeline(config)
    pipeline.base_model()
    pipeline.sft(config.simulator, "fine-tune the simulator")
    assert [r[0][2] for r in runs] == ["verl.trainer.sft_trainer"] * 3
    assert [r[1] for r in runs] == [
        {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(BASE_THREADS)},
        {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(BASE_THREADS)},
        {"OMP_WAIT_POLICY": "PASSIVE"},
    ]
    assert list(pipeline.stages.seconds)[:2] == ["pretrain the base model to copy", "pretrain the base model"]


def test_rebuild_base_writes_the_folder_and_check_names_what_differs(shipped, tmp_path, monkeypatch, capsys):
    """The command around the rebuild (the rebuild itself stands in: the small build's shipped model)."""
    from toyworld import base

    assets, folder = shipped
    model = tmp_path / "rebuilt"
    shutil.copytree(folder, model)
    monkeypatch.setattr(base, "rebuild", lambda where: model)
    out = tmp_path / "written"
    assert base.run(out, assets=assets) == 0
    assert verify_files(out)["files"] == read_manifest(folder)["files"]
    assert "changed: config.json" in capsys.readouterr().out  # nothing was there before
    assert base.run(out, check=True, assets=assets) == 0
    assert "bit for bit identical" in capsys.readouterr().out
    (model / "model.safetensors").write_bytes(b"other weights")
    assert base.run(out, check=True, assets=assets) == 1
    assert "differs from" in capsys.readouterr().err and verify_files(out)  # --check wrote nothing
    assert (assets / "manifest.json").is_file()  # a given --assets folder is kept
