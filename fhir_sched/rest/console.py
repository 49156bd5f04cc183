"""The front-desk console (``/console/``) and the booking widget script (``/widget/booking.js``):
built files served as they are, from ``fhir_sched/static/`` (built from ``console/`` by
``npm run build``; committed, so installing the server needs no Node, and a test rebuilds
them from the lock file and compares).

The console is a SMART app like any other: it reads ``config.json`` (this server's FHIR base,
whether auth is on, its client id and scopes) and talks only to the public FHIR API. Its pages
carry a strict Content-Security-Policy: scripts, styles and connections from this origin only,
no inline script or style, no framing (an EHR that embeds it names itself in
``FHIR_SCHED_CONSOLE_FRAME_ANCESTORS``). Hashed assets are cached for a year; the pages and
the widget (whose URL clinics paste into their sites, so it cannot change) are revalidated
with an ETag.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..settings import Settings
from .http import base_url

STATIC = Path(__file__).resolve().parent.parent / "static"
CONSOLE_CLIENT_ID = "fhir-sched-console"
# What the console asks for: the scheduling resources it writes, the directory and patients it
# reads, KPIs, and its own live-update subscription.
CONSOLE_SCOPE = ("openid fhirUser launch user/Appointment.cruds "
                 "user/Slot.cruds user/Schedule.rs user/Patient.rs user/Practitioner.rs "
                 "user/PractitionerRole.rs user/Location.rs user/HealthcareService.rs "
                 "user/Device.rs user/Measure.rs user/MeasureReport.rs user/Subscription.cruds")
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"


def csp(frame_ancestors: str) -> str:
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "
            f"frame-ancestors {frame_ancestors or chr(39) + 'none' + chr(39)}")


def console_routes(settings: Settings, auth_on: bool) -> list[Route]:
    policy = csp(settings.console_frame_ancestors)
    root = STATIC / "console"

    def page(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            return _file(request, root / name, _REVALIDATE, policy)

        return serve

    async def asset(request: Request) -> Response:
        name = str(request.path_params["name"])
        path = (root / "assets" / name).resolve()
        if path.parent != (root / "assets").resolve():
            return _missing()
        return _file(request, path, _IMMUTABLE, policy)

    async def config(request: Request) -> Response:
        body = {"fhirBase": base_url(request, settings.public_base, settings.base_path),
                "auth": "smart" if auth_on else "none", "clientId": CONSOLE_CLIENT_ID,
                "scope": CONSOLE_SCOPE}
        return Response(orjson.dumps(body), media_type="application/json",
                        headers={"cache-control": "no-store"})

    async def widget(request: Request) -> Response:
        response = _file(request, STATIC / "widget" / "booking.js", "public, max-age=300", None)
        response.headers["access-control-allow-origin"] = "*"
        response.headers["cross-origin-resource-policy"] = "cross-origin"
        return response

    async def to_console(request: Request) -> Response:
        return RedirectResponse("/console/", 308)

    return [Route("/console", to_console, methods=["GET"]),
            Route("/console/", page("index.html"), methods=["GET"]),
            Route("/console/index.html", page("index.html"), methods=["GET"]),
            Route("/console/launch.html", page("launch.html"), methods=["GET"]),
            Route("/console/config.json", config, methods=["GET"]),
            Route("/console/assets/{name}", asset, methods=["GET"]),
            Route("/widget/booking.js", widget, methods=["GET"])]


def _missing() -> Response:
    return Response("not found\n", 404, media_type="text/plain")


_CACHE: dict[Path, tuple[float, bytes, str]] = {}


def _read(path: Path) -> tuple[bytes, str] | None:
    """The file's bytes and ETag, kept in memory (the files change only with a new build)."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    cached = _CACHE.get(path)
    if cached is None or cached[0] != mtime:
        body = path.read_bytes()
        cached = _CACHE[path] = (mtime, body,
                                 '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"')
    return cached[1], cached[2]


def _file(request: Request, path: Path, cache: str, policy: str | None) -> Response:
    found = _read(path) if path.is_file() else None
    if found is None:
        return _missing()
    body, etag = found
    headers = {"etag": etag, "cache-control": cache}
    if policy is not None:
        headers["content-security-policy"] = policy
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        kind += "; charset=utf-8"
    return Response(body, 200, media_type=kind, headers=headers)
