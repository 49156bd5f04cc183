"""The front door: the one pure-ASGI layer every HTTP request passes first.

It does the edge's per-request jobs in one place, because each middleware layer is a call,
a closure and a send wrapper on every request, and five of them cost more than a read's
store lookup (measured with ``bench/rest_bench.py``):

- the request id: the client's ``X-Request-Id`` when it is short and plain (1-64 of
  letters, digits and ``._:-``, which covers UUIDs and trace ids), else a new one; echoed on
  every response and carried into the RequestContext, the audit trail and the log, so a 500
  can be traced. What a client sends beyond that (spaces, quotes, control or non-ASCII
  characters, a patient's name) never reaches a log line or a header;
- the Host rule (``hosts.HostCheck``) when no ``--base-url`` is set: a 400 that carries the id;
- the request time limit (``edge.Deadlines``): 503 with an OperationOutcome when it runs out;
- gzip for the responses of clients that asked for it (``edge.gzip_wanted``);
- the metrics and the request-log line (``observe.Recorder``), and a client that went away
  mid-request counted and logged at INFO, not as a fault;
- an unexpected error answered as a 500 OperationOutcome here, not by Starlette's outer error
  middleware, which re-raises into uvicorn: that logs the error twice and drops the client's
  keep-alive connection, so the client's next request on it would fail too.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..ids import request_id as new_request_id
from ..metrics import IN_FLIGHT
from .edge import Deadlines, gzip_layer, gzip_wanted
from .hosts import HostCheck
from .observe import Recorder

_SAFE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")
_FHIR_JSON = b"application/fhir+json; charset=utf-8"
log = logging.getLogger("fhir_sched.edge")


class FrontDoor:
    def __init__(self, app: ASGIApp, extra_headers: tuple[tuple[bytes, bytes], ...] = (),
                 recorder: Recorder | None = None, hosts: HostCheck | None = None,
                 request_seconds: float = 120.0) -> None:
        self.app = app
        self.gzipped = gzip_layer(app)
        self.record = recorder or Recorder()
        self.hosts = hosts
        self.deadlines = Deadlines(request_seconds)
        # Sent on every response (``x-fhir-sched-auth: none`` when auth is off).
        self.extra_headers = list(extra_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        rid = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if _SAFE_ID.fullmatch(value):
                    rid = value.decode("ascii")
                break
        rid = rid or new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        raw = rid.encode("latin-1")
        started = False
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                headers.append((b"x-request-id", raw))
                have = {h[0] for h in headers}
                headers.extend(h for h in self.extra_headers if h[0] not in have)
                message["headers"] = headers
            await send(message)

        if self.hosts is not None:
            refused = self.hosts.refusal(scope["headers"])
            if refused is not None:
                await _answer(send_with_id, 400, refused)
                self.record(scope, 400, began)
                return
        task = asyncio.current_task()
        assert task is not None, "ASGI apps run in a task"
        self.deadlines.enter(task)
        IN_FLIGHT.value += 1
        try:
            app = self.gzipped if gzip_wanted(scope) else self.app
            await app(scope, receive, send_with_id)
        except ClientDisconnect:  # gone before its answer: not a fault, and nobody to tell
            self.record(scope, 499, began, disconnected=True)
            return
        except asyncio.CancelledError:
            if not self.deadlines.expired(task):
                raise  # shutdown or the server's own cancellation: theirs to handle
            task.uncancel()
            log.info("request %s %s stopped after %g s", scope["method"], rid,
                     self.deadlines.seconds)
            if started:  # too late for a status: cut the response short
                self.record(scope, status, began)
                raise TimeoutError("request time limit") from None
            await _answer(send_with_id, 503, self.deadlines.outcome(), [(b"retry-after", b"5")])
        except Exception as exc:
            if started:
                self.record(scope, status, began)
                raise
            from .errors import unexpected

            response = await unexpected(Request(scope), exc)
            await response(scope, receive, send_with_id)
        finally:
            IN_FLIGHT.value -= 1
            self.deadlines.leave(task)
        self.record(scope, status, began)


async def _answer(send: Send, status: int, body: bytes,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", _FHIR_JSON), (b"content-length", str(len(body)).encode()),
        *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
