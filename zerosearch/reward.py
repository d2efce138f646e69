"""Answer extraction, normalization and the three answer metrics; the trainer's reward function.

Metrics, labelled honestly:

* ``em``       strict exact match: normalized prediction == normalized golden answer.
* ``cover_em`` normalized golden answer is a substring of the normalized prediction. This is what the
               reference code and the ZeroSearch / Search-R1 paper tables call "EM"; it is more lenient
               than ``em`` (a long answer that contains the gold scores 1).
* ``f1``       token F1 over whitespace tokens of the normalized strings, P = overlap / len(pred),
               R = overlap / len(gold), overlap counted as a multiset intersection. The default reward.

Each metric is the maximum over all golden answers, and 0.0 when the response has no answer.

Normalization follows the SQuAD convention (lowercase, drop punctuation, drop the articles a/an/the,
collapse whitespace) with two Unicode-safe choices: text is NFC-normalized first, so a composed and a
decomposed "é" compare equal, and punctuation means ASCII punctuation plus every Unicode punctuation
character (categories P*), so "«Paris»" or "北京。" lose their marks while letters of every script stay.

Degenerate strings: a prediction or golden answer that normalizes to "" (empty, or punctuation/articles
only) never matches anything. Otherwise an empty answer would score EM 1 against a punctuation-only gold,
and every answer would "cover" an empty gold; for a reward that would be an exploit.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping

from llm_agent.parsing import strip_injected_text

METRICS = ("f1", "em", "cover_em")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ANSWER_SPAN = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def _is_punctuation(char: str) -> bool:
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation, drop articles, collapse whitespace (see the module doc)."""
    text = unicodedata.normalize("NFC", s).lower()
    text = "".join(char for char in text if not _is_punctuation(char))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def golden_answer_list(golden_answers) -> list[str]:
    """Accept one answer (str) or a list / tuple / numpy array of answers; return a list of str.

    Parquet files give numpy object arrays; their elements are str subclasses or plain str.
    """
    if isinstance(golden_answers, str):
        return [golden_answers]
    if isinstance(golden_answers, Mapping) or not isinstance(golden_answers, Iterable):
        raise TypeError(
            f"golden answers must be a str or a sequence of str, got {type(golden_answers).__name__}"
        )
    answers = list(golden_answers)
    for position, answer in enumerate(answers):
        if not isinstance(answer, str):
            raise TypeError(f"golden answer #{position} must be str, got {type(answer).__name__}: {answer!r}")
    return answers


def extract_answer(response_text: str) -> str | None:
    """The last complete `<answer>...</answer>` in the response, stripped; None when there is none.

    Pass the response only, never the prompt (the policy template contains an example answer). Text the
    environment injected (`<information>` observations, invalid-action feedback, which shows an example
    answer tag) is skipped. With stray opening tags, the innermost span before a closing tag is used.
    """
    matches = _ANSWER_SPAN.findall(strip_injected_text(response_text))
    return matches[-1].strip() if matches else None


def _best(pred: str | None, golden_answers, score_one) -> float:
    answers = golden_answer_list(golden_answers)
    if not answers:
        raise ValueError("golden answers are empty: every question needs at least one answer")
    if pred is None:
        return 0.0
    norm_pred = normalize_answer(pred)
    if not norm_pred:
        return 0.0
    scores = [score_one(norm_pred, norm_gold) for norm_gold in map(normalize_answer, answers) if norm_gold]
    return max(scores, default=0.0)


def _em_one(norm_pred: str, norm_gold: str) -> float:
    return float(norm_pred == norm_gold)


def _cover_one(norm_pred: str, norm_gold: str) -> float:
    return float(norm_gold in norm_pred)


def _f1_one(norm_pred: str, norm_gold: str) -> float:
    pred_tokens, gold_tokens = norm_pred.split(), norm_gold.split()
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def contains_answer(text: str, golden_answers) -> bool:
    """Whether `text` (documents) holds a golden answer as whole words after normalization ("Rome" is in
    "born in Rome." but not in "Romeo"): how a document set is judged to carry the answer."""
    padded = f" {normalize_answer(text)} "
    return any(
        f" {gold} " in padded for gold in map(normalize_answer, golden_answer_list(golden_answers)) if gold
    )


def exact_match(pred: str | None, golden_answers) -> float:
    """Strict EM: 1.0 when the normalized prediction equals some normalized golden answer."""
    return _best(pred, golden_answers, _em_one)


def cover_exact_match(pred: str | None, golden_answers) -> float:
    """Cover-EM (the reference's "EM"): 1.0 when some normalized gold is a substring of the prediction."""
    return _best(pred, golden_answers, _cover_one)


def f1_score(pred: str | None, golden_answers) -> float:
    """Token F1 against the best-matching golden answer."""
    return _best(pred, golden_answers, _f1_one)


_METRIC_FUNCTIONS = {"f1": f1_score, "em": exact_match, "cover_em": cover_exact_match}


def _ground_truth_answers(ground_truth) -> list[str]:
    if isinstance(ground_truth, dict):
        if "target" not in ground_truth:
            raise ValueError(
                f"reward_model.ground_truth must have a 'target' field, got keys {sorted(ground_truth)}"
            )
        ground_truth = ground_truth["target"]
    return golden_answer_list(ground_truth)


def compute_score(response_text: str, ground_truth, metric: str = "f1") -> float:
    """The reward for one response: `metric` of its extracted answer against all golden answers.

    `ground_truth` is the dataset's `reward_model.ground_truth` ({"target": [answers]}), or the answers
    themselves (a list or a single str). A response without an answer scores 0.0.
    """
    if metric not in _METRIC_FUNCTIONS:
        raise ValueError(f"unknown reward metric {metric!r}; allowed: {', '.join(METRICS)}")
    return _METRIC_FUNCTIONS[metric](extract_answer(response_text), _ground_truth_answers(ground_truth))


def answer_metrics(response_text: str, golden_answers) -> dict[str, float]:
    """All metrics for evaluation logs: em, cover_em, f1 and has_answer (1.0 when an answer was given)."""
    answers = _ground_truth_answers(golden_answers)
    pred = extract_answer(response_text)
    return {
        "em": exact_match(pred, answers),
        "cover_em": cover_exact_match(pred, answers),
        "f1": f1_score(pred, answers),
        "has_answer": float(pred is not None),
    }
