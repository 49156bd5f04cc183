"""Limits at the edge, where uvicorn has none (issue 13): how long a client may take to send
its headers and its body, how many headers of what size, and how long a request may run.

uvicorn (0.55, httptools) times out an idle keep-alive connection but not one that is sending:
a client that trickles its headers a byte a second, or never finishes a chunked body, holds
its connection, its buffers and a task for as long as it likes, and a few hundred such clients
hold the server. ``EdgeProtocol`` is uvicorn's own httptools protocol with three timers and
two counters added, so parsing, pipelining, flow control and shutdown stay uvicorn's:

- a new connection must complete its first request's headers within ``header_seconds``, and
  each later request its headers within the same time of its first byte (slowloris);
- once the headers are in, the body must arrive within ``body_seconds`` (an endless or
  trickled body); past it the client gets 408 and the connection is closed;
- more than ``max_headers`` headers, or more than ``max_header_bytes`` of them, is a 431.

``Deadlines`` bounds the whole request inside the app (``request_seconds``): a handler
still running then is cancelled and, if nothing was sent yet, answered 503 with an
OperationOutcome. A write already handed to the store may still commit (its outcome is then
unknown to the client, as with any timeout); a retry with the same conditional headers is safe.
Each cut is logged at INFO with the peer address only.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..settings import Settings

log = logging.getLogger("fhir_sched.edge")


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    header_seconds: float = 10.0
    body_seconds: float = 60.0
    max_headers: int = 100
    max_header_bytes: int = 16 * 1024


class _HeadersTooLarge(Exception):
    pass


def _plain_response(status: bytes, text: str) -> bytes:
    body = text.encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


def limits_of(settings: Settings) -> EdgeLimits:
    return EdgeLimits(header_seconds=settings.http_header_seconds,
                      body_seconds=settings.http_body_seconds,
                      max_headers=settings.http_max_headers,
                      max_header_bytes=settings.http_max_header_bytes)


def __getattr__(name: str) -> Any:
    """``fhir_sched.rest.edge:EnvEdgeProtocol``: the protocol with the limits of the
    environment's settings, by import path, for worker processes (``--workers``), which
    uvicorn starts afresh and hands the protocol by name, not as a class object."""
    if name == "EnvEdgeProtocol":
        return edge_protocol(limits_of(Settings.from_env()))
    raise AttributeError(name)


def edge_protocol(limits: EdgeLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``limits``: pass as ``uvicorn.run(http=...)``."""

    class EdgeProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._edge_timer: asyncio.TimerHandle | None = None
            self._header_count = 0
            self._header_bytes = 0
            self._too_large = False
            self._arm(limits.header_seconds, self._headers_late)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, seconds: float, handler: Any) -> None:
            self._disarm()
            self._edge_timer = self.loop.call_later(seconds, handler)

        def _disarm(self) -> None:
            if self._edge_timer is not None:
                self._edge_timer.cancel()
                self._edge_timer = None

        def _cut(self, status: bytes, why: str) -> None:
            if self.transport.is_closing():
                return
            log.info("http connection from %s cut: %s", self.client[0] if self.client else "?",
                     why)
            if self.cycle is None or self.cycle.response_complete or not \
                    self.cycle.response_started:
                self.transport.write(_plain_response(status, why))
            self.transport.close()

        def _headers_late(self) -> None:
            self._edge_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being answered; its own limits apply
            if not self.transport.is_closing():
                if self._header_count or self.__dict__.get("url"):
                    self._cut(b"408 Request Timeout",
                              f"headers not complete within {limits.header_seconds:g} s")
                else:  # connected and said nothing: not worth an answer
                    self.transport.close()

        def _body_late(self) -> None:
            self._edge_timer = None
            self._cut(b"408 Request Timeout",
                      f"body not complete within {limits.body_seconds:g} s")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_count = 0
            self._header_bytes = 0
            self._arm(limits.header_seconds, self._headers_late)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            self._header_bytes += len(name) + len(value) + 4
            if self._header_count > limits.max_headers or \
                    self._header_bytes > limits.max_header_bytes:
                self._too_large = True
                raise _HeadersTooLarge()
            super().on_header(name, value)

        def send_400_response(self, msg: str) -> None:
            if self._too_large:
                self._cut(b"431 Request Header Fields Too Large",
                          f"at most {limits.max_headers} headers and "
                          f"{limits.max_header_bytes} bytes of them")
                return
            super().send_400_response(msg)

        def on_headers_complete(self) -> None:
            self._arm(limits.body_seconds, self._body_late)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # the idle keep-alive timer is uvicorn's; a pipelined request already has its own
            if self.cycle is not None and self.cycle.response_complete and not self.pipeline:
                self._disarm()

    return EdgeProtocol


class Deadlines:
    """How long a request may run (``request_seconds``), without a timer per request.

    One watchdog task per event loop looks at the requests in flight a few times a second and
    cancels those past their deadline; the front door, which registered the task, tells that
    cancellation (``expired``) from any other and answers 503. An ``asyncio.timeout`` per
    request armed and cancelled a loop timer on every request, ~3% of a read, and a 120 s
    limit needs no finer grain than a tick."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.tick = min(1.0, seconds / 4)
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def enter(self, task: asyncio.Task[Any]) -> None:
        loop = task.get_loop()
        dog = self._watchdog
        if dog is None or dog.done() or dog.get_loop() is not loop:
            self._watchdog = loop.create_task(self._run(loop))
        self._deadlines[task] = loop.time() + self.seconds

    def leave(self, task: asyncio.Task[Any]) -> bool:
        """Forget ``task``; True when it was cancelled for running out of time."""
        self._deadlines.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def expired(self, task: asyncio.Task[Any]) -> bool:
        return task in self._expired

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    def outcome(self) -> bytes:
        return orjson.dumps({"resourceType": "OperationOutcome", "issue": [{
            "severity": "error", "code": "timeout",
            "diagnostics": f"the request took longer than {self.seconds:g} s and was "
                           "stopped; a write it made may still have been saved"}]})


def gzip_wanted(scope: Scope) -> bool:
    """Compress this response if big enough: the client asked for gzip, and it is not one of
    the authorization server's pages and tokens under ``/auth`` (compressing a secret beside
    text an attacker chooses leaks it: BREACH)."""
    if scope["path"].startswith("/auth"):
        return False
    for k, v in scope["headers"]:
        if k == b"accept-encoding":
            return b"gzip" in v.lower()
    return False


def gzip_layer(app: ASGIApp, minimum_size: int = 1024) -> ASGIApp:
    """Starlette's GZipMiddleware (large bodies compressed off the event loop), used only
    for requests ``gzip_wanted`` picks: its responder wraps every send and parses every
    header, a fifth of a read's cost, which a client that never asked should not pay."""
    from starlette.middleware.gzip import GZipMiddleware

    return GZipMiddleware(app, minimum_size=minimum_size, compresslevel=5)
