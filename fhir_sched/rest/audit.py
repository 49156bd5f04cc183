"""The audit trail as R4 AuditEvent: read and search only, never written through the API
(writes get 405).

Shaped after IHE Basic Audit Log Patterns (BALP) where it fits: ``type`` rest (DICOM Import
for an HL7 v2 message received, Export for one sent), ``subtype`` the FHIR interaction (or, in
fhir-sched's own code system, the operation, the HL7 v2 event, or ``overbook`` for a booking
made with the front-desk override), the requesting agent (the
user or system, with the client app as a second agent), this server as the source, the
resource touched, the patient as an entity with role Patient, and the request id as BALP's
``XrequestId`` entity.

Who may read it: with auth off, anyone (development); with a token, a ``user/`` or
``system/`` scope that names AuditEvent itself (``system/AuditEvent.rs``): a wildcard scope
does not reach the audit trail, and a patient-level token never does.

Search parameters: ``date`` (``ge``/``gt``/``le``/``lt`` prefixes), ``patient``, ``entity``,
``agent`` (who), ``subtype``, ``outcome``, ``_count`` (at most 1000); pages continue with the
``next`` link.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..context import RequestContext
from ..errors import FhirError
from ..storage.base import AuditEntry, DocumentStore
from ..timeutil import date_range, format_instant, from_us
from .bundles import bundle, link
from .capability import RouteSpec
from .http import FhirResponse, check_accept, context_for

Handler = Callable[[Request], Awaitable[Response]]
MAX_COUNT = 1000
PARAMS = {"patient": "reference", "entity": "reference", "agent": "token",
          "subtype": "token", "outcome": "token", "date": "date"}
# The interactions of the R4 restful-interaction code system; anything else (operations,
# HL7 v2 events, the override) is coded in fhir-sched's own audit-subtype system.
RESTFUL = frozenset({"read", "vread", "update", "patch", "delete", "history", "history-instance",
                     "history-type", "history-system", "create", "search", "search-type",
                     "search-system", "capabilities", "transaction", "batch", "operation"})
_OUTCOME_TEXT = {"0": "Success", "4": "Minor failure", "8": "Serious failure",
                 "12": "Major failure"}


def may_read(ctx: RequestContext) -> None:
    grant = ctx.grant
    if ctx.public:  # no grant, but no staff either: the public view never reads the trail
        raise FhirError(403, "forbidden", "the audit trail needs a bearer token")
    if grant is None:
        return
    letters_ok = [s for s in grant.resource if s.type == "AuditEvent" and s.level != "patient"
                  and ("r" in s.letters or "s" in s.letters)]
    if not letters_ok:
        raise FhirError(403, "forbidden", "the audit trail needs a user/ or system/ scope "
                        "naming AuditEvent (for example system/AuditEvent.rs)")


def render(e: AuditEntry) -> dict[str, Any]:
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "id": e.id, "type": _type(e),
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": e.subtype}
                    if e.subtype in RESTFUL else
                    {"system": "https://fhir-sched.org/fhir/CodeSystem/audit-subtype",
                     "code": e.subtype}],
        "action": e.action, "recorded": e.recorded, "outcome": e.outcome,
        "outcomeDesc": _OUTCOME_TEXT.get(e.outcome, e.outcome) + (
            f" ({e.detail})" if e.detail and (e.outcome != "0" or e.door == "auth") else ""),
        "agent": [{"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "IRCP", "display": "information recipient"}]},
            "who": _who(e.who), "requestor": True}],
        "source": {"observer": {"display": "fhir-sched"}, "type": [{
            "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
            "code": "4", "display": "Application Server"}]},
    }
    if e.client_id:
        event["agent"].append({"type": {"coding": [{
            "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150",
            "display": "Application"}]}, "who": {"identifier": {"value": e.client_id}},
            "requestor": False})
    entities: list[dict[str, Any]] = []
    if e.entity:
        what: dict[str, Any] = ({"reference": e.entity} if "/" in e.entity
                                else {"display": e.entity})
        item: dict[str, Any] = {"what": what, "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
            "display": "System Object"}}
        if e.detail and e.outcome == "0":
            item["description"] = (f"parameters: {e.detail}" if e.subtype.startswith("search")
                                   else e.detail)
        entities.append(item)
    if e.patient:
        entities.append({"what": {"reference": e.patient}, "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1",
            "display": "Person"}, "role": {
            "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
            "display": "Patient"}})
    if e.request_id:
        entities.append({"what": {"identifier": {"value": e.request_id}}, "type": {
            "system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
            "code": "XrequestId"}})
    if entities:
        event["entity"] = entities
    return event


_IMPORT = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110107",
           "display": "Import"}
_EXPORT = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110106",
           "display": "Export"}
_AUTHENTICATED = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114",
                  "display": "User Authenticated"}
_REST = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
         "display": "RESTful Operation"}


def _type(e: AuditEntry) -> dict[str, str]:
    """DICOM Import for a message received, Export for one sent, User Authenticated for the
    authorization server's events; RESTful Operation else."""
    if e.subtype.startswith("hl7v2-out/"):
        return _EXPORT
    if e.door == "auth":
        return _AUTHENTICATED
    return _IMPORT if e.door == "mllp" else _REST


def _who(who: str) -> dict[str, Any]:
    head = who.split("/", 1)[0]
    if "://" in who or head in ("Patient", "Practitioner", "PractitionerRole",
                                "RelatedPerson", "Person", "Device", "Organization"):
        return {"reference": who}
    return {"identifier": {"value": who}}


def _instant(us: int) -> str:
    return format_instant(from_us(us))


def _range(params: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    since = until = None
    for name, value in params:
        if name != "date":
            continue
        prefix, raw = (value[:2], value[2:]) if value[:2] in ("ge", "gt", "le", "lt", "eq") \
            else ("eq", value)
        try:
            lo, hi = date_range(raw)
        except ValueError:
            raise FhirError(400, "invalid", f"date {value!r} is not a FHIR date or dateTime",
                            expression=["date"]) from None
        if prefix in ("ge", "eq"):
            since = _instant(lo)
        if prefix == "gt":
            since = _instant(hi + 1)
        if prefix in ("le", "eq"):
            until = _instant(hi + 1)
        if prefix == "lt":
            until = _instant(lo)
    return since, until


def audit_routes(reader: DocumentStore, public_base: str, base_path: str
                 ) -> Iterator[tuple[RouteSpec, Handler]]:
    async def read(request: Request) -> Response:
        check_accept(request)
        may_read(context_for(request, public_base, base_path))
        found = await reader.audit_get(request.path_params["id"])
        if found is None:
            raise FhirError(404, "not-found", f"AuditEvent/{request.path_params['id']} is "
                            "not known")
        return FhirResponse(render(found))

    async def search(request: Request) -> Response:
        check_accept(request)
        ctx = context_for(request, public_base, base_path)
        may_read(ctx)
        params = list(request.query_params.multi_items())
        for name, _ in params:
            if name not in PARAMS and name not in ("_count", "_before", "_format"):
                raise FhirError(400, "not-supported", f"AuditEvent has no search parameter "
                                f"{name!r} here (known: {', '.join(sorted(PARAMS))})")
        values = {n: v for n, v in params if n in PARAMS and n != "date"}
        try:
            count = min(int(request.query_params.get("_count", "100")), MAX_COUNT)
        except ValueError:
            raise FhirError(400, "invalid", "_count must be a number") from None
        since, until = _range(params)
        rows = await reader.audit_list(
            patient=values.get("patient"), entity=values.get("entity"),
            who=values.get("agent"), subtype=values.get("subtype"),
            outcome=values.get("outcome"), since=since, until=until,
            before_id=request.query_params.get("_before"), limit=count + 1)
        more, rows = len(rows) > count, rows[:count]
        entries = [{"fullUrl": f"{ctx.base_url}/AuditEvent/{r.id}",
                    "resource": orjson.Fragment(orjson.dumps(render(r))),
                    "search": {"mode": "match"}} for r in rows]
        kept = [(n, v) for n, v in params if n != "_before"]
        links = [("self", link(ctx.base_url, "AuditEvent", params))]
        if more and rows:
            links.append(("next", link(ctx.base_url, "AuditEvent",
                                       [*kept, ("_before", rows[-1].id)])))
        return FhirResponse(bundle("searchset", entries, links=links))

    yield RouteSpec("/AuditEvent/{id}", ("GET",), "read", "instance", ("AuditEvent",)), read
    yield RouteSpec("/AuditEvent", ("GET",), "search-type", "type", ("AuditEvent",)), search
    # no write routes: PUT, PATCH, DELETE and POST answer 405 with the Allow header


def capability_entry() -> dict[str, Any]:
    return {
        "type": "AuditEvent",
        "profile": "http://hl7.org/fhir/StructureDefinition/AuditEvent",
        "documentation": "The audit trail: one event per interaction through every door, "
                         "written by the server only. Needs a user/ or system/ scope naming "
                         "AuditEvent.",
        "versioning": "no-version", "readHistory": False, "updateCreate": False,
        "conditionalCreate": False, "conditionalRead": "not-supported",
        "conditionalUpdate": False, "conditionalDelete": "not-supported",
        "searchParam": [{"name": n, "type": t,
                         "definition": f"http://hl7.org/fhir/SearchParameter/AuditEvent-{n}"}
                        for n, t in sorted(PARAMS.items())],
    }
