"""Evaluate one policy on test files with a search engine, and write the paper's table (docs/eval.md).

    python -m zerosearch.eval --model PATH_OR_HUB_ID --data FILE [FILE ...] --out DIR
        [--engine local --corpus FILE | --engine wiki --url URL | --engine google --max-requests N
         | --engine simulate --url URL] [--max-turns 5] [--topk 5] [--batch-size 32] [--compare NAME]

Greedy decoding through the training's own agent loop, parsing and scoring (ZeroSearchAgentLoop in validation
mode: a simulator answers at noise 0). Every row is evaluated, the last partial batch included. Each row's
result is appended to `DIR/trajectories.jsonl` as its batch finishes, so rerunning the same command after a
kill continues with the rows not yet done (no row twice, none lost). At the end: `DIR/results.json`,
`DIR/results.md` (per data source: strict EM, cover-EM (what the paper's tables call EM), F1, answered rate,
mean turns and searches, mean answer length in words; the average over datasets, as the paper's Avg, and the
pooled figure over all rows, both labelled; the paper's figure beside ours with `--compare`) and two figures:
`em_vs_paper.png` (cover-EM per dataset, with the paper's bars when compared) and `searches.png` (how many
searches the trajectories of each dataset made).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from verl.trainer.validation import TRAJECTORIES
from zerosearch.data.prepare import TEST_DATASETS
from zerosearch.policy import ROLLOUTS, PolicyEndpointError

METRICS = ("em", "cover_em", "f1", "has_answer")
ENGINES = ("local", "wiki", "google", "simulate")


def paper_results() -> dict[str, dict[str, Any]]:
    """The paper's rows that `--compare` accepts, with their source (zerosearch/data/paper_results.json)."""
    return json.loads((resources.files("zerosearch.data") / "paper_results.json").read_text(encoding="utf-8"))


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --policy-url, --policy-model, --rollout, --device (shared with zerosearch.infer)."""
    parser.add_argument(
        "--model",
        required=True,
        help="the policy: a folder or a hub id (with --policy-url: the served model's tokenizer)",
    )
    parser.add_argument(
        "--policy-url", help="a policy served behind an OpenAI-compatible API (vllm serve, SGLang, ...)"
    )
    parser.add_argument(
        "--policy-model", help="--policy-url: the served model's name (default: the one listed)"
    )
    parser.add_argument(
        "--rollout",
        default="auto",
        choices=ROLLOUTS,
        help="local generation: hf, vllm, or auto (the default)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--engine and its options (shared with zerosearch.infer)."""
    parser.add_argument(
        "--engine", default="local", choices=ENGINES, help="the search engine (default local)"
    )
    parser.add_argument("--corpus", help="--engine local: jsonl corpus")
    parser.add_argument(
        "--index", default="bm25", choices=("bm25", "dense"), help="--engine local: index kind"
    )
    parser.add_argument("--url", help="--engine wiki: retriever server; --engine simulate: simulation server")
    parser.add_argument("--max-requests", type=int, help="--engine google: the request budget (required)")
    parser.add_argument(
        "--cost-per-1k", type=float, help="--engine google: your plan's price per 1000 searches"
    )
    parser.add_argument(
        "--search-concurrency",
        type=int,
        help="HTTP engines: search requests in flight at once (default the backend's, 64)",
    )


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent loop's limits, named as training's keys (shared with zerosearch.infer)."""
    parser.add_argument("--max-turns", type=int, default=5, help="search rounds (default 5)")
    parser.add_argument("--topk", type=int, default=5, help="documents per search (default 5)")
    parser.add_argument(
        "--max-tokens-per-turn", type=int, default=500, help="new tokens per turn (default 500)"
    )
    parser.add_argument(
        "--max-obs-length", type=int, default=2048, help="tokens per observation (default 2048)"
    )
    parser.add_argument(
        "--max-response-length",
        type=int,
        default=4096,
        help="tokens per trajectory, all turns (default 4096)",
    )


def agent_limits(args: argparse.Namespace) -> dict[str, int]:
    """The agent-loop keyword arguments of `add_agent_arguments`' flags."""
    keys = ("max_turns", "topk", "max_tokens_per_turn", "max_obs_length", "max_response_length")
    return {key: getattr(args, key) for key in keys}


def search_options(args: argparse.Namespace) -> dict:
    """The search backend's options for `--engine`; an error names the missing flag."""
    engine, url = args.engine, args.url
    http = {} if args.search_concurrency is None else {"concurrency": args.search_concurrency}
    if engine == "local":
        if not args.corpus:
            raise ValueError("--engine local needs --corpus FILE (a jsonl of {id, contents} documents)")
        return {"name": "local", "corpus": args.corpus, "index": args.index}
    if engine in ("wiki", "simulate") and not url:
        raise ValueError(
            f"--engine {engine} needs --url (the {'retriever' if engine == 'wiki' else 'simulation'} server)"
        )
    if engine == "wiki":
        return {"name": "wiki", "url": url, **http}
    if engine == "simulate":
        return {"name": "simulate_sft", "urls": [url], **http}
    if engine == "google":
        return {
            "name": "google",
            "max_requests": args.max_requests,
            "cost_per_1k_requests": args.cost_per_1k,
            **http,
        }
    raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")


def evaluation_agent(tokenizer, search: dict, max_prompt_length: int = 4096, **limits: int | bool):
    """Training's agent loop with the noise at 0 throughout: what evaluation and inference run."""
    from zerosearch.agent import ZeroSearchAgentLoop

    return ZeroSearchAgentLoop(
        tokenizer,
        total_training_steps=1,
        max_prompt_length=max_prompt_length,
        search=search,
        curriculum={"start": 0.0, "end": 0.0, "kind": "constant"},
        **limits,
    )


def read_records(path: Path) -> dict[tuple[str, int, int], dict]:
    """The rows already evaluated, by (data_source, index, sample); a last line cut by a kill is dropped."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    records = {}
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}: line {number} is not JSON") from None
        records[(record["data_source"], record["index"], record.get("sample", 0))] = record
    return records


def with_answer_fields(record: dict) -> dict:
    """A validation record (verl.trainer.validation: the row, the response, the reward's scores, the agent's
    counters) with what the table and a reader need: the queries the policy wrote, each document block the
    engine returned, the answer it scored and its length in words."""
    from zerosearch.reward import extract_answer

    policy, response = record["policy_response"], record["response"]
    answer = extract_answer(record["reward_text"])
    return {
        **record,
        "queries": [q.strip() for q in re.findall(r"<search>(.*?)</search>", policy, re.S)],
        "documents": [d.strip() for d in re.findall(r"<information>(.*?)</information>", response, re.S)],
        "answer": answer,
        "answer_words": len(answer.split()) if answer else 0,
    }


def aggregate(records: list[dict]) -> dict[str, Any]:
    """Per data source, then the average over sources (each counts once) and the pooled figure (each row)."""
    by_source: dict[str, list[dict]] = {}
    for record in records:
        by_source.setdefault(record["data_source"], []).append(record)
    order = [s for s in TEST_DATASETS if s in by_source] + sorted(set(by_source) - set(TEST_DATASETS))

    def summary(rows: list[dict]) -> dict[str, float]:
        answered = [r for r in rows if r["answer"] is not None]
        out = {metric: sum(r[metric] for r in rows) / len(rows) for metric in METRICS}
        out["turns"] = sum(r["turns"] for r in rows) / len(rows)
        out["searches"] = sum(r["searches"] for r in rows) / len(rows)
        out["answer_words"] = sum(r["answer_words"] for r in answered) / len(answered) if answered else 0.0
        return {"rows": len(rows), **out}

    sources = {source: summary(by_source[source]) for source in order}
    keys = [k for k in next(iter(sources.values())) if k != "rows"] if sources else []
    average = {k: sum(s[k] for s in sources.values()) / len(sources) for k in keys} if sources else {}
    return {
        "sources": sources,
        "avg_over_datasets": {"datasets": len(sources), **average},
        "pooled": summary(records) if records else {},
    }


def results_table(results: dict, compare: dict | None) -> list[str]:
    """The markdown table: percentages, as the paper prints them."""
    head = "| dataset | rows | EM (strict) | cover-EM (the paper's EM) | F1 | answered | turns | searches | answer words |"
    rule = "|---|---|---|---|---|---|---|---|---|"
    if compare:
        head, rule = head + " paper (cover-EM) |", rule + "---|"

    def line(name: str, values: dict, rows: str, paper_key: str | None) -> str:
        cells = [name, rows] + [f"{100 * values[m]:.2f}" for m in ("em", "cover_em", "f1", "has_answer")]
        cells += [f"{values['turns']:.2f}", f"{values['searches']:.2f}", f"{values['answer_words']:.1f}"]
        if compare:
            paper = compare["values"].get(paper_key) if paper_key else None
            cells.append("" if paper is None else f"{paper:.2f}")
        return "| " + " | ".join(cells) + " |"

    rows = [head, rule]
    for source, values in results["sources"].items():
        rows.append(line(source, values, str(values["rows"]), source))
    average = results["avg_over_datasets"]
    rows.append(line("**Avg (over datasets)**", average, f"{average['datasets']} datasets", "avg"))
    rows.append(line("all rows (pooled)", results["pooled"], str(results["pooled"]["rows"]), None))
    return rows


def em_figure(results: dict, compare: dict | None):
    """Cover-EM per dataset (the paper's EM), with the paper's bar beside each when compared."""
    import matplotlib.pyplot as plt

    sources = list(results["sources"])
    positions = list(range(len(sources)))
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    width = 0.4 if compare else 0.8
    ours = [100 * results["sources"][s]["cover_em"] for s in sources]
    bars = ax.bar([p - width / 2 if compare else p for p in positions], ours, width, label="this evaluation")
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    if compare:
        known = [
            (p, compare["values"][s])
            for p, s in zip(positions, sources, strict=True)
            if s in compare["values"]
        ]
        bars = ax.bar([p + width / 2 for p, _ in known], [v for _, v in known], width, label=compare["title"])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.legend(fontsize=8)
    ax.set_xlim(-0.5 - 0.5 * (len(sources) < 3), len(sources) - 0.5 + 0.5 * (len(sources) < 3))
    ax.margins(y=0.12)
    ax.set_xticks(positions, sources, rotation=20, fontsize=8)
    ax.set_ylabel("cover-EM (%)")
    ax.set_title("Cover-EM per dataset (the paper's EM)")
    fig.tight_layout()
    return fig


def searches_figure(records: list[dict], results: dict):
    """For each dataset, the share of its trajectories that made 0, 1, 2, ... searches (stacked bars)."""
    import matplotlib.pyplot as plt

    sources = list(results["sources"])
    positions = list(range(len(sources)))
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    bottom = [0.0] * len(sources)
    for k in range(max((r["searches"] for r in records), default=0) + 1):
        shares = []
        for source in sources:
            rows = [r for r in records if r["data_source"] == source]
            shares.append(sum(r["searches"] == k for r in rows) / len(rows))
        ax.bar(positions, shares, 0.8, bottom=bottom, label=f"{k} search{'' if k == 1 else 'es'}")
        bottom = [b + s for b, s in zip(bottom, shares, strict=True)]
    ax.set_xticks(positions, sources, rotation=20, fontsize=8)
    ax.set_ylabel("share of trajectories")
    ax.set_title("Searches per trajectory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_figures(records: list[dict], results: dict, compare: dict | None, out: Path) -> list[Path]:
    """em_vs_paper.png and searches.png in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, fig in (
        ("em_vs_paper", em_figure(results, compare)),
        ("searches", searches_figure(records, results)),
    ):
        paths.append(out / f"{name}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def evaluate(
    model: str,
    data: Sequence[str],
    out: str | Path,
    search: dict,
    max_turns: int = 5,
    topk: int = 5,
    batch_size: int = 32,
    compare: str | None = None,
    device: str = "auto",
    max_prompt_length: int = 4096,
    max_tokens_per_turn: int = 500,
    max_obs_length: int = 2048,
    max_response_length: int = 4096,
    use_chat_template: bool | None = None,
    policy_url: str | None = None,
    policy_model: str | None = None,
    rollout: str = "auto",
    template: str | None = None,
    samples: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
    overlap_search: bool = False,
) -> dict[str, Any]:
    """Evaluate every row of `data` not yet in `out` (see the module doc); returns the results. `model` is
    the policy (with `policy_url`, the tokenizer of the policy served there); see `load_policy`. `template`:
    a policy template (name or file) to ask each row's question with, instead of the file's prompt.
    `samples` trajectories per row (record field `sample`), at `temperature` (0: greedy) from `seed`: what
    `zerosearch.simtune collect` gathers. `overlap_search`: each trajectory searches and generates at its own
    pace (docs/agent.md), which hides a slow engine's latency behind generation."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from verl.trainer.ray_trainer import batch_from_items
    from verl.trainer.validation import generation_records
    from verl.utils.dataset import RLHFDataset, encode_prompt, validation_loader
    from verl.utils.hub import resolve_model
    from verl.workers.reward import RewardConfig, RewardManager
    from verl.workers.rollout import RolloutSamplingParams
    from zerosearch.data.schema import row_problem
    from zerosearch.policy import load_policy
    from zerosearch.templates import policy_messages

    if compare is not None and compare not in paper_results():
        raise ValueError(f"--compare {compare!r}: known rows are {', '.join(sorted(paper_results()))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model, "--model"))
    reward = RewardManager.from_config(tokenizer, RewardConfig())  # training's scoring
    dataset = RLHFDataset(
        list(data), tokenizer, max_prompt_length, use_chat_template=use_chat_template, row_check=row_problem
    )
    if template is not None:  # the question asked in the words the checkpoint was trained with
        use_chat = dataset.use_chat_template
        dataset = [
            replace(
                item,
                prompt_token_ids=encode_prompt(tokenizer, policy_messages(item.question, template), use_chat),
            )
            for item in dataset
        ]
    keys = [(item.data_source, item.index) for item in dataset]
    if len(set(keys)) != len(keys):
        raise ValueError(
            "--data: (data_source, extra_info.index) repeats across rows; each row needs its own"
        )
    if samples < 1 or (samples > 1 and temperature == 0):
        raise ValueError(
            f"samples must be >= 1 and need a temperature > 0 when > 1; got {samples} at {temperature}"
        )
    done = read_records(out / TRAJECTORIES)
    todo = [
        (item, sample)
        for item, key in zip(dataset, keys, strict=True)
        for sample in range(samples)
        if (*key, sample) not in done
    ]
    agent = evaluation_agent(
        tokenizer,
        search,
        max_prompt_length,
        max_turns=max_turns,
        max_response_length=max_response_length,
        max_obs_length=max_obs_length,
        max_tokens_per_turn=max_tokens_per_turn,
        topk=topk,
        overlap_search=overlap_search,
    )
    policy = None
    try:
        if todo:
            agent.plan_validation(len(todo), 1)  # a paid engine: its budget and estimate, before any request
            policy = load_policy(model, policy_url, policy_model, rollout, device)
            engine = policy.engine
            total = len(dataset) * samples
            progress = tqdm(total=total, initial=total - len(todo), desc="evaluate", unit="row")
            with (out / TRAJECTORIES).open("a", encoding="utf-8") as sink:
                for start in range(0, len(todo), batch_size):
                    part = todo[start : start + batch_size]
                    items = [item for item, _ in part]
                    batch = batch_from_items(next(iter(validation_loader(items, len(items)))))
                    params = RolloutSamplingParams(temperature=temperature, seed=seed * 1_000_003 + start)
                    gen, _ = agent.rollout(batch, engine, params, 0, validate=True)
                    records = generation_records(batch.union(gen), tokenizer, reward)
                    for (_, sample), record in zip(part, records, strict=True):
                        record = with_answer_fields({**record, "sample": sample})
                        sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                    sink.flush()
                    progress.update(len(part))
            progress.close()
    finally:
        agent.close()
        if policy is not None:
            policy.close()
    wanted = set(keys)
    records = [
        r for key, r in read_records(out / TRAJECTORIES).items() if key[:2] in wanted and key[2] < samples
    ]
    name = model if not policy_url else f"{model} served at {policy_url}"
    decoding = (
        "greedy" if temperature == 0 else f"{samples} sample(s) per question at temperature {temperature:g}"
    )
    summary = (
        f"{len(records)} rows of {', '.join(map(str, data))}; engine {search['name']}; {decoding}; "
        f"up to {max_turns} searches."
    )
    results = write_results(records, out, f"Evaluation of {name}", summary, compare)
    print("\n".join(results_table(results, results["compare"])))
    return results


def write_results(
    records: list[dict], out: Path, title: str, summary: str, compare: str | None = None
) -> dict[str, Any]:
    """results.json, results.md and the figures in `out` for evaluated records (those of `with_answer_fields`);
    returns the results."""
    results = aggregate(records)
    results["compare"] = paper_results()[compare] if compare else None
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    page = [f"# {title}", "", summary, "", *results_table(results, results["compare"]), ""]
    if compare:
        page += [f"Paper: {results['compare']['source']}. {results['compare']['metric']}.", ""]
    figures = draw_figures(records, results, results["compare"], out)
    page += [f"![{p.stem}]({p.name})" for p in figures] + [""]
    (out / "results.md").write_text("\n".join(page), encoding="utf-8")
    return results


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of an evaluation run: the policy, --data, --out, the engine, the agent limits, --batch-size,
    --template (shared with zerosearch.simtune collect)."""
    add_policy_arguments(parser)
    parser.add_argument(
        "--data", required=True, nargs="+", help="dataset parquet file(s) (zerosearch.data.prepare)"
    )
    parser.add_argument("--out", required=True, help="results folder (rerun the same command to resume)")
    add_engine_arguments(parser)
    add_agent_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=32, help="rows per generation batch (default 32)")
    parser.add_argument(
        "--template", help="ask each question with this policy template (name or file), not the file's prompt"
    )
    parser.add_argument(
        "--overlap-search",
        action="store_true",
        help="each trajectory searches as soon as its turn ends and generates again as soon as its search "
        "returns, while the others go on (hides a slow engine's latency; docs/agent.md)",
    )


def evaluate_args(args: argparse.Namespace, **options: Any) -> dict[str, Any]:
    """`evaluate` with the flags of `add_evaluation_arguments`, plus `options` (compare, samples, ...)."""
    return evaluate(
        args.model,
        args.data,
        args.out,
        search_options(args),
        batch_size=args.batch_size,
        device=args.device,
        policy_url=args.policy_url,
        policy_model=args.policy_model,
        rollout=args.rollout,
        template=args.template,
        overlap_search=args.overlap_search,
        **agent_limits(args),
        **options,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.eval", description=__doc__.split("\n")[0])
    add_evaluation_arguments(parser)
    parser.add_argument(
        "--compare", help=f"a paper row to print beside ours: {', '.join(sorted(paper_results()))}"
    )
    args = parser.parse_args(argv)
    try:
        evaluate_args(args, compare=args.compare)
    except (ValueError, FileNotFoundError, ImportError, PolicyEndpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
