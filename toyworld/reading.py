"""Reading probe: given the documents a good query finds, does the model pick the answer out of them?

    python -m toyworld reading --world DIR --model MODEL [--split heldout|train]
        [--format policy|plain] [--questions 200] [--seed 0]

Held-out EM is the product of two skills: a query that brings the answer into the documents, and an
answer read out of them. `fidelity` measures the first against the simulator; this measures the second,
alone. For single-hop questions whose full-name query makes the world's real engine return the answer,
the model sees that query's documents and answers greedily, in one of two layouts:

- `policy`: the agent's trajectory as the warm-start demonstrations write it, up to the end of the
  observation; the model writes the answer turn (its thought, then `<answer>`), and the answer is what
  the trainer's reward would extract;
- `plain`: the base model's reading lines (`Doc i:` lines, `Question:`, `Answer:`).

Reported: the share of answers that are a golden answer (EM), that are copied from the documents, and
that name an entity of the asked type. Held-out questions search the whole corpus, as validation does;
training questions search the documents training may see.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from toyworld.demos import MentionFinder, demo_segments, entity_kind, question_from_row
from toyworld.engine import ToyWorld
from toyworld.fidelity import answer_documents
from toyworld.pretrain import reading_prefix
from toyworld.simtune import make_query
from zerosearch.reward import exact_match, extract_answer

SPLIT_FILES = {"heldout": "test.parquet", "train": "train.parquet"}
FORMATS = ("policy", "plain")


@dataclass(frozen=True)
class ReadingResult:
    """Shares of `questions` answers: golden, copied from the documents, of the asked type."""

    questions: int
    exact_match: float
    copied: float
    right_type: float


def reading_prompt(tokenizer, fmt: str, question: str, query: str, documents: list[str]) -> list[int]:
    """The token ids the model continues with its answer turn (`policy`) or its answer (`plain`)."""
    from zerosearch.templates import policy_messages

    if fmt == "policy":
        # A demonstration's trajectory, cut where its answer turn begins: the probe follows their layout.
        search_turn, observation = demo_segments(question, query, documents, "")[:2]
        chat = tokenizer.apply_chat_template(
            policy_messages(question), tokenize=False, add_generation_prompt=True
        )
        text = chat + search_turn["text"] + observation["text"]
    else:
        text = reading_prefix(documents, question)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def read_answer(fmt: str, text: str) -> str:
    """The answer in a generated continuation: `<answer>`'s content (policy; generation stops at
    `</answer>`, which the text leaves out), the line (plain)."""
    if fmt == "policy":
        return extract_answer(text + "</answer>") or ""
    return text.strip()


def measure_reading(
    world_dir: str | Path,
    model_dir: str | Path,
    split: str = "heldout",
    fmt: str = "policy",
    num_questions: int = 200,
    seed: int = 0,
    topk: int = 5,
    batch_size: int = 32,
) -> ReadingResult:
    """Greedy answers of `model_dir` to `num_questions` single-hop questions of `split`, each shown the real
    engine's documents for its full-name query (only questions whose documents hold a golden answer)."""
    from zerosearch.data.schema import read_dataset
    from zerosearch.simulation.engine import GenerationEngine, GenerationRequest, SamplingParams

    if split not in SPLIT_FILES:
        raise ValueError(f"--split must be one of {', '.join(SPLIT_FILES)}, got {split!r}")
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if num_questions < 1:
        raise ValueError(f"--questions must be >= 1, got {num_questions}")
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"--model: no such model folder: {model_dir}")
    world_dir = Path(world_dir)
    loaded = ToyWorld.load(world_dir)
    world = loaded.world
    engine = loaded if split == "heldout" else ToyWorld.for_training(world)
    rng = random.Random(seed)
    questions = [question_from_row(world, row) for row in read_dataset(world_dir / SPLIT_FILES[split])]
    questions = [q for q in questions if q.hops == 1]
    rng.shuffle(questions)
    train_people = world.people_in("train")
    model = GenerationEngine(model_dir)
    stop = ("</answer>",) if fmt == "policy" else ("\n",)
    shown, requests = [], []
    for q in questions:
        query = make_query(world, q, "full", rng, train_people)
        documents = engine.search(query, topk)
        if answer_documents(documents, q.answers) == 0:
            continue
        ids = reading_prompt(model.tokenizer, fmt, q.text, query, documents)
        # The policy's answer turn restates the question before it answers (demos.py): room for both; its
        # tags are special tokens in the toy tokenizer, kept in the text to find the answer.
        max_tokens = 96 if fmt == "policy" else 16
        requests.append(
            GenerationRequest(
                ids,
                SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=stop, skip_special_tokens=False),
            )
        )
        shown.append((q, " ".join(documents)))
        if len(requests) == num_questions:
            break
    if not requests:
        raise ValueError(f"{world_dir}: no single-hop {split} question whose documents hold its answer")
    answers = [
        read_answer(fmt, out.text) for out in model.generate_in_batches(requests, batch_size, "reading")
    ]
    finder = MentionFinder(world)
    n = len(answers)
    golden = sum(exact_match(a, q.answers) for a, (q, _) in zip(answers, shown, strict=True))
    copied = sum(bool(a) and a in docs for a, (_, docs) in zip(answers, shown, strict=True))
    typed = sum(
        finder.kinds.get(a) == entity_kind(world.entity(q.answer_entity))
        for a, (q, _) in zip(answers, shown, strict=True)
    )
    return ReadingResult(n, golden / n, copied / n, typed / n)


def format_result(result: ReadingResult) -> str:
    return (
        f"answer is golden (EM)     {result.exact_match:.3f}\n"
        f"answer copied from docs   {result.copied:.3f}\n"
        f"answer of the asked type  {result.right_type:.3f}\n"
        f"({result.questions} single-hop questions whose full-name query finds the answer)"
    )
