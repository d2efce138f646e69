"""The training curves a user looks at first, from a run folder's metrics.jsonl, as PNG files and a short
markdown page:

    python -m zerosearch.report RUN_DIR [--out DIR] [--smooth N]

Panels: the train reward (and the reward of trajectories no noisy search touched), the response length, the
searches per trajectory, the curriculum's noise probability, the KL to the reference, the policy's entropy, the
step time (rollout, the search wait within it, actor update), and validation EM (cover-EM and F1 in the page's
table) per data source. The page adds where a step goes: mean seconds and share of the step per phase. It reads whatever the run has written so
far, so it works while the run is going (a line still being written is skipped). Written to `RUN_DIR/report/`
by default: one `<panel>.png` each and `report.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Panel:
    """One figure: its file name, title, y-axis label, the metric keys drawn as lines (key, label), and whether
    a moving average helps (not for a schedule: it would only lag the exact curve)."""

    name: str
    title: str
    ylabel: str
    lines: tuple[tuple[str, str], ...]
    smoothed: bool = True


PANELS = (
    Panel(
        "reward",
        "Train reward",
        "score (mean over trajectories)",
        (
            ("critic/score/mean", "all trajectories"),
            ("critic/score/mean_where/no_noisy_search", "no noisy search"),
        ),
    ),
    Panel("response_length", "Response length", "tokens", (("response_length/mean", "mean"),)),
    Panel("searches", "Searches per trajectory", "searches", (("search/calls_per_sample", "mean"),)),
    Panel(
        "noise",
        "Noise probability (curriculum)",
        "p(noisy documents)",
        (("search/noise_prob", "p"),),
        smoothed=False,
    ),
    Panel(
        "kl",
        "KL to the reference",
        "KL",
        (("actor/kl_loss", "KL loss term"), ("actor/reward_kl_penalty", "KL in the reward")),
    ),
    Panel("entropy", "Policy entropy", "nats per token", (("actor/entropy", "entropy"),)),
    Panel(
        "step_time",
        "Where a step goes",
        "seconds",
        (
            ("timing_s/step", "step"),
            ("timing_s/gen", "rollout (gen)"),
            ("timing_s/search", "waiting for search (in gen)"),
            ("timing_s/update_actor", "actor update"),
        ),
    ),
)
VALIDATION_METRICS = ("em", "cover_em", "f1")
# The trainer's step phases in the order they run (verl/trainer/ray_trainer.py); `search` is the agent loop's
# wait for the search backend, a part of `gen`.
STEP_PHASES = (
    "gen",
    "search",
    "reward",
    "old_log_prob",
    "ref",
    "values",
    "adv",
    "update_critic",
    "update_actor",
)


def read_metrics(path: str | Path) -> list[dict]:
    """The run's logged lines in order; a last line still being written is skipped, a bad line elsewhere is an
    error naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.jsonl (is this a run folder with the jsonl logger?)")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # being written right now
                break
            raise ValueError(f"{path}: line {number} is not JSON") from None
    return records


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric, over the lines that have it."""
    points = [(r["step"], float(r[key])) for r in records if key in r and isinstance(r[key], int | float)]
    return [s for s, _ in points], [v for _, v in points]


def validation_sources(records: list[dict], metric: str = "em") -> list[str]:
    """The data sources validated, then the pooled `all` and `avg_over_sources` when logged."""
    prefix = f"val/{metric}/"
    names = sorted({k[len(prefix) :] for r in records for k in r if k.startswith(prefix)})
    summaries = [n for n in ("all", "avg_over_sources") if n in names]
    return [n for n in names if n not in summaries] + summaries


def moving_average(values: list[float], window: int) -> list[float]:
    """The mean of the last `window` values at each point (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_panel(panel: Panel, records: list[dict], smooth: int):
    """The panel's figure: each of its metrics as a faint raw line and a bold moving average (or, for a panel
    that is not smoothed, one bold line)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key, label in panel.lines:
        steps, values = series(records, key)
        if not steps:
            continue
        if not panel.smoothed:
            ax.plot(steps, values, linewidth=2, label=label)
            continue
        (raw,) = ax.plot(steps, values, alpha=0.3, linewidth=1)
        ax.plot(steps, moving_average(values, smooth), color=raw.get_color(), linewidth=2, label=label)
    _finish(ax, panel.title, panel.ylabel)
    return fig


def plot_validation(records: list[dict]):
    """Validation EM per data source (and pooled / averaged over sources, dashed), one line each."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for source in validation_sources(records):
        steps, values = series(records, f"val/em/{source}")
        style = "--" if source in ("all", "avg_over_sources") else "-"
        ax.plot(steps, values, style, marker="o", label=source)
    _finish(ax, "Validation EM per data source", "exact match")
    return fig


def _finish(ax, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.figure.tight_layout()


def summary_table(records: list[dict]) -> list[str]:
    """Markdown rows: each panel metric's first and last values, then validation per source and metric."""
    rows = ["| metric | first | last | steps |", "|---|---|---|---|"]
    for panel in PANELS:
        for key, _ in panel.lines:
            steps, values = series(records, key)
            if steps:
                rows.append(f"| `{key}` | {values[0]:.4g} | {values[-1]:.4g} | {steps[0]}-{steps[-1]} |")
    for source in validation_sources(records):
        for metric in VALIDATION_METRICS:
            steps, values = series(records, f"val/{metric}/{source}")
            if steps:
                rows.append(
                    f"| `val/{metric}/{source}` | {values[0]:.4g} | {values[-1]:.4g} | {steps[0]}-{steps[-1]} |"
                )
    return rows


def step_breakdown(records: list[dict]) -> list[str]:
    """Markdown rows: each logged phase's mean seconds per step and its share of the step's time (summed over
    the steps that logged both), then the step itself; [] when no step time was logged."""
    steps = [r for r in records if isinstance(r.get("timing_s/step"), int | float)]
    total = sum(r["timing_s/step"] for r in steps)
    if not steps or total <= 0:
        return []
    rows = ["| phase | seconds per step (mean) | share of the step |", "|---|---|---|"]
    for phase in STEP_PHASES:
        key = f"timing_s/{phase}"
        timed = [r for r in steps if isinstance(r.get(key), int | float)]
        if timed:
            seconds = sum(r[key] for r in timed)
            share = seconds / sum(r["timing_s/step"] for r in timed)
            label = "search (waiting, in gen)" if phase == "search" else phase
            rows.append(f"| {label} | {seconds / len(timed):.3g} | {share:.1%} |")
    rows.append(f"| step | {total / len(steps):.3g} | 100% |")
    return rows


def write_report(run_dir: str | Path, out: str | Path | None = None, smooth: int = 10) -> Path:
    """Draw every panel with data into `out` (default RUN_DIR/report) and write report.md; returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if smooth < 1:
        raise ValueError(f"--smooth must be >= 1, got {smooth}")
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    out = Path(out) if out is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures = [
        (panel.name, panel.title, plot_panel(panel, records, smooth))
        for panel in PANELS
        if any(series(records, key)[0] for key, _ in panel.lines)
    ]
    if validation_sources(records):
        figures.append(("validation_em", "Validation EM per data source", plot_validation(records)))
    page = [f"# Training report: {run_dir}", ""]
    steps = [r["step"] for r in records if "step" in r]
    page.append(
        f"{len(records)} logged lines, steps {min(steps, default=0)}-{max(steps, default=0)}; curves "
        f"drawn raw (faint) and as a {smooth}-step moving average."
    )
    page.append("")
    for name, title, fig in figures:
        fig.savefig(out / f"{name}.png")
        plt.close(fig)
        page += [f"## {title}", "", f"![{title}]({name}.png)", ""]
    page += ["## First and last values", "", *summary_table(records), ""]
    breakdown = step_breakdown(records)
    if breakdown:
        page += ["## Step time by phase", "", *breakdown, ""]
    path = out / "report.md"
    path.write_text("\n".join(page), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.report", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="the run folder (trainer.default_local_dir), with metrics.jsonl")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/report)")
    parser.add_argument("--smooth", type=int, default=10, help="moving-average window in steps (default 10)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.run_dir, args.out, args.smooth)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
