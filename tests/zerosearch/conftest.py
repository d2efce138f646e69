"""Real HTTP servers on 127.0.0.1 for tests that need a scripted peer (search backends, simulators): uvicorn
in a background thread on an already bound socket."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn


class ThreadedServer:
    """uvicorn on an already bound 127.0.0.1 socket (no port race), in a daemon thread."""

    def __init__(self, app):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"test server at {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def serve():
    """serve(app) -> base URL of a fresh server on 127.0.0.1; every server is stopped after the test."""
    servers: list[ThreadedServer] = []

    def start(app) -> str:
        server = ThreadedServer(app).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()
