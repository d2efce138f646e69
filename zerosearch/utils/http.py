"""What both HTTP servers (the simulation server, the retriever server) need to survive hostile clients.

* `error_response`: OpenAI's error body, {"error": {"message", "type", "param", "code"}}, for every 4xx/5xx.
* `BodySizeLimit`: refuses a body over the limit while it streams in, before it is held in memory.
* `ConnectionLimits` + `add_connection_arguments` + `serve`: uvicorn with bounded concurrency, a keep-alive
  timeout, and a request timeout that uvicorn lacks: a connection must deliver a whole request (headers and
  body) within `request_timeout_s` of opening (or of starting to send its next request), else it is closed, so
  half-sent requests cannot pile up until the process runs out of file descriptors.
* `RepeatedLogFilter`: the same log line at most once per interval (with a count of the ones dropped), so a
  failure that repeats in a tight loop (e.g. "Too many open files" on every accept) cannot fill the disk.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from dataclasses import dataclass

import h11
from fastapi.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("zerosearch.http")


def error_response(
    status: int, message: str, param: str | None = None, error_type: str = "invalid_request_error"
) -> JSONResponse:
    body = {"message": message, "type": error_type, "param": param, "code": status}
    return JSONResponse({"error": body}, status_code=status)


class BodySizeLimit:
    """ASGI middleware refusing request bodies over `max_bytes` with 413, before they are read into memory
    and parsed: by the declared Content-Length, and by counting the bytes of a body sent without one (then
    the 413 goes out as soon as the limit is passed and the app sees the client disconnect)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _error(self, size: str) -> JSONResponse:
        return error_response(
            413, f"request body is {size} bytes, over this server's limit of {self.max_bytes}"
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._error(declared.decode())(scope, receive, send)
            return
        received, refused, started = 0, False, False

        async def counting_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await self._error(f"more than {self.max_bytes}")(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:  # the 413 is already out; whatever the app answers to the disconnect is dropped
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


@dataclass(frozen=True)
class ConnectionLimits:
    """limit_concurrency: connections + requests in progress before new ones get 503 (None: derived from the
    file-descriptor limit); timeout_keep_alive: seconds an idle kept-alive connection stays open;
    request_timeout_s: seconds a connection has to deliver a whole request."""

    limit_concurrency: int | None = None
    timeout_keep_alive: float = 5.0
    request_timeout_s: float = 30.0

    def concurrency(self) -> int:
        if self.limit_concurrency is not None:
            return self.limit_concurrency
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Half the descriptors for connections; the rest for the model, the index, threads and logs.
        return max(16, soft // 2) if soft != resource.RLIM_INFINITY else 4096


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ConnectionLimits()
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=None,
        help="connections and requests in progress before new ones get 503 (default: half the open-file limit)",
    )
    parser.add_argument(
        "--timeout-keep-alive",
        type=float,
        default=defaults.timeout_keep_alive,
        help="seconds an idle keep-alive connection stays open",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=defaults.request_timeout_s,
        help="seconds a connection has to send a whole request (headers and body) before it is closed",
    )


def connection_limits(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ConnectionLimits:
    """The parsed flags, checked (errors name the flag)."""
    if args.limit_concurrency is not None and args.limit_concurrency < 1:
        parser.error(f"--limit-concurrency must be >= 1, got {args.limit_concurrency}")
    for flag, value in (
        ("--timeout-keep-alive", args.timeout_keep_alive),
        ("--request-timeout", args.request_timeout),
    ):
        if not value > 0:
            parser.error(f"{flag} must be > 0, got {value}")
    return ConnectionLimits(args.limit_concurrency, args.timeout_keep_alive, args.request_timeout)


def request_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a request timeout (see the module docstring)."""

    class RequestTimeoutH11(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._request_timer = None
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE or self.conn.their_state is h11.SEND_BODY:
                if self._request_timer is None:  # a request has started and is not complete yet
                    self._arm()
            else:
                self._disarm()  # the whole request is in (or the connection is ending)

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._request_timer = self.loop.call_later(seconds, self._timed_out)

        def _disarm(self) -> None:
            if self._request_timer is not None:
                self._request_timer.cancel()
                self._request_timer = None

        def _timed_out(self) -> None:
            self._request_timer = None
            if self.conn.their_state is h11.IDLE or self.conn.their_state is h11.SEND_BODY:
                log.warning("closing a connection that sent no whole request within %gs", seconds)
                self.transport.close()

    return RequestTimeoutH11


class RepeatedLogFilter(logging.Filter):
    """Passes a given (logger, message template) at most once per `interval_s`; the next one that passes
    says how many were dropped in between."""

    def __init__(self, interval_s: float = 10.0):
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) < self.interval_s:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg = (
                f"{record.msg} ({dropped} more like this in the last {self.interval_s:g}s not logged)"
            )
        return True


def serve(app, host: str, port: int, limits: ConnectionLimits) -> None:
    """Run `app` under uvicorn with the connection limits. uvicorn's loggers and asyncio's propagate to the
    root logger's handlers (the caller's logging.basicConfig), where repeated lines are rate-limited."""
    import uvicorn

    repeated = RepeatedLogFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(repeated)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level="info",
        access_log=False,
        http=request_timeout_protocol(limits.request_timeout_s),
        limit_concurrency=limits.concurrency(),
        timeout_keep_alive=limits.timeout_keep_alive,
    )
