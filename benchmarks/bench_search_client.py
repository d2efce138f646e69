"""Search client throughput: our async backend vs the reference's 10-thread pool of blocking calls.

A stand-in simulation server (a real HTTP server in its own process on 127.0.0.1) answers every
`POST /v1/chat/completions` after sleeping 50 ms without blocking, so it serves any number of requests at
once and the server's own cost stays out of the comparison. 320 simulation requests (five searches for
each of a 64-question batch, the paper's training step) are sent twice in the same run:

- ours: `simulate_sft` with its default settings (64 in flight, one pooled session);
- reference: a 10-worker ThreadPoolExecutor, each worker doing blocking `httpx.Client.post` calls.

Both send the same chat payload. Each side gets one warm-up batch, then the best of three timed batches
counts. Target: ours takes at least 5x less wall time.

    python -m benchmarks bench_search_client
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from llm_agent.search import SearchRequest
from zerosearch.search import SimulateConfig, SimulateSFTBackend
from zerosearch.search.simulate import row_context
from zerosearch.templates import simulation_messages
from zerosearch.utils.serving import ServerProcess, find_free_port

N_REQUESTS = 320
SERVICE_S = 0.05
TARGET_RATIO = 5.0
REPEATS = 3
DOCUMENTS = "\n".join(
    f"Doc {i}: a simulated document of about thirty words for the query." for i in range(1, 6)
)


def serve(host: str, port: int) -> None:
    """The stand-in server: 50 ms of asynchronous "generation", then five documents.

    A minimal HTTP/1.1 keep-alive server on asyncio streams (both clients send bodies with Content-Length):
    its own cost per request is a few tens of microseconds, so the measurement is about the clients.
    """
    body = json.dumps(
        {
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": DOCUMENTS}}
            ]
        }
    ).encode()
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    (
                        int(line.split(":", 1)[1])
                        for line in lines
                        if line.lower().startswith("content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                if not lines[0].startswith("GET /health"):
                    await asyncio.sleep(SERVICE_S)
                writer.write(ok)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> None:
        server = await asyncio.start_server(handle, host, port, backlog=1024)
        await server.serve_forever()

    asyncio.run(run())


def requests() -> list[SearchRequest]:
    return [
        SearchRequest(f"query {i}", row_context(f"question {i}?", (f"answer {i}",)))
        for i in range(N_REQUESTS)
    ]


def time_ours(backend: SimulateSFTBackend, batch: list[SearchRequest]) -> float:
    start = time.perf_counter()
    results = backend.search(batch)
    elapsed = time.perf_counter() - start
    assert all(len(r.documents) == 5 for r in results), "our client got incomplete results"
    return elapsed


def time_reference(
    pool: ThreadPoolExecutor, client: httpx.Client, url: str, batch: list[SearchRequest]
) -> float:
    def one(req: SearchRequest) -> str:
        context = req.context
        messages = simulation_messages(
            req.query, context["question"], list(context["golden_answers"]), useful=True
        )
        body = {"model": "m", "messages": messages, "max_tokens": 600, "temperature": 0.8, "top_p": 1.0}
        response = client.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]

    start = time.perf_counter()
    texts = list(pool.map(one, batch))
    elapsed = time.perf_counter() - start
    assert all(texts), "the reference client got empty replies"
    return elapsed


def main() -> bool:
    batch = requests()
    server = ServerProcess("benchmarks.bench_search_client", ["serve"], find_free_port(), startup_timeout=60)
    with (
        server,
        SimulateSFTBackend(SimulateConfig(urls=server.url, model="m")) as backend,
        httpx.Client(limits=httpx.Limits(max_connections=10)) as client,
        ThreadPoolExecutor(10) as pool,
    ):
        time_ours(backend, batch[:64])
        time_reference(pool, client, server.url, batch[:64])
        ours, reference = [], []
        for _ in range(REPEATS):  # interleaved, so a busy moment on the machine hits both sides
            ours.append(time_ours(backend, batch))
            reference.append(time_reference(pool, client, server.url, batch))
    best_ours, best_ref = min(ours), min(reference)
    ratio = best_ref / best_ours
    ideal = N_REQUESTS / backend.config.concurrency * SERVICE_S
    print(f"{N_REQUESTS} requests, {SERVICE_S * 1000:.0f} ms service time each")
    print(
        f"  ours (concurrency {backend.config.concurrency}): {best_ours:.3f} s  (ideal {ideal:.3f} s; "
        f"runs {', '.join(f'{t:.3f}' for t in ours)})"
    )
    print(
        f"  reference (10 threads, blocking httpx): {best_ref:.3f} s  (ideal {N_REQUESTS / 10 * SERVICE_S:.3f} s; "
        f"runs {', '.join(f'{t:.3f}' for t in reference)})"
    )
    print(f"  ratio: {ratio:.1f}x less wall time (target >= {TARGET_RATIO:.0f}x)")
    return ratio >= TARGET_RATIO


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="stand-in simulation server for this benchmark")
    parser.add_argument("mode", choices=["serve"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(args.host, args.port)
