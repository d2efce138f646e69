"""Long runs on shared machines: bad input stops before any worker starts; a run killed with SIGKILL resumes
to exactly the run it would have been; the simulation server may restart under a run; a server that stays
down stops the run with a checkpoint and an error that says what to do."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.verl.trainer.cli_runs import (
    QUESTIONS,
    read_samples,
    read_steps,
    trainer_command,
    trainer_env,
    valid_overrides,
    write_toy_dataset,
)
from verl.trainer.main_ppo import CONFIG_DIR, run
from verl.utils import checkpoint as ckpt
from verl.utils.dataset import DatasetError, RLHFDataset
from zerosearch.data.schema import make_row, row_problem
from zerosearch.templates import policy_messages
from zerosearch.utils.serving import ServerProcess, find_free_port

# The (untrained) simulator writes 64 tokens a search, not 600: the runs test the search path, not its prose.
_SHORT_DOCUMENTS = ["+search.max_tokens=64"]
# Metrics that measure the machine, not the run: they differ between any two runs.
_MACHINE_METRICS = ("timing_s/", "timing_share/", "tokens/s", "search/latency", "search/retries", "perf/")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "train.parquet")


def _rows() -> list[dict]:
    return [
        make_row(
            question=q, golden_answers=a, prompt=policy_messages(q), data_source="toy", split="train", index=i
        )
        for i, (q, a) in enumerate(QUESTIONS)
    ]


def _write(rows: list[dict], path: Path) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)  # no validation: these files are meant to be bad
    return path


def _config(dataset: Path, model: Path, extra: list[str] = ()) -> dict:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=[*valid_overrides(dataset, model), *extra])
    return OmegaConf.to_container(cfg, resolve=True)


def _no_golden_answers(row):
    row["golden_answers"] = []


def _empty_question(row):
    row["question"] = "  "


def _empty_target(row):
    row["reward_model"] = {"style": "rule", "ground_truth": {"target": []}}


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (_no_golden_answers, "golden_answers", "is empty"),
        (_empty_question, "question", "is empty"),
        (_empty_target, "reward_model.ground_truth.target", "is empty"),
    ],
)
def test_a_bad_row_stops_the_run_before_any_worker_naming_file_row_and_field(
    tmp_path, tiny_model_dir, mutate, field, message
):
    rows = _rows()
    mutate(rows[2])
    path = _write(rows, tmp_path / "bad.parquet")
    ray_was_running = ray.is_initialized()  # other test modules may share a session cluster
    with pytest.raises(DatasetError, match=rf"{path}: row 2: field '{field}': {message}"):
        run(_config(path, tiny_model_dir))
    assert ray.is_initialized() == ray_was_running


def test_a_wrongly_typed_column_names_the_field(tmp_path, tiny_model_dir):
    rows = _rows()
    for row in rows:
        row["golden_answers"] = row["golden_answers"][0]  # a string, not a list of strings
    path = _write(rows, tmp_path / "typed.parquet")
    with pytest.raises(DatasetError, match=rf"{path}: row 0: field 'golden_answers': expected a list"):
        run(_config(path, tiny_model_dir))


def test_an_empty_dataset_is_refused(tmp_path, tiny_model_dir):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist(_rows()).slice(0, 0), path)
    with pytest.raises(DatasetError, match="no prompts left"):
        run(_config(path, tiny_model_dir))


def test_skip_bad_rows_drops_and_counts_them(tmp_path, tiny_tokenizer_dir, caplog):
    from transformers import AutoTokenizer

    rows = _rows()
    _no_golden_answers(rows[1])
    _empty_question(rows[3])
    path = _write(rows, tmp_path / "two_bad.parquet")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    loaded = RLHFDataset(path, tokenizer, 512, row_check=row_problem, skip_bad_rows=True)
    assert [item.question for item in loaded] == [QUESTIONS[0][0], QUESTIONS[2][0]]
    assert (loaded.stats.rows, loaded.stats.skipped, loaded.stats.kept) == (4, 2, 2)
    assert [e.split(": field ")[0] for e in loaded.stats.skipped_errors] == [
        f"{path}: row 1",
        f"{path}: row 3",
    ]
    assert "skipped 2 malformed row(s) of 4" in caplog.text


def test_skip_bad_rows_flag_reaches_the_dataset(tmp_path, tiny_model_dir):
    rows = _rows()
    for row in rows:
        _empty_question(row)
    path = _write(rows, tmp_path / "all_bad.parquet")
    with pytest.raises(DatasetError, match="no prompts left"):  # every row skipped, so nothing to train on
        run(_config(path, tiny_model_dir, ["data.skip_bad_rows=true"]))


def _comparable(step: dict) -> dict:
    return {k: v for k, v in step.items() if not k.startswith(_MACHINE_METRICS)}


def _questions_per_step(run_dir: Path) -> dict[int, list[str]]:
    """The questions each step trained on (a re-run step's rows replace the killed attempt's)."""
    rows: dict[int, list[str]] = {}
    for record in read_samples(run_dir):
        rows.setdefault(record["step"], []).append(record["row"]["question"])
    return {step: questions[-8:] for step, questions in rows.items()}


def _wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, log: Path, limit_s: float = 300) -> None:
    """Return as soon as `step`'s metrics line is written (polled every 5 ms: a tiny step is ~0.5 s)."""
    deadline = time.monotonic() + limit_s
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.is_file() and f'"step": {step},' in metrics.read_text()):
        assert proc.poll() is None, f"the run ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"step {step} never finished:\n{log.read_text()[-3000:]}"
        time.sleep(0.005)


def _start(cmd: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """The run in its own process group, so a kill reaches its Ray cluster and workers too."""
    return subprocess.Popen(
        cmd,
        env=trainer_env(),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=cwd,
    )


def _finish(cmd: list[str], log: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=trainer_env(), capture_output=True, text=True, timeout=600)
    log.write_text(proc.stdout + proc.stderr)
    return proc


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigkill_in_step_4_then_resume_equals_the_uninterrupted_run(
    dataset, tiny_model_dir, searching_model_dir, tmp_path
):
    # 2 prompts a step over 4: three epochs in 6 steps, each reshuffled, so the data order is a real check.
    extra = [
        "data.train_batch_size=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "trainer.save_freq=3",
        "trainer.max_actor_ckpt_to_keep=1",
        "trainer.sample_table_rows=8",
        "actor_rollout_ref.actor.optim.lr=1e-4",  # slow enough that the policy keeps searching
        "curriculum.start=0.5",  # noisy and useful documents both in play, and the share rises
        "curriculum.end=1.0",
        *_SHORT_DOCUMENTS,
    ]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    with ServerProcess(
        "zerosearch.simulation.server", ["--model", str(tiny_model_dir)], find_free_port()
    ) as sim:
        proc = _finish(
            trainer_command(dataset, searching_model_dir, sim.url, straight, 6, extra), tmp_path / "a.log"
        )
        assert proc.returncode == 0, (tmp_path / "a.log").read_text()[-3000:]

        cmd = trainer_command(dataset, searching_model_dir, sim.url, killed, 6, extra)
        log = tmp_path / "b.log"
        victim = _start(cmd, log)
        _wait_for_step(killed, 3, victim, log)
        time.sleep(0.1)  # step 3 is logged last in its iteration, so step 4 is under way (a step is ~0.5 s)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=60)
        assert [s["step"] for s in read_steps(killed)] == [1, 2, 3]
        root = killed / "checkpoints"
        assert ckpt.read_marker(root) == 3
        # What a kill during a save leaves behind: a staging folder of a writer that no longer exists.
        stale = root / "global_step_4.tmp-999999"
        shutil.copytree(root / "global_step_3", stale)
        (stale / "trainer_state.json").unlink()

        proc = _finish(cmd, tmp_path / "c.log")
        assert proc.returncode == 0, (tmp_path / "c.log").read_text()[-3000:]

    assert (
        "resumed from" in (tmp_path / "c.log").read_text()
        and "global_step_3" in (tmp_path / "c.log").read_text()
    )
    assert not stale.exists()
    for run_dir in (straight, killed):  # keep the last 1: step 3's checkpoint went once step 6's was complete
        assert [step for step, _ in ckpt.list_checkpoints(run_dir / "checkpoints")] == [6]
    a, b = read_steps(straight), read_steps(killed)
    assert [s["step"] for s in a] == [s["step"] for s in b] == [1, 2, 3, 4, 5, 6]
    assert _questions_per_step(killed) == _questions_per_step(straight)
    assert len({tuple(q) for q in _questions_per_step(straight).values()}) > 1  # the order does change
    for step_a, step_b in zip(a, b, strict=True):
        expected, got = _comparable(step_a), _comparable(step_b)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (step_a["step"], key)
    assert a[-1]["search/noise_prob"] > a[0]["search/noise_prob"]  # the curriculum moved, and resumed
    searched = [s["search/calls_per_sample"] > 0 for s in a]
    assert sum(searched) >= 5 and any(searched[3:]), (
        searched
    )  # the simulator was in the loop, after resume too
    drawn = [s["search/noisy_fraction"] for s in a if "search/noisy_fraction" in s]
    assert any(d > 0 for d in drawn) and any(d < 1 for d in drawn), drawn  # noisy and useful draws


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_training_rides_through_a_simulation_server_restart(
    dataset, tiny_model_dir, searching_model_dir, tmp_path
):
    """Also: a credential in the config reaches no log, no logger backend, no checkpoint and no Hydra file."""
    secret = "hf_doNotLeak0123456789"
    extra = [
        *_SHORT_DOCUMENTS,
        "+search.max_retries=40",
        "+search.backoff_base_s=0.2",
        "+search.backoff_max_s=2.0",
        "trainer.logger=[console,jsonl,tensorboard,wandb]",
        # A section the engine does not read (the domain's, as the trainer sees it) travels into config.json.
        f"+notes.hf_token={secret}",
    ]
    run_dir, log, cwd = tmp_path / "run", tmp_path / "run.log", tmp_path / "cwd"
    cwd.mkdir()
    with ServerProcess(
        "zerosearch.simulation.server", ["--model", str(tiny_model_dir)], find_free_port()
    ) as sim:
        trainer = _start(trainer_command(dataset, searching_model_dir, sim.url, run_dir, 4, extra), log, cwd)
        _wait_for_step(run_dir, 1, trainer, log)
        sim.kill()  # step 2's searches find nobody listening...
        time.sleep(3.0)
        sim.start()  # ...until the server is back on its port
        assert trainer.wait(timeout=600) == 0, log.read_text()[-3000:]
    steps = read_steps(run_dir)
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert sum(s["search/failures"] for s in steps) == 0
    assert sum(s["search/retries"] for s in steps[1:]) > 0  # the outage was felt and retried through
    assert (run_dir / "checkpoints" / "global_step_4").is_dir()

    assert secret not in log.read_text()
    written = [f for f in run_dir.rglob("*") if f.is_file()]
    assert any("tfevents" in f.name for f in written) and any(f.suffix == ".wandb" for f in written)
    assert [f for f in written if secret.encode() in f.read_bytes()] == []
    assert "REDACTED" in json.loads((run_dir / "config.json").read_text())["notes"]["hf_token"]
    assert list(cwd.iterdir()) == []  # Hydra wrote no outputs/ or .hydra/ copy of the command line


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_server_down_past_the_retry_budget_stops_with_a_checkpoint_and_a_way_on(
    dataset, tiny_model_dir, searching_model_dir, tmp_path
):
    hasty = [
        *_SHORT_DOCUMENTS,
        "+search.max_retries=2",
        "+search.backoff_base_s=0.1",
        "+search.backoff_max_s=0.2",
    ]
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    port = find_free_port()
    with ServerProcess("zerosearch.simulation.server", ["--model", str(tiny_model_dir)], port) as sim:
        cmd = trainer_command(dataset, searching_model_dir, sim.url, run_dir, 3, hasty)
        trainer = _start(cmd, log)
        _wait_for_step(run_dir, 1, trainer, log)
        sim.kill()
        assert trainer.wait(timeout=600) != 0
        text = log.read_text()
        # The first step whose policy searches after the kill stops the run (the fitted policy nearly
        # always searches, so that is step 2; a step without any search would pass unharmed).
        stopped = re.search(r"training stopped in step (\d) during 'gen'", text)
        assert stopped, text[-3000:]
        step = int(stopped.group(1))
        assert f"search backend 'simulate_sft' at {sim.url}" in text and "/health" in text
        assert f"the state of step {step - 1} is saved in" in text and "resume_mode=auto" in text
        assert ckpt.read_marker(run_dir / "checkpoints") == step - 1
        assert [s["step"] for s in read_steps(run_dir)] == list(range(1, step))

        sim.start()  # the cause is fixed: the same command continues from step 1
        proc = _finish(cmd, tmp_path / "resume.log")
        assert proc.returncode == 0, (tmp_path / "resume.log").read_text()[-3000:]
    assert [s["step"] for s in read_steps(run_dir)] == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_run_folder_never_resumes_a_run_with_other_settings_and_a_finished_run_says_so(
    dataset, tiny_model_dir, tmp_path
):
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    with ServerProcess(
        "zerosearch.simulation.server", ["--model", str(tiny_model_dir)], find_free_port()
    ) as sim:
        first = trainer_command(dataset, tiny_model_dir, sim.url, run_dir, 2, ["trainer.save_freq=1"])
        assert _finish(first, log).returncode == 0, log.read_text()[-3000:]
        state = json.loads((run_dir / "checkpoints" / "global_step_2" / "trainer_state.json").read_text())
        assert state["extra_state"]["fingerprint"]["curriculum"]["end"] == 0.5

        other = trainer_command(dataset, tiny_model_dir, sim.url, run_dir, 4, ["curriculum.end=0.25"])
        proc = _finish(other, log)
        assert proc.returncode != 0
        text = log.read_text()
        assert "was saved by a run with other settings" in text and "curriculum: {" in text
        assert "'end': 0.5" in text and "'end': 0.25" in text and "trainer.experiment_name" in text
        assert read_steps(run_dir)[-1]["step"] == 2  # nothing trained

        again = _finish(first, log)
        assert again.returncode == 0 and "this run is finished: it resumed at step 2 of 2" in log.read_text()
        assert read_steps(run_dir)[-1]["step"] == 2
