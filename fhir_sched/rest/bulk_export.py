"""FHIR Bulk Data Access 2.0 ``$export`` over HTTP: kick-off, status, download, delete.

- ``GET [base]/$export`` (system level: every hosted type) and ``GET [base]/Patient/$export``
  (every patient's compartment) with ``Prefer: respond-async``, optional ``_type``, ``_since``
  and ``_outputFormat`` (NDJSON only): 202 with ``Content-Location`` the status URL.
- ``GET`` the status URL: 202 with ``X-Progress`` and ``Retry-After`` while it runs; 200 with
  the manifest once done; 500 with an OperationOutcome if it failed. ``DELETE`` it: 202, the
  job and its files are gone.
- ``GET`` a file URL from the manifest: the NDJSON, ``application/fhir+ndjson``; the manifest
  says ``requiresAccessToken``, and the same caller's token is needed.

Every request passes the bearer gate like the rest of the FHIR base (SMART Backend Services
``system/*.rs`` is the intended caller); the kick-off checks that the caller may search each
type exported, and a patient-scoped token is refused, since an export is not confined to one
patient's compartment. Parameters the server does not support (``_typeFilter``, ``patient``,
``_elements``, ``includeAssociatedData``) are refused, not ignored: silently exporting more
than asked for is worse than saying no.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from ..errors import FhirError, bad_request
from ..resources.registry import HOSTED_TYPES
from ..search.compartment import PATIENT_COMPARTMENT
from ..service.audit import entry as audit_entry
from ..service.authorization import Interaction
from ..service.bulk import export_types
from ..service.export_jobs import Job, expires
from ..service.services import Services
from ..timeutil import format_instant, parse_instant
from .capability import RouteSpec
from .http import FhirResponse, check_accept, context_for

Handler = Callable[[Request], Awaitable[Response]]
DEFINITION = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export|2.0.0"
PATIENT_DEFINITION = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export|2.0.0"
NDJSON = ("application/fhir+ndjson", "application/ndjson", "ndjson")
UNSUPPORTED = ("_typeFilter", "patient", "_elements", "includeAssociatedData")
STATUS, FILE = "$export-status", "$export-file"
_NO_STORE = {"cache-control": "no-store"}


def export_routes(services: Services) -> list[tuple[RouteSpec, Handler]]:
    """The two kick-off routes, for the router and the CapabilityStatement."""
    return [
        (RouteSpec("/$export", ("GET",), "operation", "system", (), "export", DEFINITION),
         _kickoff(services, "system")),
        (RouteSpec("/Patient/$export", ("GET",), "operation", "type", ("Patient",), "export",
                   PATIENT_DEFINITION), _kickoff(services, "patient")),
    ]


def job_routes(services: Services) -> list[tuple[str, tuple[str, ...], Handler]]:
    """Status and file routes: not FHIR interactions, so not listed in the statement."""
    return [(f"/{STATUS}/{{job}}", ("GET", "DELETE"), _status(services)),
            (f"/{FILE}/{{job}}/{{file}}", ("GET",), _file(services))]


def _kickoff(services: Services, level: str) -> Handler:
    settings = services.settings

    async def kickoff(request: Request) -> Response:
        check_accept(request)
        ctx = context_for(request, settings.public_base, settings.base_path)
        prefer = request.headers.get("prefer", "").replace(" ", "")
        if "respond-async" not in prefer.split(","):
            raise bad_request("$export runs asynchronously: send Prefer: respond-async")
        params = request.query_params
        for name in UNSUPPORTED:
            if name in params:
                raise FhirError(400, "not-supported", f"$export does not support {name} here",
                                expression=[name])
        fmt = params.get("_outputFormat")
        if fmt is not None and fmt not in NDJSON:
            raise bad_request(f"_outputFormat {fmt!r} is not supported; use "
                              "application/fhir+ndjson", expression=["_outputFormat"])
        allowed = (list(HOSTED_TYPES) if level == "system"
                   else ["Patient", *sorted(PATIENT_COMPARTMENT)])
        wanted = [t.strip() for v in params.getlist("_type") for t in v.split(",") if t.strip()]
        try:
            types = export_types(wanted or [t for t in allowed if t in HOSTED_TYPES])
        except ValueError as exc:
            raise bad_request(str(exc), expression=["_type"]) from None
        outside = [t for t in types if t not in allowed]
        if outside:
            raise bad_request(f"a Patient-level export holds the Patient compartment; "
                              f"{', '.join(outside)} is not in it", expression=["_type"])
        since = params.get("_since")
        if since is not None:
            try:
                since = format_instant(parse_instant(since))
            except ValueError:
                raise bad_request(f"_since {since!r} is not a FHIR instant",
                                  expression=["_since"]) from None
        policy = services.resources.authorizer
        for t in types:
            if policy.needs_content(ctx, t):
                raise FhirError(403, "forbidden", "an export is not confined to one patient; "
                                "it needs system or user scopes, not patient ones")
            policy.check(ctx, Interaction.SEARCH, t)
        job = await services.exports.start(ctx, level, types, since, str(request.url))
        services.audit.later(audit_entry(ctx, "export", detail=f"{level} export of "
                                         f"{', '.join(types)}", action="R"))
        return Response(status_code=202, headers={
            "content-location": f"{ctx.base_url}/{STATUS}/{job.id}", **_NO_STORE})

    return kickoff


def _status(services: Services) -> Handler:
    settings = services.settings
    ttl = services.exports.ttl

    async def status(request: Request) -> Response:
        ctx = context_for(request, settings.public_base, settings.base_path)
        job_id = request.path_params["job"]
        if request.method == "DELETE":
            await services.exports.delete(ctx, job_id)
            return Response(status_code=202, headers=_NO_STORE)
        job = await services.exports.get(ctx, job_id)
        if job.state in ("queued", "running"):
            return Response(status_code=202, headers={
                "x-progress": _progress(job), "retry-after": "2", **_NO_STORE})
        if job.state == "error":
            return FhirResponse({"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "exception", "diagnostics": job.error}]},
                status_code=500, headers=_NO_STORE)
        base = f"{ctx.base_url}/{FILE}/{job.id}"
        return JSONResponse({
            "transactionTime": job.transaction_time, "request": job.request,
            "requiresAccessToken": True,
            "output": [{"type": o["type"], "url": f"{base}/{o['type']}.ndjson",
                        "count": o["count"]} for o in job.output],
            "error": []}, headers={"expires": expires(job, ttl), **_NO_STORE})

    return status


def _progress(job: Job) -> str:
    if job.state == "queued":
        return "queued"
    return f"{job.done_types} of {len(job.types)} types exported"


def _file(services: Services) -> Handler:
    settings = services.settings

    async def download(request: Request) -> Response:
        ctx = context_for(request, settings.public_base, settings.base_path)
        job = await services.exports.get(ctx, request.path_params["job"])
        name = request.path_params["file"]
        if not name.endswith(".ndjson"):
            raise FhirError(404, "not-found", f"no file {name!r} in this export")
        path = services.exports.file(job, name.removesuffix(".ndjson"))
        services.audit.later(audit_entry(ctx, "export", detail=f"download of {name} from "
                                         f"export {job.id}", action="R"))
        return FileResponse(path, media_type="application/fhir+ndjson", headers=_NO_STORE)

    return download
