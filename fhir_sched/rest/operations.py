"""The one REST adapter for every operation: HTTP in (query string, form or Parameters), the
operation's typed request, its Outcome out as a Bundle with the headers it implies."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import FhirError, bad_request
from ..operations import OPERATIONS
from ..operations.base import Operation, Outcome
from ..operations.definition import Checked, OperationDef, from_parameters, from_query
from ..operations.logical import resolve
from ..service.services import Services
from ..service.store_errors import as_fhir_error
from ..storage.errors import StoreUnavailable
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
    parse_body,
    prefer_strict,
    read_body,
)

Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger("fhir_sched")


# Search-result parameters a POST may carry in its query string beside a Parameters body: the
# Argonaut IG invokes ``POST [base]/Appointment/$find?{_count}``.
_QUERY_ON_POST = frozenset({"_count", "_total"})
# How to render the answer, not inputs of the operation (FHIR http.html general parameters).
_FORMATTING = frozenset({"_format", "_pretty"})


async def inputs(request: Request, op: OperationDef, limit: int) -> Checked:
    """A GET's query string, or a POST's Parameters resource (or form, for GET-able ops).
    Unknown names are ignored and reported, or refused under ``Prefer: handling=strict``."""
    strict = prefer_strict(request)
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in _FORMATTING]
    if request.method == "GET":
        return from_query(op, query, strict)
    ctype = check_content_type(request, (*JSON_TYPES, FORM))
    raw = await read_body(request, limit)
    if ctype == FORM:
        try:
            form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise bad_request("the form body is not UTF-8") from None
        return from_query(op, query + form, strict)
    stray = [k for k, _ in query if k not in _QUERY_ON_POST or op.lookup(k) is None]
    if stray:
        raise bad_request(f"POST ${op.code} takes its inputs in the Parameters body, not the "
                          "query string", [stray[0]])
    return from_parameters(op, parse_body(raw, ctype), strict, extra=query)


def ignored_issues(op: OperationDef, ignored: tuple[str, ...]) -> list[dict[str, Any]]:
    """Warnings for unknown inputs that were ignored, as FHIR search reports them."""
    return [{"severity": "warning", "code": "not-supported",
             "diagnostics": f"parameter {name!r} is not known to ${op.code} and was ignored "
                            "(send Prefer: handling=strict to have it refused)",
             "expression": [name]} for name in ignored]


def render(base: str, type_: str, outcome: Outcome,
           warnings: list[dict[str, Any]] | None = None) -> FhirResponse:
    """The Outcome as a searchset Bundle: its resources as matches, its total (a page's result
    size, or the entry count), its links under the FHIR base, and any warnings (the outcome's
    and the door's) as one OperationOutcome entry with search.mode outcome."""
    if outcome.single:
        (res,) = outcome.resources
        return FhirResponse(res)
    entries = []
    for res in outcome.resources:
        body = res if isinstance(res, bytes) else orjson.dumps(res)
        rid = (orjson.loads(body) if isinstance(res, bytes) else res).get("id")
        entries.append(entry(base, type_, rid, body, search={"mode": "match"}) if rid else {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": orjson.Fragment(body),
            "search": {"mode": "match"}})
    total = outcome.total if outcome.paged else len(entries)
    entries += [entry(base, type_, res["id"], orjson.dumps(res), search={"mode": "include"})
                for res in outcome.included]
    issues = [*outcome.issues, *(warnings or [])]
    if issues:
        entries.append(_outcome_entry({"resourceType": "OperationOutcome", "issue": issues}))
    headers: dict[str, str] = {}
    if outcome.version is not None:
        headers["ETag"] = f'W/"{outcome.version}"'
    if outcome.expires is not None:
        headers["Expires"] = format_datetime(parse_instant(outcome.expires), usegmt=True)
    links = [(rel, f"{base}/{url}") for rel, url in outcome.links]
    return FhirResponse(bundle("searchset", entries, total=total, links=links),
                        headers=headers)


def _outcome_entry(oo: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": oo, "search": {"mode": "outcome"}}


def refusal(op: OperationDef, exc: FhirError, warnings: list[dict[str, Any]]) -> FhirResponse:
    """How an operation says no, in the shape IHE ITI Scheduling gives each transaction; the
    HTTP status stays the error's (4xx), so plain FHIR clients read it as any failure.

    - ``$hold``, ITI-116 2:3.116.4.2.3: "For the case where the Appointment is not available to
      be held, the server SHALL return an OperationOutcome with at least one issue with severity
      of fatal and code of not-found for the Appointment resource", and 2:3.116.4.2.2: an
      unsuccessful $hold "SHALL return only an OperationOutcome resource". Not available is a
      409 (the time is taken, the hold expired, the appointment is no longer proposed): the
      cause stays the first issue and the IHE issue follows it.
    - ``$book``, ITI-117 2:3.117.4.2.2: "An unsuccessful $book operation SHALL return only an
      OperationOutcome resource within the Bundle": a searchset Bundle whose one entry is the
      OperationOutcome (search.mode outcome), total 0.
    - ``$find`` (ITI-115 2:3.115.4.2.4: 4xx with an OperationOutcome) keeps the plain shape.
    """
    oo = exc.outcome()
    oo["issue"] += warnings
    if op.code == "hold" and exc.status == 409:
        for issue in oo["issue"]:
            if issue.get("severity") == "error":
                issue["severity"] = "fatal"
        oo["issue"].insert(1, {
            "severity": "fatal", "code": "not-found",
            "diagnostics": "the appointment is not available to be held: " + exc.diagnostics,
            "expression": ["Appointment"]})
    body: dict[str, Any] | bytes = oo
    if op.code == "book":
        body = bundle("searchset", [_outcome_entry(oo)], total=0)
    return FhirResponse(body, status_code=exc.status, headers=dict(exc.headers))


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
        warnings: list[dict[str, Any]] = []
        try:
            req = _resumed(request, op)
            if req is None:
                checked = await inputs(request, op.definition, settings.max_body_bytes)
                warnings = ignored_issues(op.definition, checked.ignored)
                values = await resolve(services, ctx, op.definition, checked.values)
                req = op.parse(values, request.path_params.get("id"))
            outcome = await op.run(services, ctx, req)
        except FhirError as exc:
            return refusal(op.definition, exc, warnings)
        except StoreUnavailable as exc:  # still a refusal in the transaction's shape (ITI-117)
            log.warning("store unavailable for request %s: %s", ctx.request_id, type(exc).__name__)
            return refusal(op.definition, as_fhir_error(exc), warnings)
        return render(ctx.base_url, op.resource_type, outcome, warnings)

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
