"""``GET /metrics``: the Prometheus exposition, outside the FHIR base.

The metrics hold no PHI (see ``fhir_sched.metrics``), but they do reveal volumes (bookings
an hour, holds pending), so with auth on they need a bearer token: the static
``FHIR_SCHED_METRICS_TOKEN`` a Prometheus scrape config carries (``authorization:
credentials_file``), compared in constant time. With auth on and no token set, the endpoint
answers 401 and says which setting to set. With ``FHIR_SCHED_AUTH=none`` it is open, like
everything else.

Gauges that live in the store (holds pending) are read at scrape time, within a time limit,
so a scrape every 15 s costs one indexed count and a slow store leaves the last value.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..metrics import CONTENT_TYPE, HOLDS_PENDING, render
from ..metrics_share import gather

COUNT_SECONDS = 2.0


def metrics_route(token: str | None, pending_holds: Callable[[], Awaitable[int]],
                  shared: Path | None = None) -> Route:
    """``token``: the bearer token scrapes must carry, or None when the endpoint is open;
    ``shared``: the directory ``--workers`` processes leave their metrics in (all of them
    answer, labelled by worker), or None for this process alone."""
    expected = f"Bearer {token}".encode() if token else None
    produce: Callable[[], bytes] = render if shared is None else partial(gather, shared)

    async def metrics(request: Request) -> Response:
        if token is not None:
            given = request.headers.get("authorization", "").encode("latin-1", "replace")
            if expected is None or not hmac.compare_digest(given, expected):
                why = ("set FHIR_SCHED_METRICS_TOKEN and send it as a bearer token"
                       if expected is None else "a valid metrics bearer token is required")
                return PlainTextResponse(why + "\n", 401, headers={
                    "www-authenticate": 'Bearer realm="metrics"', "cache-control": "no-store"})
        with contextlib.suppress(Exception):  # a slow or absent store: keep the last value
            HOLDS_PENDING.set(await asyncio.wait_for(pending_holds(), COUNT_SECONDS))
        body = await asyncio.to_thread(produce)  # the collectors read /proc: off the loop
        return Response(body, headers={"content-type": CONTENT_TYPE,
                                       "cache-control": "no-store"})

    return Route("/metrics", metrics, methods=["GET"])
