"""Per-request observation: the metrics every request feeds and its one request-log line.

A pure-ASGI layer just inside the request-id one, so it times everything the app does and
sees the id the log line must carry. What it records is bounded and free of PHI by
construction: the route *template* (``/fhir/{type}/{id}``), never the path or the query
string (which carry ids, names and birth dates); the interaction and a hosted type name or
"other"; the status and the duration. Paths outside the FHIR base are recorded as
themselves only when they are the server's own fixed paths, else as "unmatched", so a scan
of random URLs cannot grow the label set.

A client that goes away before its answer is not a server fault: it is counted and logged at
INFO, and nothing is sent.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import DISCONNECTS, IN_FLIGHT, REQUEST_SECONDS, REQUESTS

access = logging.getLogger("fhir_sched.access")


class Observe:
    def __init__(self, app: ASGIApp, known_paths: frozenset[str] = frozenset(),
                 log_requests: bool = True) -> None:
        self.app = app
        self.known_paths = known_paths
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_status)
        except ClientDisconnect:
            self._record(scope, 499, started, disconnected=True)
            return
        except BaseException:
            self._record(scope, status or 500, started)
            raise
        finally:
            IN_FLIGHT.dec()
        self._record(scope, status, started)

    def _record(self, scope: Scope, status: int, started: float,
                disconnected: bool = False) -> None:
        seconds = time.perf_counter() - started
        state = scope.get("state") or {}
        route = state.get("route")
        if route is not None:
            interaction, type_, template = route
        else:
            path = scope["path"]
            template = path if path in self.known_paths else "unmatched"
            interaction, type_ = "other", ""
        if disconnected:
            DISCONNECTS.inc()
        else:
            REQUESTS.labels(interaction, type_, str(status)).inc()
            REQUEST_SECONDS.labels(interaction).observe(seconds)
        if self.log_requests or disconnected:
            access.info("client disconnected" if disconnected else "request", extra={
                "request_id": state.get("request_id", ""), "method": scope["method"],
                "route": template, "status": status, "duration_ms": round(seconds * 1000, 3),
                "interaction": interaction, "type": type_})
