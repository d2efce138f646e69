"""Simulation-tuning pairs built the paper's way, through the project's pipeline (zerosearch.simtune): real
queries, real engine, labels from the documents.

The toy world's `collect` is scripted (`collect_scripted`, records in `simtune collect`'s format); `label`
(answer containment) and `build` (deduplicated, a cap on repeated result lists, balanced, the trainer's
simulation prompt) are the pipeline's own; between them sits the toy filter below.

For training questions we write queries of mixed quality (a full name with relation words, or only a
last name, a first name, the relation, a misspelt name, a similar name), run each through the world's
real engine (BM25), and label the (query, top-k documents) pair *useful* when the documents carry a golden
answer and *noisy* when they do not. A simulator tuned on these learns that what it writes depends on
the query; one whose useful output held the answer whatever the query said taught the policy to drop
names from its queries (docs/design.md §8).

The engine searches the documents training may see (`visible_documents`: none names a held-out person),
so held-out people never reach fine-tuning. Two filters keep the targets honest:
- a noisy pair whose documents name the question's subject (or, for a two-hop question, the bridge
  entity) is dropped: such noisy targets taught the prototype's simulator to write about the asked
  person, and then to copy the answer in noisy mode too;
- one result list may serve as the target of at most `max_same_response` pairs: a relation-only query
  ("country") returns the same five documents for every question, and a simulator tuned on hundreds of
  copies of them learns one canned reply.
Then the larger class is downsampled so useful and noisy are balanced.

Labelled this way, a useful target always holds the answer, whatever its query: a simulator tuned on them
writes the answer into useful documents for a good query and for a name-less one alike (measured:
33% / 31%; dev/LOG.md), and RL under it unlearns naming the person in the query. `miss_share` adds
the real engine's misses to the useful side: that share of the answer-less results become useful-mode
targets (the label names the requested mode, not the content), so in useful mode the simulator
answers more often for the queries the real engine answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from toyworld.corpus import Document, visible_documents
from toyworld.engine import ToyWorld
from toyworld.questions import TYPES_BY_NAME, Question
from toyworld.world import Person, World, stream

# The toy simulator is tuned on the project's own wording of the simulation prompt, and the demo's search
# config (configs/search/toyworld_simulator.yaml) sends it the same.
SIMULATION_TEMPLATE = "project"
LABELLINGS = ("paper", "engine")
PERSON_QUERY_KINDS = ("full", "question", "last", "first", "relation", "misspelled", "similar_name")
BRIDGE_QUERY_KINDS = ("bridge_full", "bridge_misspelled", "relation")
GOOD_KINDS = frozenset({"full", "question", "bridge_full"})


@dataclass
class SimtuneStats:
    """What happened to the candidate pairs; written to the manifest."""

    candidates: int = 0
    useful: int = 0
    noisy: int = 0
    useful_misses: int = 0  # answer-less results put on the useful side (before balancing)
    dropped_noisy_naming_subject: int = 0
    dropped_repeated_response: int = 0
    kept_per_label: int = 0
    kept_by_kind: dict[str, dict[str, int]] = field(default_factory=dict)


def misspell(rng: random.Random, name: str) -> str:
    """One typo in one word of `name` (drop, double or swap a letter after the first); always differs.

    Only words of four letters or more are touched: those are the invented names, not "of" or "the".
    """
    words = name.split()
    i = rng.choice([k for k, w in enumerate(words) if len(w) >= 4])
    word = words[i]
    j = rng.randrange(1, len(word) - 1)
    edit = rng.choice(("drop", "double", "swap"))
    if edit == "drop":
        word = word[:j] + word[j + 1 :]
    elif edit == "double":
        word = word[:j] + word[j] + word[j:]
    else:
        swapped = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
        word = swapped if swapped != word else word[:j] + word[j + 1 :]
    words[i] = word
    return " ".join(words)


def _similar_person(world: World, person: Person, rng: random.Random, train_people: list[Person]) -> Person:
    """A training person sharing the first or last name with `person` (any other one when nobody does)."""
    same = [
        p for p in train_people if p.id != person.id and (p.last == person.last or p.first == person.first)
    ]
    others = same or [p for p in train_people if p.id != person.id]
    return rng.choice(others)


def make_query(
    world: World, question: Question, kind: str, rng: random.Random, train_people: list[Person]
) -> str:
    """One search query of the given kind for `question`."""
    qtype = TYPES_BY_NAME[question.qtype]
    person = world.entity(question.subject)
    if kind.startswith("bridge") or (kind == "relation" and qtype.hops == 2):
        word = rng.choice(qtype.words[1])
        bridge = world.answers(question.bridge)[0]
        if kind == "relation":
            return word
        return f"{bridge if kind == 'bridge_full' else misspell(rng, bridge)} {word}"
    word = rng.choice(qtype.words[0])
    names = {
        "full": person.name,
        "last": person.last,
        "first": person.first,
        "relation": "",
        "misspelled": misspell(rng, person.name),
    }
    if kind == "question":
        return question.text
    if kind == "similar_name":
        return f"{_similar_person(world, person, rng, train_people).name} {word}"
    return f"{names[kind]} {word}".strip()


def _candidates(
    world: World, questions: list[Question], num_questions: int, queries_per_question: int, rng: random.Random
) -> list[tuple[Question, str, str]]:
    train_people = world.people_in("train")
    out = []
    for question in rng.sample(questions, min(num_questions, len(questions))):
        kinds = PERSON_QUERY_KINDS if question.hops == 1 else BRIDGE_QUERY_KINDS
        for kind in rng.sample(kinds, min(queries_per_question, len(kinds))):
            out.append((question, kind, make_query(world, question, kind, rng, train_people)))
    return out


def collect_scripted(
    world: World,
    documents: list[Document],
    questions: list[Question],
    num_questions: int,
    queries_per_question: int = 4,
    topk: int = 5,
    rng: random.Random | None = None,
) -> list[dict]:
    """`zerosearch.simtune collect`'s records for scripted queries: one per (question, query) with its one
    search of the world's real engine (BM25 over the documents training may see). `meta` keeps the question
    type, the query kind and the names the question is about (its subject, and for a two-hop question the
    bridge entity)."""
    rng = rng or stream(world.seed, "simtune")
    visible = [doc.contents for doc in visible_documents(world, documents)]
    candidates = _candidates(world, questions, num_questions, queries_per_question, rng)
    # Identical queries (a bare relation word) are searched once.
    unique_queries = sorted({query for _, _, query in candidates})
    results = dict(
        zip(unique_queries, ToyWorld(world, visible).search_many(unique_queries, topk), strict=True)
    )
    records = []
    for n, (question, kind, query) in enumerate(candidates):
        focus = [world.entity(question.subject).name]
        if question.bridge is not None:
            focus += world.answers(question.bridge)
        records.append(
            {
                "data_source": "toyworld",
                "index": n,
                "question": question.text,
                "golden_answers": list(question.answers),
                "search_calls": [{"query": query, "documents": results[query], "noisy": None, "error": None}],
                "meta": {"qtype": question.qtype, "query_kind": kind, "focus": focus},
            }
        )
    return records


def build_simtune_pairs(
    world: World,
    documents: list[Document],
    questions: list[Question],
    num_questions: int,
    queries_per_question: int = 4,
    topk: int = 5,
    max_same_response: int = 3,
    mode: str = "sft",
    miss_share: float = 0.0,
    labelling: str = "paper",
) -> tuple[list[dict], SimtuneStats]:
    """Balanced useful / noisy pairs for `num_questions` questions sampled from `questions` (train only), made
    by the simulation-tuning pipeline (zerosearch.simtune): scripted queries collected against the real engine,
    labelled by answer containment, the toy filter (module doc), then built into SFT rows.

    Each row: the SFT view `prompt` (simulation chat messages) and `response` (the documents as "Doc i: ..."
    lines), with question, golden_answers, qtype, query, query_kind, documents and label. `miss_share`: the
    share of answer-less results used as useful-mode targets (0: the paper's labelling). `labelling`:
    "paper" (useful = the documents hold the answer) or "engine" (every query's real results are its
    useful-mode target, answer or not, and the answer-less ones are also noisy-mode targets: the useful
    side follows what the query found, so a weak query's useful documents often lack the answer).
    """
    from zerosearch.reward import contains_answer
    from zerosearch.simtune.build import build_rows
    from zerosearch.simtune.label import interactions, label

    if any(world.entity(q.subject).group != "train" for q in questions):
        raise ValueError("simulation-tuning questions must all be about train people")
    if not 0.0 <= miss_share < 1.0:  # at 1 every miss is useful and no noisy target is left
        raise ValueError(f"miss_share must be in [0, 1), got {miss_share}")
    if labelling not in LABELLINGS:
        raise ValueError(f"labelling must be one of {', '.join(LABELLINGS)}, got {labelling!r}")
    rng = stream(world.seed, "simtune")
    records = collect_scripted(world, documents, questions, num_questions, queries_per_question, topk, rng)
    stats = SimtuneStats(candidates=len(records))
    kept = []
    for item in label(interactions(records), by="containment"):
        meta = dict(item["meta"])
        focus = meta.pop("focus")
        if item["label"] == "noisy":
            # No draw at share 0, so the paper's labelling keeps its random stream.
            if miss_share > 0 and rng.random() < miss_share:
                item = {**item, "label": "useful"}
                stats.useful_misses += 1
            elif contains_answer(" ".join(item["documents"]), focus):
                stats.dropped_noisy_naming_subject += 1
                if labelling == "engine":
                    kept.append({**item, "label": "useful", "meta": meta})
                continue
            elif labelling == "engine":  # what the engine found is also this query's useful-mode target
                kept.append({**item, "label": "useful", "meta": meta})
        kept.append({**item, "meta": meta})
    rows, built = build_rows(
        kept,
        template=SIMULATION_TEMPLATE,
        mode=mode,
        topk=topk,
        val_fraction=0.0,
        max_same_response=max_same_response,
        seed=world.seed,
    )
    stats.dropped_repeated_response = built.repeated_response + built.duplicates
    counts = built.per_split["train"]  # after deduplication and the cap on a repeated result list
    stats.useful, stats.noisy, stats.kept_per_label = counts["useful"], counts["noisy"], counts["kept"] // 2
    for row in rows["train"]:
        stats.kept_by_kind.setdefault(row["query_kind"], {"useful": 0, "noisy": 0})[row["label"]] += 1
    stats.kept_by_kind = dict(sorted(stats.kept_by_kind.items()))
    return rows["train"], stats


def audit_rows(world: World, rows: list[dict], count: int) -> list[dict]:
    """The first `count` single-hop rows of a dataset with the queries `zerosearch.simtune audit` asks about:
    `query` the full name and a relation word (what finds the answer with the real engine), `weak_query` the
    first name and a relation word (found for about half of the people)."""
    from toyworld.demos import question_from_row

    rng = stream(world.seed, "audit")
    out = []
    for row in rows:
        question = question_from_row(world, row)
        if question.hops != 1:
            continue
        queries = {kind: make_query(world, question, kind, rng, []) for kind in ("full", "first")}
        out.append({**row, "query": queries["full"], "weak_query": queries["first"]})
        if len(out) == count:
            break
    return out


def write_pairs(rows: list[dict], path: str | Path) -> Path:
    """Write pairs as parquet (same rows, same bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not rows:
        raise ValueError(f"{path}: no simulation-tuning pairs to write")
    pq.write_table(pa.Table.from_pylist(rows), path, compression="zstd")
    return path
