"""A pure-ASGI request-id middleware: cheap enough for the read path, unlike BaseHTTPMiddleware.

The id (the client's ``X-Request-Id`` when it is short and plain: 1-64 of letters, digits and
``._:-``, which covers UUIDs and trace ids; else a new random one) is echoed on every response
and carried into the RequestContext, the audit trail and the log, so a 500 can be traced. What
a client sends beyond that (spaces, quotes, control or non-ASCII characters, a patient's name)
never reaches a log line or a header.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..ids import unique_id as new_request_id

_SAFE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, extra_headers: tuple[tuple[bytes, bytes], ...] = ()
                 ) -> None:
        self.app = app
        # Sent on every response (``x-fhir-sched-auth: none`` when auth is off).
        self.extra_headers = list(extra_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                headers.append((b"x-request-id", raw))
                have = {h[0] for h in headers}
                headers.extend(h for h in self.extra_headers if h[0] not in have)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Answered here rather than by Starlette's outer error middleware, which re-raises
            # into uvicorn: that logs the error twice and drops the client's keep-alive
            # connection, so the client's next request on it would fail too.
            if started:
                raise
            from .errors import unexpected

            response = await unexpected(Request(scope), exc)
            await response(scope, receive, send_with_id)
