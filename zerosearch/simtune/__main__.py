"""python -m zerosearch.simtune collect|label|build|convert|audit (docs/simtune.md); the stages are described in
zerosearch/simtune/__init__.py and each module's docstring."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from zerosearch.eval import add_evaluation_arguments


def _collect(args: argparse.Namespace) -> None:
    from zerosearch.eval import evaluate_args

    evaluate_args(args, samples=args.samples, temperature=args.temperature, seed=args.seed)
    print(
        f"trajectories and their searches: {args.out}/trajectories.jsonl (next: simtune label)",
        file=sys.stderr,
    )


def _label(args: argparse.Namespace) -> None:
    from zerosearch.simtune.label import interactions, label, read_jsonl, summary_lines, write_jsonl

    items = interactions(read_jsonl(args.trajectories))
    if not items:
        raise ValueError(f"{args.trajectories}: no executed search with documents to label")
    labelled = label(items, args.by, args.judge_url, args.judge_model)
    write_jsonl(labelled, args.out)
    print("\n".join(summary_lines(labelled, args.by)))
    print(f"labelled searches: {args.out} (next: simtune build)", file=sys.stderr)


def _build(args: argparse.Namespace) -> None:
    from zerosearch.simtune.build import build_rows, write_build
    from zerosearch.simtune.label import read_jsonl

    rows, stats = build_rows(
        read_jsonl(args.labelled),
        template=args.template,
        mode=args.mode,
        answer_mode=args.answer_mode,
        topk=args.topk,
        val_fraction=args.val_fraction,
        max_same_response=args.max_same_response,
        seed=args.seed,
    )
    paths = write_build(rows, stats, args.out)
    for split, counts in stats.per_split.items():
        print(
            f"{split}: {counts['kept']} rows ({counts['kept'] // 2} useful + {counts['kept'] // 2} noisy) "
            f"of {counts['useful']} useful / {counts['noisy']} noisy"
        )
    print(
        f"dropped: {stats.duplicates} duplicates, {stats.repeated_response} repeated responses, "
        f"{stats.without_label} without a label"
    )
    print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)


def _convert(args: argparse.Namespace) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zerosearch.simtune.build import convert_rows
    from zerosearch.simtune.label import read_jsonl

    if args.input.endswith(".parquet"):
        records = pq.read_table(args.input).to_pylist()
    else:
        records = read_jsonl(args.input)
    rows = convert_rows(records, args.prompt_key, args.response_key, args.input)
    pq.write_table(pa.Table.from_pylist(rows), args.out, compression="zstd")
    print(f"{len(rows)} rows -> {args.out}")


def _audit(args: argparse.Namespace) -> None:
    from zerosearch.simtune.audit import audit, verdict

    urls = {args.name: args.url}
    if args.compare_url:
        if args.compare_name == args.name:
            raise ValueError("--compare-name must differ from --name")
        urls[args.compare_name] = args.compare_url
    audits = audit(
        urls,
        args.data,
        args.out,
        args.questions,
        args.samples,
        args.template,
        args.mode,
        args.topk,
        args.seed,
        args.max_tokens,
        args.temperature,
    )
    for name, metrics in audits.items():
        gap = metrics["query_sensitivity_gap"]
        print(
            f"{name}: useful {metrics['useful_answer_rate']:.1%}, noisy {metrics['noisy_answer_rate']:.1%}, "
            f"query-sensitivity gap {gap:+.2f} ({verdict(metrics)})"
            if gap is not None
            else f"{name}: {verdict(metrics)}"
        )
    print(f"report: {args.out}/audit.md", file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m zerosearch.simtune", description=__doc__.split(";")[0])
    stages = top.add_subparsers(dest="stage", required=True)

    p = stages.add_parser(
        "collect", help="a policy answers training questions with a real engine; searches recorded"
    )
    add_evaluation_arguments(p)
    p.add_argument("--samples", type=int, default=1, help="trajectories per question (default 1)")
    p.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (default 1; 0 = greedy)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_collect)

    p = stages.add_parser("label", help="label each search useful or noisy; print the labellers' agreement")
    p.add_argument("--trajectories", required=True, help="collect's trajectories.jsonl")
    p.add_argument("--out", required=True, help="labelled searches (jsonl)")
    p.add_argument(
        "--by", default="containment", help="containment | outcome | judge | agree (default containment)"
    )
    p.add_argument("--judge-url", help="an OpenAI-compatible chat server to ask (adds the judge's labels)")
    p.add_argument("--judge-model", help="the judge's served model name")
    p.set_defaults(run=_label)

    p = stages.add_parser(
        "build", help="balanced SFT rows in the prompt the trainer sends, split by question"
    )
    p.add_argument("--labelled", required=True, help="label's output")
    p.add_argument("--out", required=True, help="folder for train.parquet, val.parquet, build_stats.json")
    p.add_argument("--template", default="reference", help="simulation prompt set (default reference)")
    p.add_argument("--mode", default="sft", choices=("sft", "prompt"), help="prompt layout (default sft)")
    p.add_argument(
        "--answer-mode", default="first", choices=("first", "all"), help="golden answers in the prompt"
    )
    p.add_argument("--topk", type=int, default=5, help="documents per response (default 5)")
    p.add_argument(
        "--val-fraction", type=float, default=0.05, help="share of questions held out (default 0.05)"
    )
    p.add_argument(
        "--max-same-response", type=int, default=3, help="rows one result list may serve (default 3)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_build)

    p = stages.add_parser("convert", help="rows of another layout (prompt and response columns) as SFT rows")
    p.add_argument("input", help="a parquet or jsonl file")
    p.add_argument("--prompt-key", required=True, help="column with the prompt (a string or chat messages)")
    p.add_argument("--response-key", required=True, help="column with the documents text")
    p.add_argument("--out", required=True, help="output parquet")
    p.set_defaults(run=_convert)

    p = stages.add_parser("audit", help="measure a served simulator: answer rates, query sensitivity, format")
    p.add_argument("--url", required=True, help="the simulator's OpenAI-compatible server")
    p.add_argument("--name", default="simulator", help="its name in the report")
    p.add_argument("--compare-url", help="a second simulator to measure beside it")
    p.add_argument("--compare-name", default="compared", help="the second one's name")
    p.add_argument(
        "--data",
        required=True,
        help="questions with golden answers (dataset parquet; optional query, weak_query)",
    )
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--questions", type=int, default=100, help="questions measured (default 100)")
    p.add_argument("--samples", type=int, default=2, help="replies per request, for diversity (default 2)")
    p.add_argument("--template", default="reference", help="simulation prompt set the simulator was tuned on")
    p.add_argument(
        "--mode", default="sft", choices=("sft", "prompt"), help="fine-tuned or prompt-based (default sft)"
    )
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=600, help="the simulator's reply budget (default 600)")
    p.add_argument("--temperature", type=float, default=0.8, help="its sampling temperature (default 0.8)")
    p.set_defaults(run=_audit)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
