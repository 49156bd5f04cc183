"""HTTP details of the FHIR API: media types, body limits, version headers, Prefer.

Kept apart from the route handlers so that operations and interactions share one reading of
the rules (RFC 7232 weak ETags as FHIR uses them, ``Prefer: return=``, XML refused clearly).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..context import RequestContext
from ..errors import FhirError, bad_request
from ..storage.base import Record
from ..timeutil import parse_instant

FHIR_JSON = "application/fhir+json"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
XML_TYPES = ("application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir")
PATCH_JSON = "application/json-patch+json"
FORM = "application/x-www-form-urlencoded"
_FORMAT_JSON = {"json", "application/json", "application/fhir+json", "application/json+fhir"}


class FhirResponse(Response):
    media_type = FHIR_JSON + "; charset=utf-8"

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content)


def base_url(request: Request, configured: str, base_path: str) -> str:
    if configured:
        return configured.rstrip("/")
    # What Starlette's ``request.base_url`` gives when the client sent a Host header (HTTP/1.1
    # always does), without building and parsing a URL object on every request's hot path.
    scope = request.scope
    for key, value in scope["headers"]:
        if key == b"host":
            root = scope.get("app_root_path", scope.get("root_path", ""))
            return (f"{scope.get('scheme', 'http')}://{value.decode('latin-1')}"
                    f"{root.rstrip('/')}{base_path}")
    return str(request.base_url).rstrip("/") + base_path


def context_for(request: Request, configured_base: str, base_path: str) -> RequestContext:
    ctx = getattr(request.state, "fhir_ctx", None)
    if ctx is None:
        kwargs: dict[str, Any] = {"base_url": base_url(request, configured_base, base_path)}
        rid = getattr(request.state, "request_id", None)
        if rid:
            kwargs["request_id"] = rid
        ctx = RequestContext(**kwargs)
        request.state.fhir_ctx = ctx
    return ctx


def check_accept(request: Request) -> None:
    fmt = request.query_params.get("_format")
    if fmt is not None and fmt.split(";")[0].strip() not in _FORMAT_JSON:
        if "xml" in fmt:
            raise FhirError(406, "not-supported", "XML is not supported; this server speaks "
                            "FHIR JSON only (_format=json)")
        raise FhirError(406, "not-supported", f"_format {fmt!r} is not supported; use json")
    accept = request.headers.get("accept")
    if not accept:
        return
    kinds = [a.split(";")[0].strip().lower() for a in accept.split(",")]
    if any(k in JSON_TYPES or k in ("*/*", "application/*", "") or k.endswith("+json")
           for k in kinds):
        return
    if any(k in XML_TYPES for k in kinds):
        raise FhirError(406, "not-supported",
                        "XML is not supported; ask for application/fhir+json")
    raise FhirError(406, "not-supported",
                    f"cannot produce {accept!r}; this server produces application/fhir+json")


def check_content_type(request: Request, allowed: tuple[str, ...] = JSON_TYPES) -> str:
    raw = request.headers.get("content-type")
    if raw is None:
        return allowed[0]
    kind = raw.split(";")[0].strip().lower()
    if kind in allowed:
        return kind
    if kind in XML_TYPES:
        raise FhirError(415, "not-supported",
                        "XML is not supported; send application/fhir+json")
    raise FhirError(415, "not-supported",
                    f"content type {kind!r} is not accepted here; use {' or '.join(allowed)}")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise bad_request("Content-Length is not a number")
        if int(declared) > limit:
            raise FhirError(413, "too-costly", f"body of {declared} bytes exceeds the limit of "
                            f"{limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FhirError(413, "too-costly", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise bad_request("the request body is empty; a FHIR JSON resource was expected")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"malformed JSON: {exc}") from None


def parse_etag(value: str | None, header: str) -> int | None:
    if value is None:
        return None
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    if not v.isdigit():
        raise bad_request(f"{header} must be a version ETag such as W/\"3\", got {value!r}")
    return int(v)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(instant: str) -> str:
    """RFC 9110 IMF-fixdate of a stored ``meta.lastUpdated``; raises ValueError if it is none.

    Formatted by hand: ``email.utils.format_datetime`` goes through ``time.struct_time`` and
    costs several times as much, on every read.
    """
    dt = parse_instant(instant).astimezone(UTC)
    return (f"{_DAYS[dt.weekday()]}, {dt.day:02d} {_MONTHS[dt.month - 1]} {dt.year:04d} "
            f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} GMT")


def version_headers(rec: Record, base: str) -> dict[str, str]:
    return {
        "ETag": f'W/"{rec.version}"',
        "Last-Modified": http_date(rec.updated),
        "Content-Location": f"{base}/{rec.type}/{rec.id}/_history/{rec.version}",
    }


def prefer_return(request: Request) -> str:
    prefer = request.headers.get("prefer", "")
    for part in prefer.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() == "return":
            return value.strip().strip('"')
    return "representation"


def prefer_strict(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(p.strip().replace(" ", "") == "handling=strict" for p in prefer.split(","))
