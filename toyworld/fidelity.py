"""Simulator fidelity: does the tuned simulator answer for the queries that the real engine answers?

    python -m toyworld fidelity --world DIR --simulator MODEL [--questions 96]
        [--temperature 0.8] [--seed 0]

RL learns query skill from the simulator only if a good query pays more than a weak one there, as it
does with the real engine. For single-hop training questions and each query kind of the
simulation-tuning pairs (full name, the question itself, last name, first name, relation words alone, a
misspelt name, a similar person's name) this writes one query per question, searches the world's real
engine (BM25 over the documents training may see) and asks the simulator for useful documents (the chat
prompt and document cut of the `simulate_sft` backend, decoded by the built-in server's engine), and
reports per kind the share of results that carry a golden answer, and the share of simulator outputs
that carry it in more than one document (under repeats a random pick is right, which it never is with
BM25).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from toyworld.demos import question_from_row
from toyworld.engine import ToyWorld
from toyworld.simtune import PERSON_QUERY_KINDS, SIMULATION_TEMPLATE, make_query
from zerosearch.reward import contains_answer
from zerosearch.search.simulate import parse_documents


@dataclass(frozen=True)
class FidelityRow:
    """One query kind: shares of `questions` results that carry a golden answer."""

    kind: str
    questions: int
    real: float
    simulator: float
    simulator_repeats: float


def answer_documents(documents: list[str], answers) -> int:
    """How many of `documents` carry one of `answers` (normalized, as whole words)."""
    return sum(contains_answer(doc, answers) for doc in documents)


def measure_fidelity(
    world_dir: str | Path,
    simulator_dir: str | Path,
    num_questions: int = 96,
    temperature: float = 0.8,
    max_tokens: int = 256,
    topk: int = 5,
    seed: int = 0,
    batch_size: int = 32,
) -> list[FidelityRow]:
    """Real engine vs simulator, per query kind, on `num_questions` single-hop training questions."""
    from tqdm import tqdm

    from zerosearch.data.schema import read_dataset
    from zerosearch.simulation.engine import GenerationEngine, GenerationRequest, SamplingParams
    from zerosearch.templates import simulation_messages

    if num_questions < 1:
        raise ValueError(f"--questions must be >= 1, got {num_questions}")
    if temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {temperature}")
    if not Path(simulator_dir).is_dir():
        raise FileNotFoundError(f"--simulator: no such model folder: {simulator_dir}")
    world_dir = Path(world_dir)
    world = ToyWorld.load(world_dir).world
    engine = ToyWorld.for_training(world)
    rng = random.Random(seed)
    pool = [question_from_row(world, row) for row in read_dataset(world_dir / "train.parquet")]
    single_hop = [q for q in pool if q.hops == 1]
    questions = rng.sample(single_hop, min(num_questions, len(single_hop)))
    train_people = world.people_in("train")
    simulator = GenerationEngine(simulator_dir)
    rows = []
    for kind in tqdm(PERSON_QUERY_KINDS, desc="fidelity", unit="kind"):
        queries = [make_query(world, q, kind, rng, train_people) for q in questions]
        real = engine.search_many(queries, topk)
        requests = [
            GenerationRequest(
                simulator.chat_prompt_ids(
                    simulation_messages(
                        query, q.text, list(q.answers), useful=True, mode="sft", template=SIMULATION_TEMPLATE
                    )
                ),
                SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed + i),
            )
            for i, (query, q) in enumerate(zip(queries, questions, strict=True))
        ]
        outputs = simulator.generate_in_batches(requests, batch_size)
        counts = [
            answer_documents(parse_documents(out.text, topk), q.answers)
            for out, q in zip(outputs, questions, strict=True)
        ]
        n = len(questions)
        real_hits = sum(answer_documents(d, q.answers) > 0 for d, q in zip(real, questions, strict=True))
        rows.append(
            FidelityRow(
                kind,
                n,
                real=real_hits / n,
                simulator=sum(c > 0 for c in counts) / n,
                simulator_repeats=sum(c > 1 for c in counts) / n,
            )
        )
    return rows


def format_table(rows: list[FidelityRow]) -> str:
    """The rows as a text table: answer in the results, real engine vs simulator (useful mode)."""
    lines = [f"{'query kind':14s} {'real engine':>12s} {'simulator':>10s} {'sim repeats':>12s}"]
    for r in rows:
        lines.append(f"{r.kind:14s} {r.real:12.2f} {r.simulator:10.2f} {r.simulator_repeats:12.2f}")
    lines.append(f"({rows[0].questions if rows else 0} single-hop training questions per kind)")
    return "\n".join(lines)
