"""The one REST adapter for every operation: HTTP in (query string, form or Parameters), the
operation's typed request, its Outcome out as a Bundle with the headers it implies."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import bad_request
from ..operations import OPERATIONS
from ..operations.base import Inputs, Operation, Outcome
from ..operations.definition import OperationDef, from_parameters, from_query
from ..service.services import Services
from ..timeutil import parse_instant
from .bundles import bundle, entry
from .capability import RouteSpec
from .http import (
    FORM,
    JSON_TYPES,
    FhirResponse,
    check_accept,
    check_content_type,
    context_for,
    parse_json,
    read_body,
)

Handler = Callable[[Request], Awaitable[Response]]


async def inputs(request: Request, op: OperationDef, limit: int) -> Inputs:
    """A GET's query string, or a POST's Parameters resource (or form, for GET-able ops)."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("_format",)]
    if request.method == "GET":
        return from_query(op, query)
    ctype = check_content_type(request, (*JSON_TYPES, FORM))
    raw = await read_body(request, limit)
    if ctype == FORM:
        try:
            form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise bad_request("the form body is not UTF-8") from None
        return from_query(op, query + form)
    if query:
        raise bad_request(f"POST ${op.code} takes its inputs in the Parameters body, not the "
                          "query string", [query[0][0]])
    return from_parameters(op, parse_json(raw))


def render(base: str, type_: str, outcome: Outcome,
           warnings: list[dict[str, Any]] | None = None) -> FhirResponse:
    """The Outcome as a searchset Bundle: its resources as matches, its total (a page's result
    size, or the entry count), its links under the FHIR base, and any warnings (the outcome's
    and the door's) as one OperationOutcome entry with search.mode outcome."""
    entries = []
    for res in outcome.resources:
        body = res if isinstance(res, bytes) else orjson.dumps(res)
        rid = (orjson.loads(body) if isinstance(res, bytes) else res).get("id")
        entries.append(entry(base, type_, rid, body, search={"mode": "match"}) if rid else {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": orjson.Fragment(body),
            "search": {"mode": "match"}})
    total = outcome.total if outcome.paged else len(entries)
    issues = [*outcome.issues, *(warnings or [])]
    if issues:
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
            "resourceType": "OperationOutcome", "issue": issues}, "search": {"mode": "outcome"}})
    headers: dict[str, str] = {}
    if outcome.version is not None:
        headers["ETag"] = f'W/"{outcome.version}"'
    if outcome.expires is not None:
        headers["Expires"] = format_datetime(parse_instant(outcome.expires), usegmt=True)
    links = [(rel, f"{base}/{url}") for rel, url in outcome.links]
    return FhirResponse(bundle("searchset", entries, total=total, links=links),
                        headers=headers)


def _resumed(request: Request, op: Operation[Any]) -> Any:
    """The request a paging link carries, or None when this is not one (``_cursor``)."""
    if op.resume is None or "_cursor" not in request.query_params:
        return None
    names = [k for k in request.query_params if k != "_format"]
    if request.method != "GET" or names != ["_cursor"] or len(
            request.query_params.getlist("_cursor")) != 1:
        raise bad_request("a _cursor carries the whole request: GET it alone, exactly as the "
                          "Bundle link gives it", ["_cursor"])
    return op.resume(request.query_params["_cursor"])


def _handler(services: Services, op: Operation[Any]) -> Handler:
    settings = services.settings

    async def handle(request: Request) -> Response:
        check_accept(request)
        ctx = context_for(request, settings.public_base, settings.base_path).through(
            "operation")
        req = _resumed(request, op)
        if req is None:
            values = await inputs(request, op.definition, settings.max_body_bytes)
            req = op.parse(values, request.path_params.get("id"))
        return render(ctx.base_url, op.resource_type, await op.run(services, ctx, req))

    return handle


def operation_routes(services: Services) -> Iterator[tuple[RouteSpec, Handler]]:
    """(RouteSpec, handler) for every operation, at each level it declares."""
    for op in OPERATIONS:
        handler = _handler(services, op)
        d = op.definition
        for level, methods in op.levels:
            path = (f"/{op.resource_type}/${d.code}" if level == "type"
                    else f"/{op.resource_type}/{{id}}/${d.code}")
            yield (RouteSpec(path, methods, "operation", level, (op.resource_type,), d.code,
                             d.url), handler)
