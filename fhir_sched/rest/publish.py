"""SMART Scheduling Links over HTTP: ``GET [base]/$bulk-publish`` (the manifest) and
``GET [base]/$bulk-publish/{file}`` (its NDJSON files), from ``service/publish.py``.

Open to anyone when publishing is on (``FHIR_SCHED_PUBLISH``): the spec asks for open
endpoints, and what is published holds no patient data; off, both are a 404 that says how to
turn it on. Whatever the ``Accept`` header, the manifest is JSON and a file NDJSON (the spec:
no header, ``application/json`` and ``application/fhir+ndjson`` must all work). Every answer
carries an ETag, Last-Modified and ``Cache-Control: max-age`` (the polling hint the spec
asks for), and a matching ``If-None-Match`` or ``If-Modified-Since`` gets a 304.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import FhirError
from ..service.publish import File, Publication
from ..service.services import Services
from ..timeutil import date_range, format_instant, from_us, parse_instant
from .capability import RouteSpec
from .http import context_for

Handler = Callable[[Request], Awaitable[Response]]
PATH = "/$bulk-publish"
DEFINITION = "https://fhir-sched.org/fhir/OperationDefinition/bulk-publish"
NDJSON = "application/fhir+ndjson"


def publish_routes(services: Services) -> list[tuple[RouteSpec, Handler]]:
    """The manifest, for the router and the CapabilityStatement."""
    return [(RouteSpec(PATH, ("GET",), "operation", "system", (), "bulk-publish", DEFINITION),
             _manifest(services))]


def publish_file_routes(services: Services) -> list[tuple[str, tuple[str, ...], Handler]]:
    """The files: not FHIR interactions, so not listed in the statement."""
    return [(PATH + "/{file}", ("GET",), _file(services))]


def _since(request: Request) -> str | None:
    raw = request.query_params.get("_since")
    if raw is None:
        return None
    try:
        return format_instant(from_us(date_range(raw, require_offset=True)[0]))
    except ValueError as exc:
        raise FhirError(400, "invalid", f"_since: {exc}", expression=["_since"]) from None


async def _publication(services: Services) -> Publication:
    publisher = services.publisher
    if not publisher.enabled:
        raise FhirError(404, "not-found", "this server publishes no schedules; set "
                        "FHIR_SCHED_PUBLISH (all, or the Schedules and actors to publish)")
    return await publisher.current()


def _headers(services: Services, pub: Publication, etag: str) -> dict[str, str]:
    return {"etag": etag, "last-modified": format_datetime(parse_instant(pub.made), usegmt=True),
            "cache-control": f"public, max-age={services.settings.publish_refresh_seconds}"}


def _not_modified(request: Request, pub: Publication, etag: str) -> bool:
    match = request.headers.get("if-none-match")
    if match is not None:
        return etag in [m.strip().removeprefix("W/") for m in match.split(",")] or match == "*"
    since = request.headers.get("if-modified-since")
    if since is None:
        return False
    try:
        return parse_instant(pub.made).replace(microsecond=0) <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False


async def _files_for(services: Services, pub: Publication, since: str | None
                     ) -> tuple[dict[str, File], str | None]:
    """The files to list or serve, and the _since they answer (None: everything)."""
    if since is None:
        return pub.files, None
    cut = await services.publisher.since(pub, since)
    return (pub.files, None) if cut is None else (cut, since)


def _manifest(services: Services) -> Handler:
    settings = services.settings

    async def manifest(request: Request) -> Response:
        pub = await _publication(services)
        files, since = await _files_for(services, pub, _since(request))
        base = context_for(request, settings.public_base, settings.base_path).base_url
        base = base.rstrip("/")
        tail = f"?_since={quote(since, safe='')}" if since else ""
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for f in files.values():
            item: dict[str, Any] = {"type": f.type, "url": f"{base}{PATH}/{f.name}{tail}"}
            if f.states:
                item["extension"] = {"state": list(f.states)}
            (errors if f.type == "OperationOutcome" else output).append(item)
        request_url = f"{base}{PATH}" + (f"?_since={quote(request.query_params['_since'], safe='')}"
                                         if "_since" in request.query_params else "")
        body = orjson.dumps({"transactionTime": pub.made, "request": request_url,
                             "requiresAccessToken": False, "output": output, "error": errors})
        etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
        headers = _headers(services, pub, etag)
        if _not_modified(request, pub, etag):
            return Response(status_code=304, headers=headers)
        return Response(body, 200, media_type="application/json", headers=headers)

    return manifest


def _file(services: Services) -> Handler:
    async def file(request: Request) -> Response:
        pub = await _publication(services)
        files, _ = await _files_for(services, pub, _since(request))
        found = files.get(str(request.path_params["file"]))
        if found is None:
            raise FhirError(404, "not-found", "no such file in this publication; read the "
                            f"manifest again ({PATH})")
        headers = _headers(services, pub, found.etag)
        if _not_modified(request, pub, found.etag):
            return Response(status_code=304, headers=headers)
        return Response(found.body, 200, media_type=NDJSON, headers=headers)

    return file
