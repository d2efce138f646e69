"""The demo pipeline's pieces that run without training: options, data preparation, the learning report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from toyworld.demos import ModelReader
from toyworld.pipeline import (
    RL_TRAIN_FILE,
    STAGE_MARKER,
    TRAIN_CORPUS,
    TRAIN_FIXED_FILE,
    Pipeline,
    PipelineConfig,
    bucket_by_length,
    copy_lines,
    pack_rows,
    parse_args,
    pretraining_mix,
    stage_settings,
    write_eval_file,
    write_source_subset,
    write_train_corpus,
)
from toyworld.report import TRAIN_FIXED_SOURCE, gain_over_control, read_learning
from toyworld.simtune import SIMULATION_TEMPLATE
from verl.trainer.main_ppo import CONFIG_DIR


def test_default_algorithm_is_grpo_with_its_run_folder():
    config = parse_args([])
    assert config.algorithm == "grpo"
    assert str(config.run_dir) == "outputs/toyworld_demo/grpo"


def test_missing_algorithm_config_is_a_clear_error():
    with pytest.raises(ValueError, match=r"--algorithm nosuch: no config .*nosuch\.yaml; available: .*grpo"):
        PipelineConfig(algorithm="nosuch")


def test_arguments_after_double_dash_are_hydra_overrides():
    config = parse_args(["--steps", "3", "--", "trainer.seed=7", "data.train_batch_size=4"])
    assert config.steps == 3
    assert config.overrides == ["trainer.seed=7", "data.train_batch_size=4"]


def _composed(command: list[str]) -> dict:
    """The trainer config the RL command line composes (what main_ppo would train with)."""
    assert command[1:3] == ["-m", "verl.trainer.main_ppo"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return OmegaConf.to_container(compose(config_name="ppo_trainer", overrides=command[3:]), resolve=True)


def test_rl_searches_the_simulator_by_default_with_the_recipe_from_the_preset():
    cfg = _composed(Pipeline(parse_args(["--steps", "7"])).rl_command("http://127.0.0.1:6001"))
    assert cfg["agent"]["search"] == {
        "name": "simulate_sft",
        "urls": ["http://127.0.0.1:6001"],
        "template": SIMULATION_TEMPLATE,  # the wording the toy simulator was tuned on
        "max_tokens": 256,
        "temperature": 0.5,
    }
    assert cfg["trainer"]["total_training_steps"] == 7 and cfg["trainer"]["n_gpus_per_node"] == 2
    assert cfg["actor_rollout_ref"]["actor"]["optim"]["lr"] == 1e-4 and cfg["curriculum"]["end"] == 0.25


def test_real_engine_rl_searches_the_training_corpus_with_no_server():
    config = parse_args(["--engine", "real", "--assets", "a"])
    cfg = _composed(Pipeline(config).rl_command(None))
    assert cfg["agent"]["search"] == {
        "name": "local",
        "corpus": str((config.assets / TRAIN_CORPUS).resolve()),
    }


def test_rl_trains_on_the_single_hop_file_under_both_engines():
    for engine in ("simulator", "real"):
        config = parse_args(["--engine", engine, "--assets", "a"])
        cfg = _composed(Pipeline(config).rl_command(None if engine == "real" else "http://127.0.0.1:6001"))
        assert cfg["data"]["train_files"] == str((config.assets / RL_TRAIN_FILE).resolve())
        assert cfg["actor_rollout_ref"]["model"]["path"] == str((config.assets / "model_policy").resolve())


def test_source_subset_keeps_only_the_named_data_sources(built_world, tmp_path):
    out, _ = built_world
    write_source_subset(out / "train.parquet", tmp_path / "single.parquet", ["toyworld_single_hop"])
    sources = pq.read_table(out / "train.parquet").column("data_source").to_pylist()
    kept = pq.read_table(tmp_path / "single.parquet").column("data_source").to_pylist()
    assert kept == ["toyworld_single_hop"] * sources.count("toyworld_single_hop")
    assert 0 < len(kept) < len(sources)


def test_source_subset_with_no_matching_row_names_the_file_and_its_sources(built_world, tmp_path):
    out, _ = built_world
    with pytest.raises(ValueError, match=r"train\.parquet: no row with data_source in \['nosuch'\]; it has "):
        write_source_subset(out / "train.parquet", tmp_path / "x.parquet", ["nosuch"])
    assert not (tmp_path / "x.parquet").exists()


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(ValueError, match=r"--engine must be one of simulator, real, got 'google'"):
        parse_args(["--engine", "google"])


def test_training_corpus_names_no_held_out_person(built_world, tmp_path):
    from toyworld.world import World

    out, _ = built_world
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in ("world.json", "corpus.jsonl"):
        (assets / name).write_bytes((out / name).read_bytes())
    path = write_train_corpus(assets)
    train_docs = [json.loads(line)["contents"] for line in path.read_text().splitlines()]
    all_docs = (out / "corpus.jsonl").read_text().splitlines()
    world = World.load(out / "world.json")
    heldout = [p.name for p in world.people if p.group != "train"]
    assert heldout and 0 < len(train_docs) < len(all_docs)
    assert not any(name in doc for doc in train_docs for name in heldout)


def test_bucketing_keeps_every_row_and_groups_similar_lengths():
    rows = [{"text": "x" * n} for n in (1, 50, 2, 51, 3, 52, 4, 53)]
    out = bucket_by_length(rows, batch_size=4, seed=0)
    assert sorted(r["text"] for r in out) == sorted(r["text"] for r in rows)
    batches = [{len(r["text"]) for r in out[i : i + 4]} for i in (0, 4)]
    assert sorted(batches, key=min) == [{1, 2, 3, 4}, {50, 51, 52, 53}]


def test_eval_file_renames_the_data_source(built_world, tmp_path):
    out, _ = built_world
    write_eval_file(out / "test.parquet", tmp_path / "heldout.parquet", "heldout", size=10)
    table = pq.read_table(tmp_path / "heldout.parquet")
    assert table.num_rows == 10
    assert set(table.column("data_source").to_pylist()) == {"heldout"}
    assert (
        table.column("question").to_pylist()
        == pq.read_table(out / "test.parquet").slice(0, 10).column("question").to_pylist()
    )


def test_eval_sample_keeps_the_named_sources_and_repeats_with_its_seed(built_world, tmp_path):
    out, _ = built_world
    paths = [tmp_path / f"fixed{k}.parquet" for k in range(2)]
    for path in paths:
        write_eval_file(
            out / "train.parquet", path, "fixed", 12, only_sources=["toyworld_single_hop"], sample_seed=0
        )
    tables = [pq.read_table(path) for path in paths]
    assert tables[0].num_rows == 12 and tables[0].equals(tables[1])
    assert set(tables[0].column("data_source").to_pylist()) == {"fixed"}
    single = pq.read_table(out / "train.parquet").to_pandas()
    single = set(single[single.data_source == "toyworld_single_hop"].question)
    assert set(tables[0].column("question").to_pylist()) <= single
    first = set(pq.read_table(out / "train.parquet").slice(0, 12).column("question").to_pylist())
    assert set(tables[0].column("question").to_pylist()) != first  # a sample, not the head


def test_fixed_training_questions_are_validated_with_the_training_engine():
    cfg = _composed(Pipeline(parse_args(["--assets", "a"])).rl_command("http://127.0.0.1:6001"))
    assert str((Path("a") / TRAIN_FIXED_FILE).resolve()) in cfg["data"]["val_files"]
    assert cfg["agent"]["val_search_by_source"] == {TRAIN_FIXED_SOURCE: None}
    assert cfg["agent"]["val_search"]["name"] == "local"  # the other files: the real engine


def _write_metrics(path, rewards, before_em, after_em):
    records = [
        {
            "step": 0,
            "val/em/heldout": before_em,
            "val/f1/heldout": 0.2,
            "val/em/train_entities": 0.1,
            "val/f1/train_entities": 0.2,
        }
    ]
    records += [{"step": i + 1, "critic/score/mean": r} for i, r in enumerate(rewards)]
    records[-1].update(
        {
            "val/em/heldout": after_em,
            "val/f1/heldout": 0.4,
            "val/em/train_entities": 0.3,
            "val/f1/train_entities": 0.5,
        }
    )
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_report_compares_first_and_last_ten_steps_and_warm_start_with_trained(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_metrics(path, [0.1] * 10 + [0.2] * 5 + [0.4] * 10, before_em=0.1, after_em=0.3)
    report = read_learning(path)
    assert report.reward_first == pytest.approx(0.1)
    assert report.reward_last == pytest.approx(0.4)
    assert report.reward_rose and report.heldout_em_rose
    assert "held-out EM (real search)" in report.table()
    report.evaluation = (
        "evaluation (zerosearch.eval, held-out, real engine): EM 0.300, F1 0.310; run/eval/results.md"
    )
    assert (
        report.table().splitlines()[-1] == report.evaluation
    )  # the summary's last line points at the results


def test_report_gives_the_standard_error_of_the_reward_change_and_flags_a_rise_inside_two(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = [0.1, 0.3] * 5
    _write_metrics(path, first + [0.2] * 5 + [0.15, 0.35] * 5, before_em=0.1, after_em=0.3)
    report = read_learning(path)
    one_window = (sum((v - 0.2) ** 2 for v in first) / 9) / 10
    assert report.reward_change_se == pytest.approx((2 * one_window) ** 0.5)
    assert report.reward_rose  # +0.05, inside two standard errors (2 x 0.047)
    assert "train reward rose (by less than two standard errors)" in report.table()
    _write_metrics(path, [0.1] * 10 + [0.4] * 10, before_em=0.1, after_em=0.3)
    clear = read_learning(path)
    assert clear.reward_change_se == pytest.approx(0.0, abs=1e-12)
    assert "train reward rose;" in clear.table()


def test_gain_over_a_frozen_control_pairs_the_last_ten_steps(tmp_path):
    trained_path, control_path = tmp_path / "trained.jsonl", tmp_path / "control.jsonl"
    # The control's last steps are hard questions; the trained run beats it by 0.05 and 0.07, alternately.
    control_rewards = [0.3] * 10 + [0.2] * 5 + [0.1, 0.2] * 5
    _write_metrics(control_path, control_rewards, before_em=0.1, after_em=0.1)
    _write_metrics(trained_path, control_rewards[:15] + [0.15, 0.27] * 5, before_em=0.1, after_em=0.2)
    trained, control = read_learning(trained_path), read_learning(control_path)
    assert not trained.reward_rose  # first/last: 0.3 -> 0.21, the questions' doing
    gain, se = gain_over_control(trained, control)
    assert gain == pytest.approx(0.06)
    assert se == pytest.approx((sum((d - 0.06) ** 2 for d in [0.05, 0.07] * 5) / 9 / 10) ** 0.5)
    _write_metrics(control_path, control_rewards[:-1], before_em=0.1, after_em=0.1)
    with pytest.raises(ValueError, match="the trained run logged 25 steps and the control 24"):
        gain_over_control(trained, read_learning(control_path))


def test_report_says_when_held_out_em_did_not_rise(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_metrics(path, [0.1] * 20, before_em=0.3, after_em=0.3)
    report = read_learning(path)
    assert not report.heldout_em_rose and not report.reward_rose
    assert "held-out EM did NOT rise" in report.table()


def test_report_needs_validation_before_and_after(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "critic/score/mean": 0.1}) + "\n")
    with pytest.raises(ValueError, match="validation before and after"):
        read_learning(path)


def test_pretraining_mix_repeats_reading_lines_and_samples_the_rest():
    copies = [{"text": f"text: A{i}, B\ncopy: A{i}, B"} for i in range(5)]
    reading = {"text": "Doc 1: x\nQuestion: q\nAnswer: x"}
    documents = [{"text": "Kanim Zisai works for Zinai Systems."}, {"text": "Tawo is a city in Rexia."}]
    rows = [*copies, reading, *documents]
    assert copy_lines(rows) == copies
    mix = pretraining_mix(rows, copies=3, reading_repeats=2, documents=1, seed=0)
    texts = [r["text"] for r in mix]
    assert texts.count(reading["text"]) == 2 and len(mix) == 6
    assert len({t for t in texts if t.startswith("text: ")}) == 3
    assert sum(r in documents for r in mix) == 1


def test_packing_keeps_every_line_once_within_the_row_budget():
    rows = [{"text": f"line {i} " + "x" * (i % 7)} for i in range(40)] + [{"text": "y" * 50}]
    packed = pack_rows(rows, max_chars=40, seed=0)
    lines = [line for row in packed for line in row["text"].split("\n")]
    assert sorted(lines) == sorted(r["text"] for r in rows)
    assert all(len(row["text"]) <= 40 for row in packed if row["text"] != "y" * 50)
    assert len(packed) < len(rows) / 2  # lines were joined, not one a row
    assert pack_rows(rows, max_chars=40, seed=0) == packed


def test_a_stage_is_reused_only_while_its_settings_data_and_init_model_are_unchanged(tmp_path):
    stage = (
        PipelineConfig().copy
    )  # tuple-valued settings (betas) must compare equal after a marker round trip
    (tmp_path / stage.data).write_text("x")
    (tmp_path / stage.init).mkdir()
    settings = stage_settings(stage, tmp_path)
    marker = tmp_path / "marker.json"
    marker.write_text(json.dumps(settings))
    assert json.loads(marker.read_text()) == stage_settings(stage, tmp_path)
    (tmp_path / stage.data).write_text("x")  # rewritten, same bytes: still the same stage
    assert stage_settings(stage, tmp_path) == settings
    (tmp_path / stage.data).write_text("y")
    assert stage_settings(stage, tmp_path) != settings  # other training data
    (tmp_path / stage.data).write_text("x")
    (tmp_path / stage.init / STAGE_MARKER).write_text(json.dumps({"steps": 1}))
    assert stage_settings(stage, tmp_path) != settings  # the model it starts from was retrained


def test_demonstrations_are_answered_by_the_base_model_and_redone_when_it_changes(built_world, tmp_path):
    import shutil

    out, _ = built_world
    assets = tmp_path / "assets"
    shutil.copytree(out, assets)
    shutil.copytree(assets / "model_init", assets / "model_base")  # stands in for the pretrained base
    config = PipelineConfig(assets=assets, num_demos=6)
    label = "warm-start demonstrations (the base model's answers)"
    Pipeline(config).write_demos()
    rows = pq.read_table(assets / config.policy.data).to_pylist()
    reader = ModelReader(assets / "model_base")
    assert rows and [r["answer"] for r in rows] == reader([(r["question"], r["documents"]) for r in rows])
    again = Pipeline(config)
    again.write_demos()
    assert list(again.stages.seconds) == [label + " (reused)"]
    (assets / "model_base" / STAGE_MARKER).write_text(json.dumps({"steps": 1}))
    retrained = Pipeline(config)
    retrained.write_demos()
    assert list(retrained.stages.seconds) == [label]


def test_report_shows_the_reward_no_noise_touched_beside_the_plain_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_metrics(path, [0.2] * 10 + [0.1] * 10, before_em=0.1, after_em=0.3)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records[1:]:
        r["critic/score/mean_where/no_noisy_search"] = 0.2 if r["step"] <= 10 else 0.3
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = read_learning(path)
    assert report.useful_rewards == [0.2] * 10 + [0.3] * 10
    assert not report.reward_rose  # the verdict stays on the plain train reward
    line = next(x for x in report.table().splitlines() if "no noise touched" in x)
    assert line.split()[-4:] == ["0.200", "0.300", "+0.100", "0.000"]  # ..., change, standard error


def test_report_shows_the_fixed_question_reward_when_it_was_validated(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_metrics(path, [0.2] * 10 + [0.1] * 10, before_em=0.1, after_em=0.3)
    assert read_learning(path).fixed_reward is None  # runs before the fixed questions existed
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[0]["val/f1/train_fixed"], records[-1]["val/f1/train_fixed"] = 0.25, 0.3
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = read_learning(path)
    assert report.fixed_reward == (0.25, 0.3)
    assert not report.reward_rose  # the verdict stays on the first/last-10 means the issue asks for
    table = report.table()
    line = next(x for x in table.splitlines() if "fixed questions, noise 0" in x)
    assert line.split()[-3:] == ["0.250", "0.300", "+0.050"]
    assert "train reward did NOT rise (on fixed questions: rose)" in table


def test_the_demo_ends_with_the_evaluation_harness_on_the_trained_policy(built_world, tmp_path):
    """The harness runs with the RL stage's agent limits on the held-out people and the real engine, and the
    summary points at its results (a built model stands in for the trained policy)."""
    import shutil

    import yaml

    from toyworld.report import HELDOUT_SOURCE

    out, _ = built_world
    assets = tmp_path / "assets"
    shutil.copytree(out, assets)
    write_eval_file(assets / "test.parquet", assets / "eval_heldout.parquet", HELDOUT_SOURCE, 6)
    pipeline = Pipeline(
        parse_args(["--assets", str(assets), "--run-dir", str(tmp_path / "run"), "--steps", "3"])
    )
    command = pipeline.eval_command()
    agent = yaml.safe_load((Path(CONFIG_DIR) / "preset" / "toyworld.yaml").read_text())["agent"]
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    assert (flags["--max-turns"], flags["--max-obs-length"]) == (
        str(agent["max_turns"]),
        str(agent["max_obs_length"]),
    )
    policy = Path(flags["--model"])
    assert policy == (tmp_path / "run" / "checkpoints" / "global_step_3" / "actor" / "huggingface").resolve()
    shutil.copytree(assets / "model_init", policy)
    assert pipeline.evaluation_line() is None  # nothing evaluated yet
    pipeline.evaluate_policy()
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert results["sources"][HELDOUT_SOURCE]["rows"] == 6
    line = pipeline.evaluation_line()
    assert line.startswith("evaluation (zerosearch.eval, held-out, real engine): EM ") and line.endswith(
        "results.md"
    )


def test_the_demo_audits_its_simulator_with_held_out_questions(built_world, tmp_path):
    """The audit's questions are held-out single-hop ones with a full-name query and a first-name one; the
    audit runs on the served simulator with the RL stage's sampling, and the summary gets its line (the built
    model stands in for the tuned simulator)."""
    import shutil

    from toyworld.pipeline import write_audit_file
    from zerosearch.data.schema import read_dataset
    from zerosearch.utils.serving import ServerProcess, find_free_port

    out, _ = built_world
    assets = tmp_path / "assets"
    shutil.copytree(out, assets)
    rows = list(read_dataset(write_audit_file(assets, 3)))
    assert len(rows) == 3 and all(r["data_source"] == "toyworld_single_hop" for r in rows)
    for row in rows:
        first = row["weak_query"].split()[0]
        assert row["query"].startswith(first) and len(row["query"].split()) > len(row["weak_query"].split())
    pipeline = Pipeline(parse_args(["--assets", str(assets), "--run-dir", str(tmp_path / "run")]))
    assert pipeline.audit_line() is None
    args = ["--model", str(assets / "model_init"), "--num-threads", "1"]
    with ServerProcess("zerosearch.simulation.server", args, find_free_port()) as server:
        command = pipeline.audit_command(server.url)
        flags = dict(zip(command[4::2], command[5::2], strict=False))
        assert (flags["--template"], flags["--max-tokens"], flags["--temperature"]) == (
            "project",
            "256",
            "0.5",
        )
        subprocess.run(command, check=True, timeout=300)
    line = pipeline.audit_line()
    assert (
        line.startswith("simulator audit (held-out questions): useful ") and "query-sensitivity gap" in line
    )


def test_report_shows_the_mean_rl_step_and_the_share_spent_waiting_for_search(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_metrics(path, [0.1] * 4, before_em=0.1, after_em=0.2)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record, search in zip(records[1:], [1.0, 2.0, 3.0, 2.0], strict=True):
        record.update({"timing_s/step": 10.0, "timing_s/gen": 5.0, "timing_s/search": search})
    records[-1]["timing_s/testing"] = 30.0  # the final validation is not part of a step
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = read_learning(path)
    assert report.step_seconds == {"step": 10.0, "gen": 5.0, "search": 2.0}
    table = report.table()
    assert "time per RL step (mean)" in table
    (search_line,) = [line for line in table.splitlines() if "waiting for search" in line]
    assert search_line.split()[-3:] == ["2.0", "s", "20%"]


def test_report_gives_the_pipelines_wall_clock_beside_the_stage_times(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_metrics(path, [0.1] * 20, before_em=0.1, after_em=0.1)
    report = read_learning(path)
    report.stage_seconds = {"build toy world": 10.0, "RL (grpo) with the simulated engine": 20.0}
    assert "wall clock" not in report.table()
    report.wall_seconds = 31.25
    lines = report.table().splitlines()
    total = lines.index(next(x for x in lines if x.startswith("time: total")))
    assert lines[total].split()[-2:] == ["30.0", "s"]
    assert lines[total + 1].startswith("time: wall clock (pipeline)") and lines[total + 1].split()[-2:] == [
        "31.2",
        "s",
    ]
