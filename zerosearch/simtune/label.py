"""Label each search of a collected trajectory useful or noisy, three ways, and measure how they agree.

- `containment`: the documents hold a golden answer (whole words, normalized): useful. The paper's criterion,
  and the cheapest.
- `outcome`: the trajectory the search belonged to ended with a correct answer (cover-EM, the paper's EM):
  useful. Credits every search of a successful trajectory, including ones that did not help.
- `judge`: an LLM behind an OpenAI-compatible chat endpoint is asked whether the documents contain what is
  needed to answer the question (the paper used an LLM judge); its yes/no is the label (None if it said
  neither).

Input: the `trajectories.jsonl` that `collect` writes (records with `search_calls`). Output: one interaction
per executed search that returned documents: the row, the query, the documents, each labeller's verdict and
`label`, the one chosen (`--by`; `agree`: only interactions on which every labeller agrees).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

LABELLERS = ("containment", "outcome", "judge")
JUDGE_PROMPT = """You check search results for a question answering system.

Question: {question}
Correct answer: {answer}

Search results:
{documents}

Do these search results contain the information needed to answer the question correctly? Reply with one word: yes or no."""
_VERDICT = re.compile(r"\b(yes|no)\b", re.I)


def interactions(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every executed search with documents, from collected trajectory records, in order. A record's `meta`
    (a collector's own notes, e.g. the toy world's query kind) goes with each of its interactions."""
    out = []
    for record in records:
        for turn, call in enumerate(record.get("search_calls") or [], 1):
            if call.get("error") or not call.get("documents"):
                continue
            out.append(
                {
                    "data_source": record["data_source"],
                    "index": record["index"],
                    "sample": record.get("sample", 0),
                    "search": turn,
                    "question": record["question"],
                    "golden_answers": list(record["golden_answers"]),
                    "query": call["query"],
                    "documents": list(call["documents"]),
                    "trajectory_correct": bool(record.get("cover_em", 0.0) >= 1.0),
                    **({"meta": record["meta"]} if "meta" in record else {}),
                }
            )
    return out


def judge_prompt(interaction: dict[str, Any]) -> str:
    from llm_agent.observation import format_documents

    return JUDGE_PROMPT.format(
        question=interaction["question"],
        answer=" / ".join(interaction["golden_answers"]),
        documents=format_documents(interaction["documents"]),
    )


def parse_verdict(text: str) -> bool | None:
    """The judge's first yes/no word (True = useful); None when it wrote neither."""
    match = _VERDICT.search(text or "")
    return None if match is None else match.group(1).lower() == "yes"


def judge_all(items: Sequence[dict[str, Any]], url: str, model: str | None = None) -> list[bool | None]:
    """Ask the judge at `url` about every interaction (concurrently, with retries); greedy, 4 new tokens."""
    from zerosearch.search.client import HttpOptions, LoopThread, RequestCore, post_all

    base = url.rstrip("/").removesuffix("/v1")
    core, runner = RequestCore(HttpOptions(timeout_s=300.0)), LoopThread("simtune-judge")
    bodies = [
        {
            "model": model or "",
            "messages": [{"role": "user", "content": judge_prompt(item)}],
            "max_tokens": 4,
            "temperature": 0.0,
        }
        for item in items
    ]
    try:
        outcomes = runner.run(post_all(core, f"{base}/v1/chat/completions", bodies))
    finally:
        core.close()
        runner.stop()
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        raise RuntimeError(
            f"--judge-url {base}: {len(failed)} of {len(bodies)} judgements failed; last error: {failed[-1].error}"
        )
    return [parse_verdict(((o.value or {}).get("message") or {}).get("content", "")) for o in outcomes]


def label(
    items: list[dict[str, Any]],
    by: str = "containment",
    judge_url: str | None = None,
    judge_model: str | None = None,
) -> list[dict[str, Any]]:
    """Each interaction with `labels` (every labeller's verdict: True useful, False noisy) and `label` ("useful",
    "noisy", or None when the chosen labeller gave none / the labellers disagree under `agree`)."""
    from zerosearch.reward import contains_answer

    if by not in (*LABELLERS, "agree"):
        raise ValueError(f"--by must be one of {', '.join(LABELLERS)}, agree; got {by!r}")
    if by == "judge" and not judge_url:
        raise ValueError("--by judge needs --judge-url (an OpenAI-compatible chat endpoint)")
    verdicts = judge_all(items, judge_url, judge_model) if judge_url else [None] * len(items)
    out = []
    for item, verdict in zip(items, verdicts, strict=True):
        labels = {
            "containment": contains_answer(" ".join(item["documents"]), item["golden_answers"]),
            "outcome": item["trajectory_correct"],
        }
        if judge_url:
            labels["judge"] = verdict
        if by == "agree":
            values = set(labels.values())
            chosen = next(iter(values)) if len(values) == 1 and None not in values else None
        else:
            chosen = labels[by]
        out.append(
            {**item, "labels": labels, "label": None if chosen is None else ("useful" if chosen else "noisy")}
        )
    return out


def agreement(labelled: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each pair of labellers: on how many interactions both gave a verdict, the share where they agree, and
    Cohen's kappa (agreement beyond what their useful rates give by chance)."""
    names = [n for n in LABELLERS if labelled and n in labelled[0]["labels"]]
    rows = []
    for a, b in itertools.combinations(names, 2):
        pairs = [(x["labels"][a], x["labels"][b]) for x in labelled]
        pairs = [(u, v) for u, v in pairs if u is not None and v is not None]
        n = len(pairs)
        if not n:
            rows.append({"pair": f"{a} / {b}", "both": 0, "agree": None, "kappa": None})
            continue
        observed = sum(u == v for u, v in pairs) / n
        pa, pb = sum(u for u, _ in pairs) / n, sum(v for _, v in pairs) / n
        chance = pa * pb + (1 - pa) * (1 - pb)
        kappa = (observed - chance) / (1 - chance) if chance < 1 else None
        rows.append({"pair": f"{a} / {b}", "both": n, "agree": observed, "kappa": kappa})
    return rows


def summary_lines(labelled: Sequence[dict[str, Any]], by: str) -> list[str]:
    """What `label` prints: the useful rate per labeller and the agreement table."""
    lines = [f"{len(labelled)} searches labelled; label = {by}"]
    for name in LABELLERS:
        values = [x["labels"][name] for x in labelled if name in x["labels"]]
        given = [v for v in values if v is not None]
        if values:
            rate = f"{sum(given) / len(given):.1%}" if given else "n/a"
            lines.append(
                f"  {name:<12} useful {rate} of {len(given)}"
                + (f" ({len(values) - len(given)} unclear)" if len(given) < len(values) else "")
            )
    kept = [x for x in labelled if x["label"] is not None]
    lines.append(
        f"  chosen label: {sum(x['label'] == 'useful' for x in kept)} useful, {sum(x['label'] == 'noisy' for x in kept)} noisy, {len(labelled) - len(kept)} without"
    )
    for row in agreement(labelled):
        if row["agree"] is None:
            lines.append(f"  agreement {row['pair']}: no interaction with both verdicts")
        else:
            kappa = "n/a" if row["kappa"] is None else f"{row['kappa']:.2f}"
            lines.append(
                f"  agreement {row['pair']}: {row['agree']:.1%} of {row['both']} (Cohen's kappa {kappa})"
            )
    return lines


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a jsonl file; an error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {number} is not JSON ({e})") from None
    return out


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path
