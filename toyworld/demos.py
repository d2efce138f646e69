"""Warm-start demonstrations for the toy-world policy: they teach the format, not the skill.

A demonstration is one complete trajectory as the agent loop would write it for a training question:

    <think> ... </think>\\n<search> WEAK QUERY </search>              (policy text: trained)
    \\n\\n<information>Doc 1: ...\\n...</information>\\n\\n             (observation: NOT trained)
    <think> Question: ...\\nAnswer: X\\n</think>\\n<answer> X </answer>  (policy text: trained)

The query is deliberately weak (last name only, first name only, a misspelt name, or relation words only),
so the warm-started policy searches in the right format without knowing which query finds the fact: its
real-search EM starts low and RL has the query skill to learn (docs/design.md §8). The answer X is the *base
model's own* greedy reading of those documents (`ModelReader`), chosen in the thought's reading layout
(the base model's pretraining lines, pretrain.py) and copied into `<answer>`: the policy keeps the base
model's reading, as a pretrained LLM keeps its own, and learns none beyond it. Measured (dev/LOG.md):
random entities as answers taught the policy to pick at random (a base reading at 0.31
gave a warm start at 0.12), answer words left untrained broke the answer turn (0.51 -> 0.13 in 80
steps), and the base's own answers keep it (0.54 -> 0.535). Without a
reader the answer is a random entity from the documents. Documents come from the world's real engine
over the documents training may see (none names a held-out person), with the observation text exactly
as `llm_agent.observation` builds it.

Rows are written for `verl.trainer.sft_trainer`: `prompt` (the policy's chat messages, as in the RL
dataset) and `response_segments` ([{text, train}], the observation segment with train=false).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llm_agent.observation import OBSERVATION_HEAD, OBSERVATION_TAIL, format_documents
from toyworld.engine import ToyWorld
from toyworld.pretrain import reading_prefix
from toyworld.questions import TYPES_BY_NAME, Question, resolve
from toyworld.simtune import make_query
from toyworld.world import City, Country, Org, Person, World, stream

WEAK_QUERY_KINDS = ("last", "first", "relation", "misspelled")
# Relation-only queries ("country") are left out by default: the same query for every question is the
# easiest thing for a tiny model to imitate, and the warm start collapsed onto it, never copying a name.
DEFAULT_QUERY_KINDS = ("last", "first", "misspelled")
SEARCH_THOUGHT = "<think> I need more information, so I will search. </think>\n"
_WORD = re.compile(r"[A-Za-z]+")
_MAX_NAME_WORDS = 5


@dataclass(frozen=True)
class DemoConfig:
    """How many demonstrations to write, with how many documents per search (training's topk), and which
    weak query kinds (of WEAK_QUERY_KINDS) to draw from."""

    num_demos: int = 2000
    topk: int = 5
    seed: int = 0
    template: str = "policy_default"
    query_kinds: tuple[str, ...] = DEFAULT_QUERY_KINDS

    def check(self) -> None:
        unknown = sorted(set(self.query_kinds) - set(WEAK_QUERY_KINDS))
        if not self.query_kinds or unknown:
            raise ValueError(
                f"query_kinds must be a non-empty subset of {WEAK_QUERY_KINDS}, got {self.query_kinds}"
            )
        if self.num_demos < 1:
            raise ValueError(f"num_demos must be >= 1, got {self.num_demos}")
        if self.topk < 1:
            raise ValueError(f"topk must be >= 1, got {self.topk}")


def entity_kind(entity: Country | City | Org | Person) -> str:
    """ "country", "city", "company", "university" or "person"."""
    if isinstance(entity, Org):
        return entity.kind
    return type(entity).__name__.lower()


class MentionFinder:
    """Finds the world's entities named in a text (full names of people; names and aliases of the rest)."""

    def __init__(self, world: World):
        self.kinds: dict[str, str] = {}
        for group in (world.countries, world.cities, world.orgs, world.people):
            for entity in group:
                names = [entity.name] if isinstance(entity, Person) else world.answers(entity.id)
                for name in names:
                    self.kinds[name] = entity_kind(entity)

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """(surface name, kind) of each mention, left to right, longest match first."""
        words = _WORD.findall(text)
        out, i = [], 0
        while i < len(words):
            for n in range(min(_MAX_NAME_WORDS, len(words) - i), 0, -1):
                name = " ".join(words[i : i + n])
                if name in self.kinds:
                    out.append((name, self.kinds[name]))
                    i += n
                    break
            else:
                i += 1
        return out


def pick_answer(finder: MentionFinder, documents: list[str], kind: str, rng: random.Random) -> str | None:
    """A random entity named in `documents`, of `kind` when any is there; None when they name no entity."""
    found = sorted({m for doc in documents for m in finder.mentions(doc)})
    if not found:
        return None
    same_kind = [name for name, k in found if k == kind]
    return rng.choice(same_kind or [name for name, _ in found])


def observation_text(documents: list[str]) -> str:
    """The observation exactly as the agent loop appends it after a search."""
    return OBSERVATION_HEAD + format_documents(documents) + OBSERVATION_TAIL


def demo_segments(question: str, query: str, documents: list[str], answer: str) -> list[dict]:
    """The response of one demonstration: search turn, observation (untrained), answer turn.

    The answer turn's thought restates the question in the base model's reading layout (`Question: ...`
    then `Answer:`, pretrain.py), so the policy answers where the base learnt to read, then copies that
    answer into `<answer>`.
    """
    return [
        {"text": f"{SEARCH_THOUGHT}<search> {query} </search>", "train": True},
        {"text": observation_text(documents), "train": False},
        {
            "text": f"<think> Question: {question}\nAnswer: {answer}\n</think>\n<answer> {answer} </answer>",
            "train": True,
        },
    ]


class ModelReader:
    """Answers (question, documents) pairs with a model's greedy reading, in the base model's reading
    layout: the warm start then imitates the base model's own choices and learns no reading of its own."""

    def __init__(self, model_dir: str | Path, batch_size: int = 64):
        from zerosearch.simulation.engine import GenerationEngine

        self.engine = GenerationEngine(model_dir)
        self.batch_size = batch_size

    def __call__(self, pairs: list[tuple[str, list[str]]]) -> list[str]:
        from zerosearch.simulation.engine import GenerationRequest, SamplingParams

        params = SamplingParams(max_tokens=16, temperature=0.0, stop=("\n",))
        tokenizer = self.engine.tokenizer
        requests = [
            GenerationRequest(
                tokenizer(reading_prefix(documents, question), add_special_tokens=False)["input_ids"], params
            )
            for question, documents in pairs
        ]
        outputs = self.engine.generate_in_batches(requests, self.batch_size, "base model answers")
        return [out.text.strip() for out in outputs]


def question_from_row(world: World, row: dict) -> Question:
    """Rebuild a Question from a dataset row of the toy world (extra_info holds qtype and subject)."""
    extra = row["extra_info"]
    qtype = TYPES_BY_NAME[extra["qtype"]]
    chain = resolve(world, world.entity(extra["subject"]), qtype.path)
    if chain is None:
        raise ValueError(f"row {extra.get('index')}: {extra['subject']} has no {qtype.name} fact")
    return Question(
        row["question"],
        tuple(row["golden_answers"]),
        qtype.name,
        extra["subject"],
        chain[-1],
        chain[0] if qtype.hops == 2 else None,
    )


def build_demonstrations(
    world: World,
    engine: ToyWorld,
    questions: list[Question],
    config: DemoConfig,
    reader: Callable[[list[tuple[str, list[str]]]], list[str]] | None = None,
) -> list[dict]:
    """Up to `config.num_demos` demonstration rows for questions sampled from `questions` (train people only).

    `engine` must search only documents training may see (`visible_documents`). The answers are
    `reader`'s for each (question, documents) pair (the pipeline's: the base model's, `ModelReader`), or
    without one a random entity named in the documents; rows without an answer are left out.
    """
    from zerosearch.templates import policy_messages

    config.check()
    if any(world.entity(q.subject).group != "train" for q in questions):
        raise ValueError("demonstration questions must all be about train people")
    rng = stream(world.seed + config.seed, "demos")
    train_people = world.people_in("train")
    chosen = [rng.choice(questions) for _ in range(config.num_demos)]
    queries = [
        (q, kind, make_query(world, q, kind, rng, train_people))
        for q in chosen
        for kind in [rng.choice(config.query_kinds)]
    ]
    results = engine.search_many([query for _, _, query in queries], config.topk)
    if reader is None:
        finder = MentionFinder(world)
        answers = [
            pick_answer(finder, documents, entity_kind(world.entity(q.answer_entity)), rng)
            for (q, _, _), documents in zip(queries, results, strict=True)
        ]
    else:
        answers = reader([(q.text, documents) for (q, _, _), documents in zip(queries, results, strict=True)])
    rows = []
    for (question, kind, query), documents, answer in zip(queries, results, answers, strict=True):
        if not answer:
            continue
        rows.append(
            {
                "question": question.text,
                "golden_answers": list(question.answers),
                "qtype": question.qtype,
                "query": query,
                "query_kind": kind,
                "documents": documents,
                "answer": answer,
                "prompt": policy_messages(question.text, config.template),
                "response_segments": demo_segments(question.text, query, documents, answer),
            }
        )
    return rows


def build_demo_file(
    world_dir: str | Path,
    out_path: str | Path,
    config: DemoConfig | None = None,
    reader_model: str | Path | None = None,
) -> Path:
    """Write demonstrations for a built toy world (its train.parquet questions) to `out_path` (parquet),
    answered by `reader_model`'s reading (`ModelReader`) or, without one, by random entities."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zerosearch.data.schema import read_dataset

    config = config or DemoConfig()
    world_dir = Path(world_dir)
    loaded = ToyWorld.load(world_dir)
    world = loaded.world
    questions = [question_from_row(world, row) for row in read_dataset(world_dir / "train.parquet")]
    reader = ModelReader(reader_model) if reader_model is not None else None
    rows = build_demonstrations(world, ToyWorld.for_training(world), questions, config, reader)
    if not rows:
        raise ValueError(f"{world_dir}: no demonstration could be built")
    out_path = Path(out_path)
    tmp = out_path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp, compression="zstd")
    tmp.replace(out_path)
    return out_path
