"""zerosearch.report on a run folder's metrics.jsonl: figures, their lines, the page's numbers, a run in progress."""

from __future__ import annotations

import json

import pytest

from zerosearch.report import (
    PANELS,
    main,
    moving_average,
    plot_panel,
    plot_validation,
    read_metrics,
    write_report,
)


def _run_dir(tmp_path, partial_last_line: bool = True):
    """20 steps of known metrics, validation at steps 0 and 20 on two sources, and a line still being written."""
    lines = [
        {
            "step": 0,
            "val/em/nq": 0.1,
            "val/em/bamboogle": 0.3,
            "val/em/all": 0.15,
            "val/em/avg_over_sources": 0.2,
        }
    ]
    for step in range(1, 21):
        lines.append(
            {
                "step": step,
                "critic/score/mean": step / 20,
                "critic/score/mean_where/no_noisy_search": step / 10,
                "response_length/mean": 100.0 + step,
                "search/calls_per_sample": 1.5,
                "search/noise_prob": step / 40,
                "actor/kl_loss": 0.001 * step,
                "actor/entropy": 0.5,
            }
        )
    lines[-1].update(
        {"val/em/nq": 0.4, "val/em/bamboogle": 0.6, "val/em/all": 0.45, "val/em/avg_over_sources": 0.5}
    )
    text = "".join(json.dumps(line) + "\n" for line in lines)
    if partial_last_line:
        text += '{"step": 21, "critic/sc'
    (tmp_path / "metrics.jsonl").write_text(text)
    return tmp_path


def test_a_line_being_written_is_skipped_and_a_bad_line_elsewhere_is_named(tmp_path):
    records = read_metrics(_run_dir(tmp_path) / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(21))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not JSON"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_each_figure_has_a_raw_and_a_smoothed_line_per_logged_metric(tmp_path):
    records = read_metrics(_run_dir(tmp_path) / "metrics.jsonl")
    panels = {p.name: p for p in PANELS}
    assert len(plot_panel(panels["reward"], records, 5).axes[0].get_lines()) == 4  # 2 metrics x (raw, mean)
    assert len(plot_panel(panels["kl"], records, 5).axes[0].get_lines()) == 2  # no KL in the reward logged
    (noise,) = plot_panel(panels["noise"], records, 5).axes[0].get_lines()  # a schedule: drawn exactly, once
    assert list(noise.get_ydata()) == [step / 40 for step in range(1, 21)]
    validation = plot_validation(records).axes[0]
    assert [line.get_label() for line in validation.get_lines()] == [
        "bamboogle",
        "nq",
        "all",
        "avg_over_sources",
    ]
    assert list(validation.get_lines()[1].get_ydata()) == [0.1, 0.4]


def test_the_report_writes_real_images_and_a_page_with_first_and_last_values(tmp_path):
    from matplotlib.image import imread

    page = write_report(_run_dir(tmp_path), smooth=5)
    assert page == tmp_path / "report" / "report.md"
    names = ["reward", "response_length", "searches", "noise", "kl", "entropy", "validation_em"]
    for name in names:
        assert imread(tmp_path / "report" / f"{name}.png").shape[:2] == (350, 600)
    text = page.read_text()
    assert all(f"({name}.png)" in text for name in names)
    assert "| `critic/score/mean` | 0.05 | 1 | 1-20 |" in text
    assert "| `val/em/bamboogle` | 0.3 | 0.6 | 0-20 |" in text
    assert "| `val/em/avg_over_sources` | 0.2 | 0.5 | 0-20 |" in text


def test_the_command_line(tmp_path, capsys):
    assert main([str(_run_dir(tmp_path)), "--out", str(tmp_path / "r"), "--smooth", "3"]) == 0
    assert (tmp_path / "r" / "report.md").is_file()
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_moving_average():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_the_page_says_where_a_step_goes_with_the_search_wait_and_its_share(tmp_path):
    lines = [
        {"step": step, "timing_s/step": 10.0, "timing_s/gen": 6.0, "timing_s/search": 2.0 + step}
        for step in (1, 2)
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    text = write_report(tmp_path).read_text()
    assert "(step_time.png)" in text
    breakdown = text.split("## Step time by phase")[1]
    assert "| gen | 6 | 60.0% |" in breakdown
    assert "| search (waiting, in gen) | 3.5 | 35.0% |" in breakdown  # (3 + 4) s of (10 + 10) s
    assert "| step | 10 | 100% |" in breakdown


def test_a_run_without_step_times_has_no_breakdown(tmp_path):
    assert "Step time by phase" not in write_report(_run_dir(tmp_path)).read_text()
