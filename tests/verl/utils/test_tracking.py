"""Tracking: secret redaction, the backend registry, and each backend writing real files read back here."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from verl.utils.tracking import (
    LOGGERS,
    REDACTED,
    LoggerBackend,
    Tracking,
    redact_command_line,
    redact_secrets,
    register_logger,
)

SECRET = "sk-very-secret-value-123"
CONFIG = {
    "actor": {"optim": {"lr": 1e-6}},
    "search": {"google": {"serp_api_key": SECRET}, "mode": "simulate_sft"},
    "trainer": {"project_name": "zs"},
}


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_redact_secrets_replaces_credential_values_at_any_depth():
    config = {
        "api_key": "a",
        "search": {"serp_api_key": "b", "endpoints": [{"token": "c"}, {"url": "http://x"}]},
        "wandb": {"apiKey": "d", "HF_TOKEN": "e", "db_password": "f", "client_secret_file": "g"},
    }
    redacted = redact_secrets(config)
    assert redacted == {
        "api_key": REDACTED,
        "search": {"serp_api_key": REDACTED, "endpoints": [{"token": REDACTED}, {"url": "http://x"}]},
        "wandb": {
            "apiKey": REDACTED,
            "HF_TOKEN": REDACTED,
            "db_password": REDACTED,
            "client_secret_file": REDACTED,
        },
    }
    assert config["api_key"] == "a"  # the input is not modified


def test_redact_secrets_keeps_ordinary_keys_and_unset_secrets():
    config = {
        "max_tokens": 500,
        "stop_token_ids": [1, 2],
        "tokenizer": "qwen",
        "prompt_key": "prompt",
        "reward_fn_key": "data_source",
        "eos_token": "<|im_end|>",
        "api_key": None,
        "keys_seen": 3,
    }
    assert redact_secrets(config) == config


def test_unknown_backend_error_lists_known_ones(tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown tracking backend\(s\) \['mlflow'\]; known: .*console.*jsonl"
    ):
        Tracking("p", "e", ["console", "mlflow"], tmp_path)


def test_repeated_backend_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="jsonl"):
        Tracking("p", "e", ["jsonl", "jsonl"], tmp_path)


def test_jsonl_writes_plain_values_each_step_before_finish(tmp_path):
    tracking = Tracking("p", "e", ["jsonl"], tmp_path / "run", config=CONFIG)
    tracking.log(
        {"actor/pg_loss": torch.tensor(0.5), "critic/score/mean": np.float32(0.25), "n": np.int64(3)}, 1
    )
    tracking.log({"actor/pg_loss": torch.tensor([0.75]), "actor/kl_loss": float("nan"), "note": "ok"}, 2)
    # Read while the run is still open: every step must already be on disk.
    assert _read_jsonl(tmp_path / "run" / "metrics.jsonl") == [
        {"step": 1, "actor/pg_loss": 0.5, "critic/score/mean": 0.25, "n": 3},
        {"step": 2, "actor/pg_loss": 0.75, "actor/kl_loss": "nan", "note": "ok"},
    ]
    tracking.finish()


def test_jsonl_config_is_redacted(tmp_path):
    with Tracking("p", "e", ["jsonl"], tmp_path, config=CONFIG):
        pass
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["search"]["google"]["serp_api_key"] == REDACTED
    assert written["actor"]["optim"]["lr"] == 1e-6


def test_jsonl_resumed_run_appends(tmp_path):
    with Tracking("p", "e", ["jsonl"], tmp_path) as tracking:
        tracking.log({"x": 1.0}, 1)
    with Tracking("p", "e", ["jsonl"], tmp_path) as tracking:
        tracking.log({"x": 2.0}, 2)
    assert [r["step"] for r in _read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]


def test_jsonl_table_rows_go_to_samples_file(tmp_path):
    with Tracking("p", "e", ["jsonl"], tmp_path) as tracking:
        tracking.log_table(
            "samples",
            ["question", "response", "reward", "golden"],
            [["q1", "<answer> a </answer>", 1.0, ["a", "b"]], ["q2", "r2", np.float64(0.0), []]],
            5,
        )
    assert _read_jsonl(tmp_path / "samples.jsonl") == [
        {
            "step": 5,
            "table": "samples",
            "row": {
                "question": "q1",
                "response": "<answer> a </answer>",
                "reward": 1.0,
                "golden": '["a", "b"]',
            },
        },
        {
            "step": 5,
            "table": "samples",
            "row": {"question": "q2", "response": "r2", "reward": 0.0, "golden": "[]"},
        },
    ]


def test_table_row_with_wrong_width_is_rejected(tmp_path):
    with (
        Tracking("p", "e", ["jsonl"], tmp_path) as tracking,
        pytest.raises(ValueError, match="row 1 has 1 values"),
    ):
        tracking.log_table("samples", ["a", "b"], [[1, 2], [3]], 0)


def test_non_scalar_metric_names_the_key(tmp_path):
    with (
        Tracking("p", "e", ["jsonl"], tmp_path) as tracking,
        pytest.raises(TypeError, match="'actor/entropy'"),
    ):
        tracking.log({"actor/entropy": torch.zeros(3)}, 0)


def test_bad_step_and_log_after_finish(tmp_path):
    tracking = Tracking("p", "e", ["jsonl"], tmp_path)
    with pytest.raises(ValueError, match="step must be"):
        tracking.log({"x": 1.0}, -1)
    tracking.finish()
    tracking.finish()  # idempotent
    with pytest.raises(RuntimeError, match="finish"):
        tracking.log({"x": 1.0}, 1)


def test_console_prints_main_metrics_on_one_line(tmp_path, capsys):
    with Tracking("p", "e", ["console"], tmp_path) as tracking:
        tracking.log(
            {"zz/other": 9.0, "actor/pg_loss": 0.123456, "critic/score/mean": 0.5, "val/em/nq": 0.25}, 3
        )
        tracking.log_table("samples", ["q", "r"], [["what?", "x" * 500]], 3)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "step 3 | critic/score/mean 0.5 | actor/pg_loss 0.1235 | val/em/nq 0.25"
    assert lines[1].startswith("[samples] step 3: 1 row(s); first: q='what?', r='xxx")
    assert len(lines[1]) < 200


def test_console_without_known_keys_shows_first_metrics(tmp_path, capsys):
    with Tracking("p", "e", ["console"], tmp_path) as tracking:
        tracking.log({f"m{i}": i for i in range(12)}, 0)
    assert capsys.readouterr().out.strip() == "step 0 | " + " | ".join(f"m{i} {i}" for i in range(8))


def test_tensorboard_scalars_and_text_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with Tracking("p", "e", ["tensorboard"], tmp_path, config=CONFIG) as tracking:
        tracking.log({"actor/pg_loss": 0.5, "note": "skipped"}, 1)
        tracking.log({"actor/pg_loss": torch.tensor(0.25)}, 2)
        tracking.log_table("samples", ["q", "r"], [["q|1", "line1\nline2"]], 2)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("actor/pg_loss")] == [(1, 0.5), (2, 0.25)]
    assert "note" not in events.Tags()["scalars"]
    table = events.Tensors("samples/text_summary")[0]
    text = table.tensor_proto.string_val[0].decode()
    assert table.step == 2 and "q\\|1" in text and "line1<br>line2" in text
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "simulate_sft" in config and SECRET not in config


def test_wandb_offline_run_logs_without_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with Tracking("zerosearch-tests", "exp1", ["wandb"], tmp_path, config=CONFIG) as tracking:
        tracking.log({"critic/score/mean": 0.75, "actor/grad_norm": np.float32(1.5)}, 1)
        tracking.log_table("trajectories", ["question", "reward"], [["who?", 1.0], ["where?", 0.0]], 1)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    log = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b"critic/score/mean" in log and b"zerosearch-tests" in log and b"exp1" in log
    tables = list(runs[0].glob("files/media/table/trajectories_*.table.json"))
    assert json.loads(tables[0].read_text())["data"] == [["who?", 1.0], ["where?", 0.0]]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_secret_on_the_command_line_does_not_reach_wandb(tmp_path, monkeypatch):
    """wandb stores the process's argv with the run; a Hydra override holding a key must arrive redacted."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    argv = ["main_ppo.py", f"+search.serp_api_key={SECRET}", "trainer.seed=7"]
    monkeypatch.setattr(sys, "argv", list(argv))
    with Tracking("zerosearch-tests", "argv", ["wandb"], tmp_path, config={}) as tracking:
        tracking.log({"x": 1.0}, 1)
    assert sys.argv == argv  # put back as it was
    log = next((tmp_path / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
    assert b"trainer.seed=7" in log and f"+search.serp_api_key={REDACTED}".encode() in log
    assert SECRET.encode() not in log


def test_redact_command_line_understands_hydra_prefixes():
    assert redact_command_line(
        ["a.api_key=k1", "++b.token=k2", "~c.password", "d.keys=[1]", "e.path=x=y"]
    ) == [
        f"a.api_key={REDACTED}",
        f"++b.token={REDACTED}",
        "~c.password",
        "d.keys=[1]",
        "e.path=x=y",
    ]


def test_custom_backend_registered_and_used(tmp_path):
    seen = []

    @register_logger("test_memory")
    class MemoryLogger(LoggerBackend):
        def log(self, metrics, step):
            seen.append((step, metrics))

        def log_table(self, name, columns, rows, step):
            seen.append((step, name, rows))

        def finish(self):
            seen.append("finished")

    try:
        with Tracking("p", "e", ["test_memory"], tmp_path) as tracking:
            tracking.log({"x": np.float64(2.0)}, 4)
        assert seen == [(4, {"x": 2.0}), "finished"]
        assert isinstance(seen[0][1]["x"], float) and not isinstance(seen[0][1]["x"], np.floating)
        with pytest.raises(ValueError, match="already registered"):
            register_logger("test_memory")(type("Other", (MemoryLogger,), {}))
    finally:
        LOGGERS.pop("test_memory")


def test_backend_failing_to_start_closes_the_others(tmp_path):
    finished = []

    @register_logger("test_first")
    class FirstLogger(LoggerBackend):
        def log(self, metrics, step): ...

        def log_table(self, name, columns, rows, step): ...

        def finish(self):
            finished.append(self.run.experiment)

    @register_logger("test_broken")
    class BrokenLogger(FirstLogger):
        def __init__(self, run):
            raise OSError("no route")

    try:
        with pytest.raises(RuntimeError, match="'test_broken' failed to start: no route"):
            Tracking("p", "e", ["test_first", "test_broken"], tmp_path)
    finally:
        LOGGERS.pop("test_first")
        LOGGERS.pop("test_broken")
    assert finished == ["e"]


def test_console_logs_the_full_dict_at_debug(tmp_path, caplog):
    metrics = {"actor/pg_loss": 0.5, "zz/other": 9.0}
    with (
        caplog.at_level("DEBUG", logger="verl.utils.tracking"),
        Tracking("p", "e", ["console"], tmp_path) as t,
    ):
        t.log(metrics, 2)
    assert [r.getMessage() for r in caplog.records] == [f"step 2 metrics: {metrics}"]
