"""Per-request observation: the metrics every request feeds and its one request-log line.

Fed by the request-id middleware, the outermost layer, so it times everything the app does
and sees the id the log line must carry. What it records is bounded and free of PHI by
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

from starlette.types import Scope

from ..metrics import DISCONNECTS, REQUEST_SECONDS, REQUESTS

access = logging.getLogger("fhir_sched.access")
_STATUS = {n: str(n) for n in range(100, 600)}


class Recorder:
    """What one finished request feeds: the metrics and, when on, its log line. Called by
    the request-id middleware: one layer fewer on every request than a middleware of its
    own."""

    def __init__(self, known_paths: frozenset[str] = frozenset(),
                 log_requests: bool = True) -> None:
        self.known_paths = known_paths
        self.log_requests = log_requests

    def __call__(self, scope: Scope, status: int, started: float,
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
            DISCONNECTS.inc(())
        else:
            REQUESTS.inc((interaction, type_, _STATUS.get(status) or str(status)))
            REQUEST_SECONDS.observe((interaction,), seconds)
        if (self.log_requests and access.isEnabledFor(logging.INFO)) or disconnected:
            access.info("client disconnected" if disconnected else "request", extra={
                "request_id": state.get("request_id", ""), "method": scope["method"],
                "route": template, "status": status, "duration_ms": round(seconds * 1000, 3),
                "interaction": interaction, "type": type_})
