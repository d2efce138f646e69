"""Command line: `python -m toyworld build --out DIR`, `... stats --out DIR` and
`... fidelity --world DIR --simulator MODEL` (toyworld/fidelity.py),
`... reading --world DIR --model MODEL` (toyworld/reading.py) and
`... rebuild-base [--check]` (the shipped base model, toyworld/base.py).

Also installed as the `zerosearch-toyworld` console script.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from toyworld.base import add_arguments as add_base_arguments
from toyworld.base import run as rebuild_base
from toyworld.build import BuildConfig, build
from toyworld.world import WorldConfig


def _parser() -> argparse.ArgumentParser:
    defaults, world = BuildConfig(), WorldConfig()
    parser = argparse.ArgumentParser(prog="zerosearch-toyworld", description="Build or inspect a toy world.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a toy world folder (same seed and options: identical files)")
    b.add_argument("--out", required=True, type=Path, help="output folder (e.g. artifacts/toyworld)")
    b.add_argument("--seed", type=int, default=defaults.seed)
    b.add_argument("--num-people", type=int, default=world.num_people)
    b.add_argument("--num-countries", type=int, default=world.num_countries)
    b.add_argument("--num-cities", type=int, default=world.num_cities)
    b.add_argument("--num-companies", type=int, default=world.num_companies)
    b.add_argument("--num-universities", type=int, default=world.num_universities)
    b.add_argument(
        "--heldout-fraction",
        type=float,
        default=world.heldout_fraction,
        help="share of people kept out of all training data (split evenly into val and test people)",
    )
    b.add_argument("--val-size", type=int, default=defaults.val_size)
    b.add_argument("--test-size", type=int, default=defaults.test_size)
    b.add_argument("--train-entity-eval-size", type=int, default=defaults.train_entity_eval_size)
    b.add_argument(
        "--simtune-questions",
        type=int,
        default=defaults.simtune_questions,
        help="training questions to write simulation-tuning queries for",
    )
    b.add_argument("--queries-per-question", type=int, default=defaults.queries_per_question)
    b.add_argument(
        "--simtune-miss-share",
        type=float,
        default=defaults.simtune_miss_share,
        help="share of the real engine's answer-less results used as useful-mode simulation-tuning targets "
        "(0: useful targets always hold the answer, the paper's labelling; docs/toyworld.md)",
    )
    b.add_argument(
        "--simtune-labelling",
        default=defaults.simtune_labelling,
        choices=("paper", "engine"),
        help="paper: useful targets hold the answer; engine: every query's real results are its useful target "
        "(docs/toyworld.md)",
    )
    b.add_argument("--topk", type=int, default=defaults.topk)
    b.add_argument("--pretrain-copy", type=int, default=defaults.pretrain_copy)
    b.add_argument("--pretrain-reading", type=int, default=defaults.pretrain_reading)
    b.add_argument("--vocab-size", type=int, default=defaults.vocab_size)
    b.add_argument(
        "--whole-word-names",
        action="store_true",
        help="make each word of the names training may see one token (docs/toyworld.md; off by default)",
    )
    b.add_argument(
        "--policy-template",
        default=defaults.policy_template,
        help="template name or file for the dataset prompts",
    )
    b.add_argument("--no-model", action="store_true", help="skip the tokenizer and the untrained model")
    b.add_argument("--overwrite", action="store_true", help="replace a previous build in --out")
    f = sub.add_parser(
        "fidelity",
        help="per query kind, how often the real engine and the simulator (useful mode) return the answer",
    )
    f.add_argument("--world", required=True, type=Path, help="a built toy world folder")
    f.add_argument("--simulator", required=True, type=Path, help="the tuned simulator's model folder")
    f.add_argument("--questions", type=int, default=96, help="single-hop training questions per query kind")
    f.add_argument(
        "--temperature", type=float, default=0.8, help="simulator sampling temperature (0: greedy)"
    )
    f.add_argument("--seed", type=int, default=0, help="question sample and sampling seed")
    r = sub.add_parser(
        "reading",
        help="given the documents a full-name query finds, how often the model answers from them",
    )
    r.add_argument("--world", required=True, type=Path, help="a built toy world folder")
    r.add_argument("--model", required=True, type=Path, help="a policy (or base) model folder")
    r.add_argument("--split", default="heldout", help="heldout (test questions, default) or train")
    r.add_argument(
        "--format", default="policy", help="policy (the agent's trajectory, default) or plain (reading lines)"
    )
    r.add_argument("--questions", type=int, default=200, help="single-hop questions to answer")
    r.add_argument("--seed", type=int, default=0, help="question order and query seed")
    rb = sub.add_parser(
        "rebuild-base",
        help="rebuild the shipped base model (toyworld/base_model/) from nothing, bit for bit (toyworld/base.py)",
    )
    add_base_arguments(rb)
    s = sub.add_parser("stats", help="print the counts of a built toy world")
    s.add_argument("--out", required=True, type=Path, help="a folder written by `build`")
    return parser


def _config(args: argparse.Namespace) -> BuildConfig:
    world = WorldConfig(
        num_people=args.num_people,
        num_countries=args.num_countries,
        num_cities=args.num_cities,
        num_companies=args.num_companies,
        num_universities=args.num_universities,
        heldout_fraction=args.heldout_fraction,
    )
    return BuildConfig(
        seed=args.seed,
        world=world,
        val_size=args.val_size,
        test_size=args.test_size,
        train_entity_eval_size=args.train_entity_eval_size,
        simtune_questions=args.simtune_questions,
        simtune_miss_share=args.simtune_miss_share,
        simtune_labelling=args.simtune_labelling,
        queries_per_question=args.queries_per_question,
        topk=args.topk,
        pretrain_copy=args.pretrain_copy,
        pretrain_reading=args.pretrain_reading,
        vocab_size=args.vocab_size,
        whole_word_names=args.whole_word_names,
        policy_template=args.policy_template,
        with_model=not args.no_model,
    )


def _stats(out: Path) -> int:
    path = out / "manifest.json"
    if not path.exists():
        print(
            f"error: {path} not found; build the world first (zerosearch-toyworld build --out {out})",
            file=sys.stderr,
        )
        return 2
    manifest = json.loads(path.read_text(encoding="utf-8"))
    print(
        json.dumps({"seed": manifest["seed"], **manifest["counts"], "simtune": manifest["simtune"]}, indent=1)
    )
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    from toyworld.fidelity import format_table, measure_fidelity

    try:
        rows = measure_fidelity(
            args.world, args.simulator, args.questions, temperature=args.temperature, seed=args.seed
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0


def _reading(args: argparse.Namespace) -> int:
    from toyworld.reading import format_result, measure_reading

    try:
        result = measure_reading(args.world, args.model, args.split, args.format, args.questions, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_result(result))
    return 0


def _name_flag(message: str) -> str:
    """Config checks name the field ("num_people must be ..."); on the command line, name the flag."""
    field = message.split(" ", 1)[0]
    if field.isidentifier() and "_" in field:
        return f"--{field.replace('_', '-')}{message[len(field) :]}"
    return message


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "stats":
        return _stats(args.out)
    if args.command == "fidelity":
        return _fidelity(args)
    if args.command == "reading":
        return _reading(args)
    if args.command == "rebuild-base":
        return rebuild_base(args.out, check=args.check, assets=args.assets)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        manifest = build(args.out, _config(args), overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"error: {_name_flag(str(e))}", file=sys.stderr)
        return 2
    print(f"built toy world in {args.out}: {len(manifest['files'])} files, seed {manifest['seed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
