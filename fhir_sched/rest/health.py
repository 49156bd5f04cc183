"""Liveness and readiness for orchestrators and load balancers, outside the FHIR base and
without a token: they say whether to restart the process and whether to send it traffic, and
nothing about the data.

``/healthz`` answers from the process alone (the event loop runs), so a slow store never gets
a healthy process restarted. ``/readyz`` checks what serving needs: startup finished (schema
and migrations applied, keys loaded), the store answers a ping within ``PING_SECONDS``, and
every listener beside HTTP (the MLLP door) is accepting; it turns 503 as shutdown begins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PING_SECONDS = 2.0
_NO_STORE = {"cache-control": "no-store"}


class Listening(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def ready(self) -> bool: ...


def health_routes(ping: Callable[[], Awaitable[None]], doors: Sequence[Listening],
                  started: Callable[[], bool]) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers=_NO_STORE)

    async def readyz(request: Request) -> Response:
        checks: dict[str, Any] = {"started": started()}
        try:
            await asyncio.wait_for(ping(), PING_SECONDS)
            checks["store"] = True
        except Exception:  # unreachable, timed out, closed: not ready, whatever the cause
            checks["store"] = False
        for door in doors:
            checks[door.name] = door.ready
        ok = all(v is True for v in checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                            200 if ok else 503, headers=_NO_STORE)

    return [Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"])]
