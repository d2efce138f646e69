"""Searching while generating: the agent loop in lockstep turns vs overlapped, against a fixed-latency engine.

A tiny policy that searches (the toy tokenizer and model factory, fitted here for a few seconds to
trajectories of one or two searches with a think block of 1-24 words, so turn lengths vary under sampling)
runs 32 trajectories (8 questions x 4) of up to 3 search rounds through the real transformers rollout,
sampled at temperature 1 with a seed. The search engine answers every request after a fixed latency (a
sleep; each request on its own, so any number can be in flight) with five documents. Two runs of the same
rollout:

- lockstep (`agent.overlap_search=false`): every turn generates all active trajectories together, then
  waits for all of the turn's searches;
- overlapped (`agent.overlap_search=true`): a trajectory's search starts the moment its generation ends
  (continuous batching hands each row back the step it ends), and its next generation joins the running
  batch the moment its search returns.

Alternated, 5 runs each, per latency (50, 100, 300 ms); medians. Printed: wall time per rollout, the time
the engine waited for search, searches and generated tokens per trajectory (the same work on both sides),
and the ratio overlapped / lockstep. Target: at most 0.9x at the latency where search takes the share of
the lockstep rollout nearest to the 30% a quiet demo step showed. (The gain is bounded: a trajectory's own
chain of generations and searches still runs in order, so what can be hidden is the smaller of the two.)

    python -m benchmarks bench_overlap
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from llm_agent.generation import GenerationConfig, LLMGenerationManager
from llm_agent.search import SearchRequest, SearchResult
from verl.workers.rollout.base import RolloutSamplingParams
from verl.workers.rollout.hf import HFRollout

QUESTIONS, SAMPLES = 8, 4
LATENCIES_S = (0.05, 0.1, 0.3)
TARGET_SHARE = 0.3
TARGET_RATIO = 0.9
RUNS = 5
EXAMPLES, STEPS = 32, 100
CONFIG = GenerationConfig(max_turns=3, max_tokens_per_turn=48, max_response_length=400, max_obs_length=48)
WORDS = [
    "amber",
    "birch",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "grove",
    "heron",
    "iris",
    "juniper",
    "kestrel",
    "lumen",
]
THOUGHTS = [
    "maybe",
    "first",
    "then",
    "check",
    "recall",
    "again",
    "so",
    "hence",
    "likely",
    "note",
    "wait",
    "hmm",
]


class FixedLatencyEngine:
    """A search engine that answers each request after `latency_s` with five documents naming the query."""

    def __init__(self, latency_s: float):
        self.latency_s = latency_s

    def search(self, requests: list[SearchRequest]) -> list[SearchResult]:
        time.sleep(self.latency_s)
        return [
            SearchResult([f"{r.query} holds code {WORDS[k]}." for k in range(5)], latency_s=self.latency_s)
            for r in requests
        ]

    async def asearch(self, requests: list[SearchRequest]) -> list[SearchResult]:
        return self.search(requests)

    def close(self) -> None:
        return None


def question(k: int) -> str:
    return f"Question: which code does {WORDS[k % len(WORDS)]} {WORDS[(k * 5 + 3) % len(WORDS)]} hold?"


def prompt_ids(tokenizer, text: str) -> list[int]:
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(chat, add_special_tokens=False)["input_ids"]


def trajectories(rng: random.Random) -> list[list[tuple[str, bool]]]:
    """The fitting data: per trajectory, its text pieces and whether each is the policy's (after the prompt):
    one to three searches of two words each, after a think block of 1-16 words (of their own vocabulary,
    so the fitted model keeps the format and varies only in length), then an answer."""
    engine, out = FixedLatencyEngine(0.0), []
    for k in range(EXAMPLES):
        pieces = []
        for _ in range(rng.choice((1, 2, 2, 3))):
            query = " ".join(rng.sample(WORDS, 2))
            think = " ".join(rng.choices(THOUGHTS, k=rng.randint(1, 16)))
            (result,) = engine.search([SearchRequest(query)])
            documents = "".join(f"Doc {i + 1}: {d}\n" for i, d in enumerate(result.documents))
            pieces.append((f"<think> {think} </think>\n<search> {query} </search>", True))
            pieces.append((f"\n\n<information>{documents}</information>\n\n", False))
        pieces.append((f"<answer> {rng.choice(WORDS)} </answer>", True))
        out.append([(question(k), False), *pieces])
    return out


def fitted_policy(folder: Path) -> Path:
    """The toy tokenizer (trained on the fitting data, so each word is a token) and tiny model, fitted on
    the trajectories (loss on policy tokens only)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toyworld.tiny import build_tiny_model, train_tokenizer

    data = trajectories(random.Random(0))
    texts = [text for pieces in data for text, _ in pieces] * 4
    model_dir = build_tiny_model(
        train_tokenizer(texts, folder / "tokenizer", vocab_size=512), folder / "model"
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    examples = []
    for (prompt, _), *pieces in data:
        parts = [(prompt_ids(tokenizer, prompt), False)]
        parts += [(tokenizer(text, add_special_tokens=False)["input_ids"], policy) for text, policy in pieces]
        parts.append(([tokenizer.eos_token_id], True))
        ids = [t for part, _ in parts for t in part]
        examples.append((ids, [t if policy else -100 for part, policy in parts for t in part]))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    width = max(len(ids) for ids, _ in examples)
    ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in examples])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in examples])
    mask = torch.arange(width) < torch.tensor([[len(i)] for i, _ in examples])
    for _ in range(STEPS):
        loss = model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder / "policy")
    tokenizer.save_pretrained(folder / "policy")
    return folder / "policy"


def rollout_once(rollout: HFRollout, latency_s: float, overlap: bool, seed: int) -> dict:
    tokenizer = rollout.tokenizer
    manager = LLMGenerationManager(
        rollout, FixedLatencyEngine(latency_s), tokenizer, replace(CONFIG, overlap_search=overlap)
    )
    prompts = [prompt_ids(tokenizer, question(k)) for k in range(QUESTIONS) for _ in range(SAMPLES)]
    start = time.perf_counter()
    result = manager.run(prompts, [{}] * len(prompts), RolloutSamplingParams(temperature=1.0, seed=seed))
    wall = time.perf_counter() - start
    trajs = result.trajectories
    return {
        "wall_s": wall,
        "search_wait_s": result.search_wait_s,
        "searches": statistics.mean(t.stats.searches for t in trajs),
        "tokens": statistics.mean(sum(t.response_mask) for t in trajs),
        "answered": statistics.mean(t.stats.answered for t in trajs),
    }


def main() -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        torch.set_num_threads(2)
        rollout = HFRollout(fitted_policy(Path(tmp)), device="cpu")
        print(f"policy fitted in {time.perf_counter() - start:.1f} s; the rollouts run on one thread")
        torch.set_num_threads(1)
        rollout_once(rollout, 0.0, True, seed=99)  # warm-up
        ratios, shares = {}, {}
        for latency in LATENCIES_S:
            runs: dict[bool, list[dict]] = {False: [], True: []}
            for run in range(RUNS):
                for overlap in (False, True) if run % 2 == 0 else (True, False):
                    runs[overlap].append(rollout_once(rollout, latency, overlap, seed=run))
            print(
                f"search latency {latency * 1000:.0f} ms, {QUESTIONS * SAMPLES} trajectories, {RUNS} runs each:"
            )
            for overlap, name in ((False, "lockstep"), (True, "overlapped")):
                med = {key: statistics.median(r[key] for r in runs[overlap]) for key in runs[overlap][0]}
                walls = ", ".join(f"{r['wall_s']:.2f}" for r in runs[overlap])
                print(
                    f"  {name:10s} wall {med['wall_s']:.2f} s ({walls}); search wait {med['search_wait_s']:.2f} s "
                    f"({med['search_wait_s'] / med['wall_s']:.0%}); per trajectory {med['searches']:.2f} searches, "
                    f"{med['tokens']:.1f} policy tokens, answered {med['answered']:.2f}"
                )
            lockstep = runs[False]
            shares[latency] = statistics.median(r["search_wait_s"] / r["wall_s"] for r in lockstep)
            ratios[latency] = statistics.median(r["wall_s"] for r in runs[True]) / statistics.median(
                r["wall_s"] for r in runs[False]
            )
            print(f"  overlapped / lockstep: {ratios[latency]:.2f}x")
    # The target is set where search takes the share of a lockstep rollout that a quiet demo step showed.
    latency = min(LATENCIES_S, key=lambda lat: abs(shares[lat] - TARGET_SHARE))
    ok = ratios[latency] <= TARGET_RATIO
    print(
        f"overlapped / lockstep at {latency * 1000:.0f} ms (search {shares[latency]:.0%} of the lockstep rollout, "
        f"the nearest to {TARGET_SHARE:.0%}): {ratios[latency]:.2f}x (target <= {TARGET_RATIO}x): "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
