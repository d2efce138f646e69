"""python -m zerosearch.infer on the tiny policy that searches: one question piped and on a terminal (a real
pseudo-terminal), the interactive prompt with an empty line and Ctrl-D, and errors that name the flag."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest

ANSI = "\033["


@pytest.fixture
def command(agent_model_dir, agent_corpus, tmp_path):
    template = tmp_path / "template.txt"
    template.write_text("Question: {question}")  # the prompt the tiny policy was fitted on
    return [
        sys.executable, "-m", "zerosearch.infer", "--model", str(agent_model_dir), "--device", "cpu",
        "--engine", "local", "--corpus", str(agent_corpus), "--template", str(template),
        "--max-turns", "2", "--max-tokens-per-turn", "24", "--max-obs-length", "64", "--max-response-length", "200",
    ]  # fmt: skip


def test_one_question_piped_prints_each_turn_plainly(command):
    args = ["--question", "Where was Alice Smith born?", "--golden", "Paris"]
    proc = subprocess.run(command + args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["── turn 1 ──", "search: Alice Smith", "  Doc 1: Alice Smith was born in Paris."]
    assert "── turn 2 ──" in lines and "answer: Paris" in lines
    assert lines[-2:] == ["=> Paris (2 turn(s), 1 search(es))", "EM 1  cover-EM 1  F1 1.00"]
    assert ANSI not in proc.stdout  # no colour codes when piped


class Terminal:
    """A child process on a pseudo-terminal: what it writes is read back, keys are typed into it."""

    def __init__(self, argv: list[str]):
        self.master, slave = pty.openpty()
        env = {**os.environ, "NO_COLOR": ""}
        env.pop("NO_COLOR")
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=subprocess.DEVNULL, env=env)
        os.close(slave)
        self.seen = ""

    def read_until(self, text: str, timeout: float = 120.0) -> str:
        """Everything written since the last call, up to and including `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} not shown; the terminal shows:\n{self.seen[-2000:]}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"the process ended before showing {text!r}:\n{self.seen[-2000:]}"
                self.seen += chunk.decode("utf-8", "replace")
        cut = self.seen.index(text) + len(text)
        shown, self.seen = self.seen[:cut], self.seen[cut:]
        return shown

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            os.close(self.master)


def test_one_question_on_a_terminal_is_in_colour(command):
    term = Terminal(command + ["--question", "Where does Bob Jones live?"])
    shown = term.read_until("(2 turn(s), 1 search(es))")
    assert term.close() == 0
    assert f"{ANSI}1;33msearch: " in shown and "Bob Jones" in shown
    assert f"{ANSI}1;32m=> Rome{ANSI}0m" in shown


def test_the_interactive_prompt_answers_skips_an_empty_line_and_ends_on_ctrl_d(command):
    term = Terminal(command)
    term.read_until("question> ")
    term.type("Where was Alice Smith born?\n")
    first = term.read_until("question> ")
    assert "=> Paris" in first and "turn 2" in first
    term.type("\n")  # an empty line asks nothing: the prompt comes straight back
    assert "turn" not in term.read_until("question> ")
    term.type("Where does Bob Jones live?\n")
    assert "=> Rome" in term.read_until("question> ")
    term.type("\x04")  # Ctrl-D at the prompt
    assert term.close() == 0


def test_questions_from_a_pipe_are_answered_until_exit(command):
    stdin = "Where was Alice Smith born?\n\nexit\nWhere does Bob Jones live?\n"
    proc = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("=> ") == 1 and "=> Paris" in proc.stdout  # nothing after `exit`


def test_errors_name_the_flag(command, agent_corpus):
    empty = subprocess.run(command + ["--question", "  "], capture_output=True, text=True, timeout=300)
    assert empty.returncode == 2 and "--question is empty" in empty.stderr
    no_corpus = [a for a in command if a not in ("--corpus", str(agent_corpus))] + ["--question", "Where?"]
    proc = subprocess.run(no_corpus, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--engine local needs --corpus" in proc.stderr
