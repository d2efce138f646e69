"""Measure a served simulation LLM: does it write the answer when asked for useful documents, leave it out when
asked for noisy ones, and does what it writes depend on the query?

For each of `--questions` questions of a dataset (golden answers known), the simulator is asked, through the
project's own search backend (so the prompt is exactly training's), for:

- useful documents for the **good** query (the row's `query` column, else the question itself), a **weak** one
  (the row's `weak_query`, where the data has one) and an **unrelated** one (the next question's good query);
- noisy documents for the good query.

Each request is sent `--samples` times with different seeds. Measured:
- answer rates: how often the documents hold a golden answer (whole words, normalized), per (query, mode):
  `useful_answer_rate` (good, useful: should be high), `noisy_answer_rate` (good, noisy: should be low),
  `weak_useful_answer_rate`, `unrelated_useful_answer_rate`;
- `query_sensitivity_gap` = useful_answer_rate - unrelated_useful_answer_rate. A simulator that writes the
  answer whatever the query (it sees the answer in its prompt) scores ~0: under it, RL pays a vague query as
  well as a precise one, and the policy does not learn to search (docs/design.md §8);
- format: the share of replies in the "Doc i:" layout with exactly `topk` documents, and words per document
  (the reference prompt asks for about 30);
- diversity: distinct documents over the samples of one request, as a share of all documents returned;
- latency (p50, p95) and failed requests.

Writes `audit.json`, `audit.md`, `answer_rates.png`, `format.png` and every reply in `replies.jsonl`.
With `compare`, a second simulator is measured on the same requests and drawn beside the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CASES = (("good", "useful"), ("weak", "useful"), ("unrelated", "useful"), ("good", "noisy"))
_DOC_LINE = re.compile(r"^\s*Doc \d+:", re.M)


@dataclass
class Probe:
    """One request of the audit: a question, which query, which mode, which sample."""

    row: int
    question: str
    golden_answers: list[str]
    kind: str
    query: str
    mode: str
    sample: int


def probes(rows: Sequence[dict[str, Any]], samples: int) -> list[Probe]:
    """The audit's requests for `rows` (question, golden_answers, optional query / weak_query)."""
    if len(rows) < 2:
        raise ValueError("the audit needs at least 2 questions (the unrelated query is another question's)")
    good = [str(r.get("query") or r["question"]) for r in rows]
    out = []
    for i, row in enumerate(rows):
        queries = {"good": good[i], "unrelated": good[(i + 1) % len(rows)]}
        if row.get("weak_query"):
            queries["weak"] = str(row["weak_query"])
        for kind, mode in CASES:
            if kind in queries:
                for sample in range(samples):
                    out.append(
                        Probe(
                            i,
                            str(row["question"]),
                            list(row["golden_answers"]),
                            kind,
                            queries[kind],
                            mode,
                            sample,
                        )
                    )
    return out


def ask(
    url: str, items: Sequence[Probe], mode: str, topk: int, seed: int, **sampling: Any
) -> list[dict[str, Any]]:
    """Every probe sent to the simulator at `url` through the search backend (`simulate_<mode>` with the
    `sampling` options: template, max_tokens, temperature); one reply record per probe."""
    from llm_agent.search import SearchRequest
    from zerosearch.search import build_search_backend
    from zerosearch.search.simulate import row_context

    backend = build_search_backend(
        name=f"simulate_{mode}", urls=[url], seed=seed, max_failure_rate=1.0, **sampling
    )
    out = []
    try:
        for want in ("useful", "noisy"):
            chosen = [p for p in items if p.mode == want]
            requests = [
                SearchRequest(p.query, row_context(p.question, p.golden_answers), topk, seed * 100_003 + n)
                for n, p in enumerate(chosen)
            ]
            results = backend.search(requests, noise_prob=0.0 if want == "useful" else 1.0)
            for probe, result in zip(chosen, results, strict=True):
                out.append(
                    {
                        **probe.__dict__,
                        "documents": list(result.documents),
                        "text": result.meta.get("text", ""),
                        "latency_s": result.latency_s,
                        "error": result.error,
                    }
                )
    finally:
        backend.close()
    return out


def measure(replies: Sequence[dict[str, Any]], topk: int) -> dict[str, Any]:
    """The audit's numbers from its reply records (see the module doc)."""
    from zerosearch.reward import contains_answer

    ok = [r for r in replies if r["error"] is None]
    rates: dict[str, float | None] = {}
    for kind, mode in CASES:
        case = [r for r in ok if r["kind"] == kind and r["mode"] == mode]
        rates[f"{kind}/{mode}"] = (
            float(np.mean([contains_answer(" ".join(r["documents"]), r["golden_answers"]) for r in case]))
            if case
            else None
        )
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in ok:
        groups.setdefault((r["row"], r["kind"], r["mode"]), []).append(r)
    diversity = [
        len({" ".join(d.split()) for r in group for d in r["documents"]})
        / max(1, sum(len(r["documents"]) for r in group))
        for group in groups.values()
        if len(group) > 1
    ]
    words = [len(d.split()) for r in ok for d in r["documents"]]
    latencies = [r["latency_s"] for r in ok]
    useful, unrelated = rates["good/useful"], rates["unrelated/useful"]
    counts = {case: sum(r["kind"] == case[0] and r["mode"] == case[1] for r in ok) for case in CASES}
    gap_se = None
    if useful is not None and unrelated is not None:  # the standard error of a difference of two proportions
        n_good, n_unrelated = counts[("good", "useful")], counts[("unrelated", "useful")]
        gap_se = float(np.sqrt(useful * (1 - useful) / n_good + unrelated * (1 - unrelated) / n_unrelated))
    return {
        "requests": len(replies),
        "failed": len(replies) - len(ok),
        "useful_answer_rate": useful,
        "noisy_answer_rate": rates["good/noisy"],
        "weak_useful_answer_rate": rates["weak/useful"],
        "unrelated_useful_answer_rate": unrelated,
        "query_sensitivity_gap": None if useful is None or unrelated is None else useful - unrelated,
        "query_sensitivity_gap_se": gap_se,
        "format_doc_layout": float(np.mean([bool(_DOC_LINE.search(r["text"] or "")) for r in ok]))
        if ok
        else None,
        "format_topk_documents": float(np.mean([len(r["documents"]) == topk for r in ok])) if ok else None,
        "words_per_document": float(np.mean(words)) if words else None,
        "document_count_histogram": {
            str(k): sum(len(r["documents"]) == k for r in ok) for k in range(topk + 1)
        },
        "diversity": float(np.mean(diversity)) if diversity else None,
        "latency_p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "latency_p95_s": float(np.percentile(latencies, 95)) if latencies else None,
    }


def verdict(metrics: dict[str, Any]) -> str:
    """One line that says what the numbers mean for RL."""
    gap, useful, noisy = (
        metrics["query_sensitivity_gap"],
        metrics["useful_answer_rate"],
        metrics["noisy_answer_rate"],
    )
    if gap is None or useful is None or noisy is None:
        return "not enough successful replies to judge"
    parts = []
    parts.append("useful mode answers" if useful >= 0.5 else "useful mode rarely answers")
    parts.append("noisy mode keeps the answer out" if noisy <= 0.2 else "noisy mode leaks the answer")
    se = metrics.get("query_sensitivity_gap_se") or 0.0
    if gap + 2 * se < 0.1:
        parts.append(
            "query-blind (it answers an unrelated query about as often as the right one): RL under it cannot "
            "reward better queries"
        )
    elif gap - 2 * se >= 0.1:
        parts.append(f"query-sensitive (gap {gap:.2f} ± {se:.2f}): a better query earns more answers")
    else:
        parts.append(
            f"query sensitivity unclear at this sample size (gap {gap:.2f} ± {se:.2f}): audit more questions"
        )
    return "; ".join(parts)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def report_lines(audits: dict[str, dict[str, Any]], source: str) -> list[str]:
    """audit.md: the numbers of each simulator side by side, and the verdicts."""
    names = list(audits)
    lines = [
        "# Simulator audit",
        "",
        f"Questions: {source}.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    rows = [
        ("useful answer rate (good query)", "useful_answer_rate", _pct),
        ("noisy answer rate (good query)", "noisy_answer_rate", _pct),
        ("useful answer rate (weak query)", "weak_useful_answer_rate", _pct),
        ("useful answer rate (unrelated query)", "unrelated_useful_answer_rate", _pct),
        (
            "**query-sensitivity gap** (good - unrelated)",
            "query_sensitivity_gap",
            lambda v: "n/a" if v is None else f"{v:+.2f}",
        ),
        ("its standard error", "query_sensitivity_gap_se", lambda v: "n/a" if v is None else f"{v:.2f}"),
        ("replies in the Doc i: layout", "format_doc_layout", _pct),
        ("replies with exactly topk documents", "format_topk_documents", _pct),
        ("words per document", "words_per_document", lambda v: "n/a" if v is None else f"{v:.1f}"),
        ("distinct documents across samples", "diversity", _pct),
        ("latency p50 / p95 (s)", None, None),
        ("requests (failed)", None, None),
    ]
    for title, key, fmt in rows:
        if key is None and title.startswith("latency"):
            cells = [
                f"{a['latency_p50_s'] or 0:.2f} / {a['latency_p95_s'] or 0:.2f}" for a in audits.values()
            ]
        elif key is None:
            cells = [f"{a['requests']} ({a['failed']})" for a in audits.values()]
        else:
            cells = [fmt(a[key]) for a in audits.values()]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- **{name}**: {verdict(a)}." for name, a in audits.items()]
    lines += ["", "![answer rates](answer_rates.png)", "![format](format.png)", ""]
    return lines


def answer_figure(audits: dict[str, dict[str, Any]]):
    """Answer rate per query and mode, one bar per simulator; a case not asked (no weak query) has no bar."""
    import matplotlib.pyplot as plt

    keys = [
        "useful_answer_rate",
        "weak_useful_answer_rate",
        "unrelated_useful_answer_rate",
        "noisy_answer_rate",
    ]
    width = 0.8 / len(audits)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for n, (name, audit) in enumerate(audits.items()):
        measured = [(p, 100 * audit[k]) for p, k in enumerate(keys) if audit[k] is not None]
        offsets = [p - 0.4 + width * (n + 0.5) for p, _ in measured]
        ax.bar_label(ax.bar(offsets, [v for _, v in measured], width, label=name), fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(keys)), [f"{kind} query\n{mode} mode" for kind, mode in CASES], fontsize=8)
    ax.set_ylabel("documents hold the answer (%)")
    ax.set_ylim(0, 110)
    ax.set_title("Answer rate by query and mode (useful: high for a good query; noisy: low)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def format_figure(audits: dict[str, dict[str, Any]]):
    """The share of replies holding 0..topk documents, one bar per simulator and count."""
    import matplotlib.pyplot as plt

    width = 0.8 / len(audits)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for n, (name, audit) in enumerate(audits.items()):
        histogram = audit["document_count_histogram"]
        total = max(1, sum(histogram.values()))
        counts = [int(k) for k in histogram]
        shares = [histogram[str(c)] / total for c in counts]
        ax.bar([c - 0.4 + width * (n + 0.5) for c in counts], shares, width, label=name)
    ax.set_xlabel("documents in a reply")
    ax.set_ylabel("share of replies")
    ax.set_title("Documents per reply")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw(audits: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """answer_rates.png and format.png in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, figure in (("answer_rates", answer_figure(audits)), ("format", format_figure(audits))):
        paths.append(out / f"{name}.png")
        figure.savefig(paths[-1])
        plt.close(figure)
    return paths


def audit(
    urls: dict[str, str],
    data: str,
    out: str | Path,
    questions: int = 100,
    samples: int = 2,
    template: str = "reference",
    mode: str = "sft",
    topk: int = 5,
    seed: int = 0,
    max_tokens: int = 600,
    temperature: float = 0.8,
) -> dict[str, dict[str, Any]]:
    """Audit each simulator in `urls` (name -> server) on the first `questions` rows of `data` (a dataset
    parquet with question and golden_answers), sampled as training samples it (template, max_tokens,
    temperature: the search config's values); returns name -> metrics and writes the files in `out`."""
    from zerosearch.data.schema import read_dataset

    if mode not in ("sft", "prompt"):
        raise ValueError(f"--mode must be sft or prompt, got {mode!r}")
    if questions < 2 or samples < 1:
        raise ValueError(f"--questions must be >= 2 and --samples >= 1; got {questions} and {samples}")
    rows = read_dataset(data)[:questions]
    items = probes(rows, samples)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    audits, replies = {}, []
    for name, url in urls.items():
        answered = ask(
            url, items, mode, topk, seed, template=template, max_tokens=max_tokens, temperature=temperature
        )
        replies += [{"simulator": name, **r} for r in answered]
        audits[name] = measure(answered, topk)
    (out / "replies.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in replies), encoding="utf-8"
    )
    (out / "audit.json").write_text(
        json.dumps(
            {
                "data": str(data),
                "questions": len(rows),
                "samples": samples,
                "template": template,
                "mode": mode,
                "simulators": {n: {"url": urls[n], **a} for n, a in audits.items()},
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    draw(audits, out)
    (out / "audit.md").write_text(
        "\n".join(report_lines(audits, f"{len(rows)} of {data}, {samples} sample(s) each")), encoding="utf-8"
    )
    return audits
