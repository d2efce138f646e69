"""Throughput of the built-in simulation server: continuous batching at concurrency 32 vs one client at a time.

A tiny simulator (toy-world size: hidden 128, 2 layers) is built in a temp folder and served for real on
127.0.0.1. Every request is the prompt-mode simulation prompt (a few hundred tokens; its query its own, so no
two requests are the same text: they share the template's opening, as in training) sent as a chat
completion, asking for 96 new tokens (ignore_eos, so every request costs the same). Completed requests per
second ("documents/s": one request is one set of simulated documents) are measured at concurrency 1 (8
requests) and then at concurrency 32 (64 requests) against the same server, in 3 rounds (the ratio of each
round, back to back, and their median: this machine's speed drifts between runs), twice: with the server's
default torch threads (all cores: how `python -m zerosearch.simulation.server` runs) and with one thread
(how the demo runs its simulator beside the trainer). Target: with the default threads, the median ratio is
at least 8x.
The printed decode steps and rows per step show whether the batch stays full.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from toyworld.tiny import build_tiny_model, train_tokenizer
from zerosearch.templates import load_template, render
from zerosearch.utils.serving import ServerProcess, find_free_port

MAX_TOKENS = 96
TARGET_RATIO = 8.0
ROUNDS, SINGLE, BATCHED = 3, 8, 64
QUESTIONS = [
    ("Where was Alice Smith born?", "Paris", "Alice Smith birthplace"),
    ("Which company does Bob Jones work for?", "Acme Corporation", "Bob Jones employer"),
    ("When did the Zephyr Bridge open?", "1932", "Zephyr Bridge opening year"),
    ("Who founded Orbital Gardens?", "Carla Mendez", "Orbital Gardens founder"),
]


def simulation_prompts(count: int = 4 + ROUNDS * (SINGLE + BATCHED)) -> list[str]:
    """`count` different simulation prompts: the four questions in turn, each request with a query of its
    own (as in training, no two requests are the same text; they share the template's opening)."""
    template = load_template("project_prompt_useful")
    prompts = []
    for k in range(count):
        q, a, s = QUESTIONS[k % len(QUESTIONS)]
        prompts.append(render(template, question=q, answer=a, query=f"{s} {k}"))
    return prompts


def build_model(workdir: Path, prompts: list[str]) -> Path:
    tokenizer_dir = train_tokenizer(prompts * 10, workdir / "tokenizer", vocab_size=1024)
    return build_tiny_model(tokenizer_dir, workdir / "model")


def messages(prompt: str) -> list[dict]:
    """The simulation request layout (docs/design.md §3): an empty system message, the prompt as the user's."""
    return [{"role": "system", "content": ""}, {"role": "user", "content": prompt}]


async def run_load(url: str, prompts: list[str], concurrency: int) -> float:
    """Send one chat completion per prompt with at most `concurrency` in flight; return completed requests/s."""
    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        body = {
            "messages": messages(prompts[i]),
            "max_tokens": MAX_TOKENS,
            "temperature": 0.8,
            "seed": i,
            "ignore_eos": True,
        }
        async with gate:
            r = await client.post(f"{url}/v1/chat/completions", json=body)
        r.raise_for_status()
        if r.json()["usage"]["completion_tokens"] != MAX_TOKENS:
            raise RuntimeError(f"request {i} produced {r.json()['usage']['completion_tokens']} tokens")

    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        await asyncio.gather(*[one(client, i) for i in range(len(prompts))])
        return len(prompts) / (time.perf_counter() - start)


def measure(model_dir: Path, prompts: list[str], threads: int | None) -> float:
    """The median over `ROUNDS` rounds of (documents/s at concurrency 32) / (documents/s at concurrency 1),
    against one server with `threads` torch threads (None: the server's default, torch's choice); each round
    measures both back to back, so the machine's drift between rounds cancels. Prints every round."""
    args = ["--model", str(model_dir), "--max-batch-size", "32", "--max-wait-ms", "5", "--device", "cpu"]
    args += ["--num-threads", str(threads)] if threads else []
    ratios = []
    with ServerProcess("zerosearch.simulation.server", args, find_free_port()) as server:
        asyncio.run(run_load(server.url, prompts[:4], 4))  # warm-up
        label = f"{httpx.get(f'{server.url}/stats', timeout=10).json()['torch_threads']} thread(s)"
        print(f"{'default threads: ' if threads is None else ''}{label}:")
        for r in range(ROUNDS):
            start = 4 + r * (SINGLE + BATCHED)
            single = asyncio.run(run_load(server.url, prompts[start : start + SINGLE], 1))
            before = httpx.get(f"{server.url}/stats", timeout=10).json()
            batch = prompts[start + SINGLE : start + SINGLE + BATCHED]
            batched = asyncio.run(run_load(server.url, batch, 32))
            stats = httpx.get(f"{server.url}/stats", timeout=10).json()
            steps = stats["steps"] - before["steps"]
            rows_per_step = (stats["row_steps"] - before["row_steps"]) / steps
            busy = (stats["busy_s"] - before["busy_s"]) / (BATCHED / batched)
            ratios.append(batched / single)
            print(
                f"  round {r + 1}: concurrency 1 {single:6.2f} documents/s, concurrency 32 {batched:6.2f} "
                f"({steps} decode steps of {rows_per_step:.1f} rows on average, largest "
                f"{stats['max_batch_rows']}; engine busy {busy:.0%}): {ratios[-1]:.1f}x"
            )
    ratio = statistics.median(ratios)
    print(f"  median ratio: {ratio:.1f}x")
    return ratio


def main() -> bool:
    prompts = simulation_prompts()
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        model_dir = build_model(Path(tmp), prompts)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        rendered = tok.apply_chat_template(messages(prompts[0]), tokenize=False, add_generation_prompt=True)
        print(
            f"prompt: {len(tok(rendered, add_special_tokens=False)['input_ids'])} tokens, max_tokens {MAX_TOKENS}"
        )
        # The target is on the server as it runs by default (all cores); one thread, the setting the demo
        # gives its simulator beside the trainer, is reported beside it.
        ratio = measure(model_dir, prompts, None)
        measure(model_dir, prompts, 1)
    print(f"ratio with the default threads: {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x)")
    return ratio >= TARGET_RATIO


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
