"""The task and the arithmetic bench_trl shares with its TRL harness (standard library only: the harness
imports this module from TRL's own environment, .venv-trl, where the project is not installed).

The task: single-turn questions "Question: what is the code word for <subject>? Answer:" whose answer is a
two-word code ("<adjective> <noun>"); the reward is the token F1 of the completion's words against the
code's. Both trainers read the same rows (`task_rows`) and score with the same `token_f1`.

The arithmetic: a run's figure is the median over its measured steps (steps `FIRST_MEASURED_STEP` to the
last, 1-based: the first steps pay for warm-up), the benchmark's figure is the median of the runs' figures.
"""

from __future__ import annotations

import json
import random
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

FIRST_MEASURED_STEP = 3  # steps 1 and 2 warm up (allocator, first-call paths); steps 3.. are measured

_CODE_FIRST = [
    "amber",
    "arctic",
    "bold",
    "brass",
    "cedar",
    "coral",
    "dusty",
    "ember",
    "faded",
    "frosty",
    "golden",
    "granite",
    "hazel",
    "indigo",
    "ivory",
    "jade",
    "lunar",
    "maroon",
    "mellow",
    "misty",
    "noble",
    "ochre",
    "olive",
    "pale",
    "quartz",
    "rustic",
    "sable",
    "scarlet",
    "silent",
    "slate",
    "solar",
    "teal",
]
_CODE_SECOND = [
    "anchor",
    "badger",
    "beacon",
    "bison",
    "breeze",
    "cactus",
    "candle",
    "canyon",
    "cobra",
    "comet",
    "condor",
    "cypress",
    "delta",
    "falcon",
    "ferret",
    "fjord",
    "geyser",
    "harbor",
    "heron",
    "island",
    "jaguar",
    "kestrel",
    "lagoon",
    "lantern",
    "lynx",
    "mantis",
    "meadow",
    "orchid",
    "osprey",
    "pelican",
    "prairie",
    "quiver",
    "raven",
    "reef",
    "saddle",
    "spruce",
    "tundra",
    "walrus",
    "willow",
    "yarrow",
]
_SUBJECTS = (
    "the west gate",
    "the cold store",
    "the night train",
    "the green ledger",
    "the pier office",
    "the tower stairs",
    "the vault panel",
    "the radio room",
    "the south dock",
    "the archive box",
    "the loading bay",
    "the roof hatch",
    "the old mill",
    "the relay mast",
    "the third locker",
    "the field camp",
)
_OTHER_WORDS = [
    "agent",
    "answer",
    "base",
    "code",
    "courier",
    "dispatch",
    "evening",
    "field",
    "keep",
    "listen",
    "message",
    "mission",
    "morning",
    "network",
    "office",
    "order",
    "question",
    "relay",
    "remember",
    "report",
    "safe",
    "secret",
    "send",
    "signal",
    "station",
    "team",
    "today",
    "tomorrow",
    "word",
]

QUESTION = "Question: what is the code word for {subject}? Answer:"


def task_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    """`count` rows {"question", "code"}, the same for the same (count, seed) in any environment."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        subject = f"{_SUBJECTS[rng.randrange(len(_SUBJECTS))]} {i}"  # the number keeps questions distinct
        code = f"{rng.choice(_CODE_FIRST)} {rng.choice(_CODE_SECOND)}"
        rows.append({"question": QUESTION.format(subject=subject), "code": code})
    return rows


def tokenizer_corpus(lines: int = 6000, seed: int = 1) -> list[str]:
    """Text to train the task's byte-level BPE on: questions with their codes, sentences naming codes, and
    filler sentences, so that the task's words are whole tokens or a few pieces."""
    rng = random.Random(seed)
    pool = _OTHER_WORDS + _CODE_FIRST + _CODE_SECOND
    out = []
    for i in range(lines):
        code = f"{rng.choice(_CODE_FIRST)} {rng.choice(_CODE_SECOND)}"
        subject = f"{rng.choice(_SUBJECTS)} {rng.randrange(89)}"
        if i % 3 == 0:
            out.append(f"{QUESTION.format(subject=subject)} {code}")
        elif i % 3 == 1:
            out.append(f"The team was told that {subject} uses {code}; report at {rng.randrange(24)}.")
        else:
            words = [
                rng.choice(pool) if rng.random() < 0.6 else _made_up_word(rng)
                for _ in range(rng.randint(4, 16))
            ]
            out.append(" ".join(words).capitalize() + ".")
    return out


_SYLLABLE_START = "b c d f g h j k l m n p r s t v w z br cl dr gr pl st tr"
_SYLLABLE_VOWEL = "a e i o u ai ea ou"


def _made_up_word(rng: random.Random) -> str:
    """A pronounceable non-word of 1-3 syllables: filler that gives the BPE enough pieces to learn."""
    starts, vowels = _SYLLABLE_START.split(), _SYLLABLE_VOWEL.split()
    return "".join(rng.choice(starts) + rng.choice(vowels) for _ in range(rng.randint(1, 3)))


_WORDS = re.compile(r"[a-z0-9]+")


def token_f1(text: str, code: str) -> float:
    """F1 of the words of `text` against the words of `code` (lowercased alphanumeric runs, counted as
    multisets); 0 when either has no word."""
    predicted, gold = _WORDS.findall(text.lower()), _WORDS.findall(code.lower())
    overlap = sum((Counter(predicted) & Counter(gold)).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def score(response_text: str, ground_truth, metric: str = "f1") -> float:
    """The trainer's reward function (`reward.score_fn=benchmarks.peer_task.score`): the completion's token
    F1 against the row's code."""
    if metric != "f1":
        raise ValueError(f"the code-word task scores token F1 only, not {metric!r}")
    return token_f1(response_text, str(ground_truth))


# ----- arithmetic over steps and runs ------------------------------------------------------------------


def measured(values: Sequence[float]) -> list[float]:
    """The measured steps' values (steps FIRST_MEASURED_STEP.. of a run whose values are in step order)."""
    if len(values) < FIRST_MEASURED_STEP:
        raise ValueError(
            f"a run needs at least {FIRST_MEASURED_STEP} steps to have a measured one, got {len(values)}"
        )
    return list(values[FIRST_MEASURED_STEP - 1 :])


def run_median(values: Sequence[float]) -> float:
    """A run's figure: the median of its measured steps."""
    return statistics.median(measured(values))


def median_over_runs(runs: Iterable[Mapping[str, float]], key: str) -> float:
    """The benchmark's figure for `key`: the median of the runs' figures."""
    return statistics.median(run[key] for run in runs)


# ----- the harness's report ----------------------------------------------------------------------------

RESULT_PREFIX = "BENCH_RESULT "


def result_line(result: Mapping) -> str:
    """How the TRL harness hands its summary back: one line, a fixed prefix, then JSON."""
    return RESULT_PREFIX + json.dumps(result, sort_keys=True)


def parse_result(output: str) -> dict:
    """The summary of the last result line in a harness's output; ValueError when there is none."""
    lines = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise ValueError("the harness printed no result line (" + RESULT_PREFIX.strip() + ")")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])
