"""Ask a policy a question and watch it think, search and answer (docs/eval.md, "Inference").

    python -m zerosearch.infer --model PATH_OR_HUB_ID [--question "..."] [--golden ANSWER ...]
        [--engine local --corpus FILE | --engine wiki --url URL | --engine simulate --url URL | ...]

With --question: that one trajectory, printed turn by turn as it happens, then the answer (and its scores
when --golden is given). Without it: a prompt that asks question after question; an empty line asks nothing,
Ctrl-D, `exit` or `quit` ends. The agent loop, engines, limits and policy sources are zerosearch.eval's
(training's own code): greedy unless --temperature is set; a simulator answers at noise 0 and, with --golden,
knows the answer as in training. Colour on a terminal, plain text when piped (--color).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from zerosearch.eval import (
    add_agent_arguments,
    add_engine_arguments,
    add_policy_arguments,
    agent_limits,
    search_options,
)
from zerosearch.policy import PolicyEndpointError

_THINK = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.S)
_CODES = {
    "turn": "1;35",
    "think": "2;3",
    "search": "1;33",
    "doc": "36",
    "answer": "1;32",
    "warn": "31",
    "dim": "2",
}


@dataclass
class Style:
    """ANSI colours for each kind of text, or none (piped output, NO_COLOR, --color never)."""

    colour: bool

    def __call__(self, kind: str, text: str) -> str:
        return f"\033[{_CODES[kind]}m{text}\033[0m" if self.colour and text else text

    @staticmethod
    def choose(mode: str, stream: TextIO) -> Style:
        if mode == "always":
            return Style(True)
        if mode == "never" or os.environ.get("NO_COLOR"):
            return Style(False)
        return Style(stream.isatty())


class TurnPrinter:
    """Prints a trajectory as it unfolds: each generation's thoughts and action, each search's documents."""

    def __init__(self, style: Style, out: TextIO, max_query_chars: int):
        self.style, self.out, self.max_query_chars = style, out, max_query_chars
        self.turn = 0

    def _line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def generation(self, text: str) -> None:
        from llm_agent.parsing import parse_action

        self.turn += 1
        s = self.style
        self._line(s("turn", f"── turn {self.turn} ──"))
        for thought in _THINK.findall(text):
            if thought.strip():
                self._line(s("think", "thinking: " + " ".join(thought.split())))
        action = parse_action(text, self.max_query_chars)
        if action.is_search:
            self._line(s("search", "search: ") + action.content)
        elif action.is_answer:
            self._line(s("answer", "answer: ") + s("answer", action.content))
        else:
            self._line(
                s("warn", f"no valid action ({action.reason})") + s("dim", f": {' '.join(text.split())}")
            )

    def documents(self, documents: Sequence[str]) -> None:
        for number, document in enumerate(documents, 1):
            self._line("  " + self.style("doc", f"Doc {number}: " + " ".join(document.split())))
        if not documents:
            self._line("  " + self.style("warn", "(no documents)"))


class WatchedEngine:
    """The policy's engine, printing each generation as it returns (one trajectory at a time)."""

    def __init__(self, engine, tokenizer, printer: TurnPrinter):
        self.engine, self.tokenizer, self.printer = engine, tokenizer, printer

    def generate(self, prompts, params):
        from verl.workers.reward import decode_tokens

        outputs = self.engine.generate(prompts, params)
        for group in outputs:
            self.printer.generation(decode_tokens(self.tokenizer, group[0].token_ids))
        return outputs


class WatchedSearch:
    """The engine's search, printing the documents each query brought back."""

    def __init__(self, backend, printer: TurnPrinter):
        self.backend, self.printer = backend, printer

    def search(self, requests):
        results = self.backend.search(requests)
        for result in results:
            self.printer.documents(result.documents)
        return results


class Session:
    """A loaded policy and engine that answer questions one by one."""

    def __init__(self, args: argparse.Namespace, out: TextIO):
        from zerosearch.eval import evaluation_agent
        from zerosearch.policy import load_policy

        self.args, self.out = args, out
        self.style = Style.choose(args.color, out)
        print(f"loading {args.model} ...", file=sys.stderr, flush=True)
        self.policy = load_policy(args.model, args.policy_url, args.policy_model, args.rollout, args.device)
        try:
            self.agent = evaluation_agent(self.policy.tokenizer, search_options(args), **agent_limits(args))
        except BaseException:
            self.policy.close()
            raise

    def ask(self, question: str, golden: Sequence[str] = ()) -> dict:
        """Run one trajectory for `question`, printing it; returns its answer, scores and counters."""
        from llm_agent.generation import LLMGenerationManager
        from verl.utils.dataset import encode_prompt
        from verl.workers.rollout import RolloutSamplingParams
        from zerosearch.reward import answer_metrics
        from zerosearch.search.simulate import row_context
        from zerosearch.templates import policy_messages

        tokenizer, generation = self.policy.tokenizer, self.agent.generation
        printer = TurnPrinter(self.style, self.out, generation.max_query_chars)
        manager = LLMGenerationManager(
            WatchedEngine(self.policy.engine, tokenizer, printer),
            WatchedSearch(self.agent.val_search.bind(0.0), printer),
            tokenizer,
            generation,
        )
        prompt = encode_prompt(tokenizer, policy_messages(question, self.args.template))
        params = RolloutSamplingParams(temperature=self.args.temperature, seed=self.args.seed)
        (trajectory,) = manager.run([prompt], [row_context(question, golden)], params).trajectories
        stats = trajectory.stats
        answer = stats.answer  # the answer the environment accepted, the one the reward scores
        summary = f"{stats.turns} turn(s), {stats.searches} search(es)"
        if stats.truncated:
            summary += ", stopped at the response budget"
        if answer is None:
            self.out.write(self.style("warn", "no answer") + f" ({summary})\n")
        else:
            self.out.write(self.style("answer", f"=> {answer}") + f" ({summary})\n")
        scores = answer_metrics(stats.reward_text, list(golden)) if golden else {}
        if scores:
            self.out.write(
                f"EM {scores['em']:.0f}  cover-EM {scores['cover_em']:.0f}  F1 {scores['f1']:.2f}\n"
            )
        self.out.flush()
        return {"answer": answer, "turns": stats.turns, "searches": stats.searches, **scores}

    def interact(self, stdin: TextIO) -> None:
        """Questions from the user until Ctrl-D / exit / quit; an empty line asks nothing."""
        interactive = stdin.isatty()
        if interactive:
            import readline  # noqa: F401  (line editing and history for input())

            print("Ask a question (Ctrl-D or 'exit' to end).", file=self.out, flush=True)
        while True:
            try:
                line = input(self.style("dim", "question> ")) if interactive else stdin.readline()
            except (EOFError, KeyboardInterrupt):
                print(file=self.out, flush=True)
                return
            if not interactive and line == "":
                return
            question = line.strip()
            if question in ("exit", "quit"):
                return
            if question:
                self.ask(question)

    def close(self) -> None:
        self.agent.close()
        self.policy.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.infer", description=__doc__.split("\n")[0])
    add_policy_arguments(parser)
    parser.add_argument("--question", help="ask this one question and exit (default: an interactive prompt)")
    parser.add_argument(
        "--golden", action="append", default=[], help="a golden answer (repeatable): scores the answer"
    )
    parser.add_argument("--template", default="policy_default", help="policy template: a name or a file")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (with --temperature)")
    parser.add_argument("--color", default="auto", choices=("auto", "always", "never"), help="colour output")
    add_engine_arguments(parser)
    add_agent_arguments(parser)
    args = parser.parse_args(argv)
    try:
        session = Session(args, sys.stdout)
    except (ValueError, FileNotFoundError, ImportError, PolicyEndpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if args.question is not None:
            if not args.question.strip():
                print("error: --question is empty", file=sys.stderr)
                return 2
            session.ask(args.question.strip(), args.golden)
        else:
            session.interact(sys.stdin)
    except PolicyEndpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
