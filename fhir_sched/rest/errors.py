"""Rendering failures as OperationOutcomes: client errors precisely, bugs as a 500 with an id."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..context import RequestContext
from ..errors import FhirError, outcome
from ..logsafe import describe
from ..service.audit import entry as audit_entry
from ..service.store_errors import as_fhir_error
from ..storage.errors import StoreError, StoreUnavailable
from .http import FhirResponse

log = logging.getLogger("fhir_sched")


def _rid(request: Request) -> str:
    ctx = getattr(request.state, "fhir_ctx", None)
    if ctx is not None:
        return str(ctx.request_id)
    # set by the front door before any handler runs, even when no context was built yet
    return str(getattr(request.state, "request_id", "") or request.headers.get("x-request-id")
               or "")


def _audit_failure(request: Request, status: int) -> None:
    """A refused or failed request in the audit trail: who, what path (never the query
    string, which can hold names and birth dates), the outcome."""
    core = getattr(request.app.state, "core", None)
    if core is None:
        return
    ctx = getattr(request.state, "fhir_ctx", None) or RequestContext(
        request_id=_rid(request) or RequestContext().request_id)
    path = request.url.path
    base = core.services.settings.base_path
    entity = path[len(base):].strip("/") if path.startswith(base) else path.strip("/")
    verb = {"GET": "read", "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete"}.get(request.method, request.method.lower())
    core.services.audit.later(audit_entry(ctx, verb, "4" if status < 500 else "8",
                                          entity=entity[:200] or None,
                                          detail=f"HTTP {status}"))


async def fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    headers = dict(exc.headers)
    _audit_failure(request, exc.status)
    return FhirResponse(exc.outcome(), status_code=exc.status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
    msg = {404: f"no FHIR endpoint at {request.url.path}",
           405: f"{request.method} is not allowed on {request.url.path}"}.get(
        exc.status_code, str(exc.detail))
    headers = dict(exc.headers or {})
    return FhirResponse(outcome("error", code, msg), status_code=exc.status_code, headers=headers)


async def validation_error(request: Request, exc: Exception) -> Response:
    return FhirResponse(outcome("error", "invalid", f"invalid request: {exc}"), status_code=400)


async def store_error(request: Request, exc: Exception) -> Response:
    """Every storage error, rendered as the service layer says it reads to a client."""
    assert isinstance(exc, StoreError)
    if isinstance(exc, StoreUnavailable):
        log.warning("store unavailable for request %s: %s", _rid(request),
                    type(exc.__cause__ or exc).__name__)
    error = as_fhir_error(exc)
    if error.status >= 500 and not isinstance(exc, StoreUnavailable):
        return await unexpected(request, exc)
    return await fhir_error(request, error)


async def unexpected(request: Request, exc: Exception) -> Response:
    rid = _rid(request)
    # the type and the frames, not the message: messages carry the values that failed
    log.error("unexpected error in request %s: %s", rid, describe(exc))
    _audit_failure(request, 500)
    return FhirResponse(
        outcome("fatal", "exception", f"internal error; request id {rid}"),
        status_code=500, headers={"X-Request-Id": rid})


HANDLERS: dict[type[BaseException], Callable[[Request, Exception], Awaitable[Response]]] = {
    FhirError: fhir_error,
    HTTPException: http_error,
    RequestValidationError: validation_error,
    StoreError: store_error,
    # Only the fallback for failures outside the request-id middleware: Starlette runs this
    # handler in its outermost middleware, which re-raises after answering, and uvicorn then
    # closes the keep-alive connection. Route failures are answered by the front door.
    Exception: unexpected,
}
