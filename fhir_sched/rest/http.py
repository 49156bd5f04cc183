"""HTTP details of the FHIR API: media types, body limits, version headers, Prefer.

Kept apart from the route handlers so that operations and interactions share one reading of
the rules (RFC 7232 weak ETags as FHIR uses them, ``Prefer: return=``, JSON or XML).

Handlers speak JSON only. The format is negotiated once per request (``_format``, then
``Accept`` with quality values, then the request body's own type) and applied at the edges:
``parse_body`` reads an XML body into the JSON form before any validation, and
``FhirResponse`` converts its JSON to XML as it is sent, for every answer including errors.
A JSON answer never pays for this beyond one scan of the request headers.
"""

from __future__ import annotations

import zlib
from datetime import UTC
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..context import RequestContext
from ..errors import FhirError, bad_request
from ..numbers import MAX_INT64, plain_int
from ..storage.base import Record
from ..timeutil import parse_instant
from .fhirxml import XmlError, json_to_xml, parse_xml

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
XML_TYPES = ("application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir")
PATCH_JSON = "application/json-patch+json"
FORM = "application/x-www-form-urlencoded"
_FORMAT_JSON = {"json", *JSON_TYPES}
_FORMAT_XML = {"xml", *XML_TYPES}
_XML_CONTENT_TYPE = (FHIR_XML + "; charset=utf-8").encode("latin-1")
_STATE_KEY = "fhir_format"

Format = Literal["json", "xml"]


def _format_param(query_string: bytes) -> str | None:
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key == "_format":
            return value
    return None


def _format_of(value: str) -> Format | None:
    # an unencoded "+" in "_format=application/fhir+xml" arrives as a space
    kind = value.split(";")[0].strip().lower().replace(" ", "+")
    if kind in _FORMAT_JSON:
        return "json"
    if kind in _FORMAT_XML:
        return "xml"
    return None


def _media_format(kind: str) -> Format | Literal["any"] | None:
    if kind in JSON_TYPES or kind.endswith("+json"):
        return "json"
    if kind in XML_TYPES or kind.endswith("+xml"):
        return "xml"
    if kind in ("*/*", "application/*", "text/*", ""):
        return "any"
    return None


def _accept_format(accept: str) -> Format | Literal["any"] | None:
    """The best acceptable format by quality; at equal quality a named type wins over a
    wildcard, then the one listed first. ``None``: nothing we produce is acceptable."""
    best: tuple[float, int, int] | None = None
    chosen: Format | Literal["any"] | None = None
    for i, part in enumerate(accept.split(",")):
        kind, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        fmt = _media_format(kind.lower())
        if fmt is None or q <= 0:
            continue
        rank = (q, 0 if fmt == "any" else 1, -i)
        if best is None or rank > best:
            best, chosen = rank, fmt
    return chosen


def negotiate(scope: Scope) -> Format | None:
    """The request's answer format: ``_format``, else ``Accept``, else the format of its body
    (a client that sent XML and named no preference reads XML back), else JSON. ``None`` when
    the client asked only for formats this server does not produce."""
    state = scope.setdefault("state", {})
    if _STATE_KEY in state:
        return state[_STATE_KEY]  # type: ignore[no-any-return]
    accept = content_type = None
    for key, value in scope.get("headers", ()):
        if key == b"accept":
            accept = value.decode("latin-1")
        elif key == b"content-type":
            content_type = value.decode("latin-1")
    result: Format | None
    fmt = _format_param(scope.get("query_string", b"")) if b"_format" in scope.get(
        "query_string", b"") else None
    if fmt is not None:
        result = _format_of(fmt)
    else:
        chosen = _accept_format(accept) if accept and accept.strip() else "any"
        if chosen == "any":
            body_is_xml = (content_type is not None
                           and content_type.split(";")[0].strip().lower() in XML_TYPES)
            result = "xml" if body_is_xml else "json"
        else:
            result = chosen
    state[_STATE_KEY] = result
    return result


def _may_want_xml(scope: Scope) -> bool:
    """A cheap test that is false for every request that certainly gets JSON."""
    if b"_format" in scope.get("query_string", b""):
        return True
    return any(key in (b"accept", b"content-type") and b"xml" in value.lower()
               for key, value in scope.get("headers", ()))


class FhirResponse(Response):
    """A FHIR answer: built from JSON (stored bytes or values), sent as XML when the request
    negotiated XML."""

    media_type = FHIR_JSON + "; charset=utf-8"

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.body and _may_want_xml(scope) and negotiate(scope) == "xml":
            self.body = json_to_xml(bytes(self.body))
            self.raw_headers = [
                *((k, v) for k, v in self.raw_headers
                  if k not in (b"content-type", b"content-length")),
                (b"content-length", str(len(self.body)).encode("latin-1")),
                (b"content-type", _XML_CONTENT_TYPE),
            ]
        await super().__call__(scope, receive, send)


def base_url(request: Request, configured: str, base_path: str) -> str:
    return scope_base_url(request.scope, configured, base_path)


def scope_base_url(scope: Scope, configured: str, base_path: str) -> str:
    if configured:
        return configured.rstrip("/")
    # What Starlette's ``request.base_url`` gives when the client sent a Host header (HTTP/1.1
    # always does), without building and parsing a URL object on every request's hot path.
    for key, value in scope["headers"]:
        if key == b"host":
            root = scope.get("app_root_path", scope.get("root_path", ""))
            return (f"{scope.get('scheme', 'http')}://{value.decode('latin-1')}"
                    f"{root.rstrip('/')}{base_path}")
    return str(Request(scope).base_url).rstrip("/") + base_path


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
    if negotiate(request.scope) is not None:
        return
    fmt = request.query_params.get("_format")
    if fmt is not None:
        raise FhirError(406, "not-supported", f"_format {fmt!r} is not supported; use json "
                        "or xml")
    raise FhirError(406, "not-supported", f"cannot produce {request.headers.get('accept')!r}; "
                    f"this server produces {FHIR_JSON} and {FHIR_XML}")


def check_content_type(request: Request, allowed: tuple[str, ...] = JSON_TYPES) -> str:
    """The body's media type; wherever a FHIR JSON resource is taken, FHIR XML is too (read
    by ``parse_body``)."""
    raw = request.headers.get("content-type")
    if raw is None:
        return allowed[0]
    kind = raw.split(";")[0].strip().lower()
    charset = next((p.split("=", 1)[1].strip().strip('"').lower() for p in raw.split(";")[1:]
                    if p.strip().lower().startswith("charset=")), "utf-8")
    if charset not in ("utf-8", "utf8"):
        raise FhirError(415, "not-supported", f"charset {charset!r}: FHIR bodies are UTF-8")
    if kind in allowed or (kind in XML_TYPES and FHIR_JSON in allowed):
        return kind
    if kind in XML_TYPES and PATCH_JSON in allowed:
        raise FhirError(415, "not-supported", f"PATCH takes a JSON Patch ({PATCH_JSON}); "
                        "FHIRPath Patch in XML is not supported")
    raise FhirError(415, "not-supported",
                    f"content type {kind!r} is not accepted here; use {' or '.join(allowed)}")


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, within ``limit`` bytes after decoding: ``Content-Encoding`` gzip or deflate
    is inflated as it arrives and the limit applies to what it inflates to (a small bomb is
    refused as soon as it grows past it); a UTF-8 byte order mark is dropped and a UTF-16 one
    refused (FHIR bodies are UTF-8)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise FhirError(415, "not-supported", f"Content-Encoding {encoding!r} is not "
                        "supported; send gzip, deflate or none")
    inflate = None if encoding == "identity" else zlib.decompressobj(
        wbits=31 if "gzip" in encoding else 15)
    declared = request.headers.get("content-length")
    if declared is not None:
        size_declared = plain_int(declared)
        if size_declared is None:
            raise bad_request("Content-Length is not a number")
        if size_declared > limit:
            raise FhirError(413, "too-costly", f"body of {declared} bytes exceeds the limit of "
                            f"{limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            if inflate is not None:
                chunk = inflate.decompress(chunk, limit + 1 - size)
                if inflate.unconsumed_tail:  # more would come out than the limit allows
                    size = limit + 1
            size += len(chunk)
            if size > limit:
                raise FhirError(413, "too-costly", f"body exceeds the limit of {limit} bytes"
                                + (" once decompressed" if inflate is not None else ""))
            chunks.append(chunk)
        if inflate is not None:
            chunks.append(inflate.flush())
            if not inflate.eof:
                raise bad_request(f"the {encoding} body is truncated")
    except zlib.error:
        raise bad_request(f"the body is not valid {encoding} data") from None
    body = b"".join(chunks)
    if body.startswith(_UTF16_BOMS):
        raise FhirError(415, "not-supported", "the body is UTF-16; FHIR bodies are UTF-8")
    return body.removeprefix(b"\xef\xbb\xbf")


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise bad_request("the request body is empty; a FHIR JSON resource was expected")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"malformed JSON: {exc}") from None


def parse_body(raw: bytes, kind: str) -> Any:
    """A request body of the media type ``check_content_type`` returned, in the JSON form, so
    that one validation path serves both formats."""
    if kind not in XML_TYPES:
        return parse_json(raw)
    if not raw.strip():
        raise bad_request("the request body is empty; a FHIR XML resource was expected")
    try:
        return parse_xml(raw)
    except XmlError as exc:
        raise FhirError(400, "structure", f"invalid FHIR XML: {exc.message}",
                        expression=[exc.location] if exc.location else None) from None


def parse_etag(value: str | None, header: str) -> int | None:
    if value is None:
        return None
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    version = plain_int(v)
    if version is None:
        raise bad_request(f"{header} must be a version ETag such as W/\"3\", got {value!r}")
    return min(version, MAX_INT64)  # past any stored version: it simply does not match


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
