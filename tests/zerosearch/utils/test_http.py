"""The servers' defences against slow and flooding clients (zerosearch/utils/http.py), on the real retriever
server: a request timeout uvicorn lacks, bounded concurrency, and repeated log lines rate-limited."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time

import httpx
import pytest

from zerosearch.utils.http import RepeatedLogFilter
from zerosearch.utils.serving import ServerProcess, find_free_port

REQUEST = b'{"queries": ["Paris"], "topk": 1}'


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"contents": f"Document {i} about Paris."}) + "\n" for i in range(5)))
    return path


def _server(corpus, *flags: str) -> ServerProcess:
    args = ["--corpus", str(corpus), *flags]
    return ServerProcess("zerosearch.retrieval.server", args, find_free_port(), env={"OMP_NUM_THREADS": "1"})


def _open(server: ServerProcess, first_bytes: bytes = b"") -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=30)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def _closed_after(sock: socket.socket, opened: float) -> float:
    """Seconds from `opened` until the server closed the connection (recv returns b"")."""
    while sock.recv(4096):
        pass
    return time.monotonic() - opened


def test_half_sent_and_silent_connections_are_closed_after_the_request_timeout(corpus):
    with _server(corpus, "--request-timeout", "1") as server:
        opened = time.monotonic()
        half = _open(server, b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n")
        silent = _open(server)
        body_missing = _open(server, b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{")
        waits = [_closed_after(s, opened) for s in (half, silent, body_missing)]
        # A slow client that does finish within the timeout is served.
        slow = _open(server, b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        time.sleep(0.4)
        slow.sendall(b"Content-Length: %d\r\n\r\n" % len(REQUEST) + REQUEST)
        reply = slow.recv(65536)
    assert all(0.5 < wait < 10 for wait in waits), waits
    assert reply.startswith(b"HTTP/1.1 200")


def test_a_flood_of_half_sent_requests_cannot_hold_the_server(corpus):
    """More half-sent requests than --limit-concurrency: newcomers get 503 while they are held, and once the
    request timeout has closed them the server answers again."""
    with _server(corpus, "--limit-concurrency", "4", "--request-timeout", "2") as server:
        flood = [_open(server, b"POST /retrieve HTTP/1.1\r\nHost: x\r\n") for _ in range(8)]
        time.sleep(0.3)
        during = httpx.post(f"{server.url}/retrieve", content=REQUEST, timeout=30).status_code
        deadline = time.monotonic() + 20
        after = during
        while after != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            after = httpx.post(f"{server.url}/retrieve", content=REQUEST, timeout=30).status_code
        for sock in flood:
            sock.close()
    assert during == 503 and after == 200


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--request-timeout", "0"), ("--timeout-keep-alive", "-1"), ("--limit-concurrency", "0")],
)
def test_bad_connection_flags_are_refused_by_name(flag, value, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "zerosearch.retrieval.server",
            "--corpus",
            str(tmp_path),
            "--port",
            "1",
            flag,
            value,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and flag in proc.stderr


def test_a_repeated_log_line_passes_once_per_interval_with_a_count_of_the_dropped_ones():
    repeated = RepeatedLogFilter(interval_s=0.2)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)

    passed = [repeated.filter(record("socket.accept() out of system resource")) for _ in range(1000)]
    other = repeated.filter(record("something else"))
    time.sleep(0.25)
    again = record("socket.accept() out of system resource")
    assert sum(passed) == 1 and other and repeated.filter(again)
    assert "999 more like this" in again.msg
