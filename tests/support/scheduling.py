"""Builders and HTTP helpers shared by the scheduling tests (``tests/test_scheduling_*.py``).

The scheduling tests share one server per store (the session ``fhir`` fixture), so every test
makes its own small world: codes and ids carry a fresh suffix, which keeps one test's
practitioners, rooms and visit types out of another test's ``$find`` answers without any
cleanup. Extension shapes are written out here by hand from the StructureDefinitions in
``conformance/`` rather than produced by server code, so a drift between the declared format
and what the engine reads fails a test instead of passing silently.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

EXT = "https://fhir-sched.org/fhir/StructureDefinition/"
TEMPLATE_URL = EXT + "availability-template"
VISIT_TYPE_URL = EXT + "visit-type"
RESOURCE_KIND_URL = EXT + "resource-kind"
HOLD_EXPIRES_URL = EXT + "hold-expires"
SNOMED = "http://snomed.info/sct"
ALL_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
JSON_PATCH = {"content-type": "application/json-patch+json"}

Json = dict[str, Any]


def uid() -> str:
    """A short suffix that makes a test's codes and ids its own on a shared server."""
    return uuid.uuid4().hex[:10]


# ------------------------------------------------------------------------ resource builders


def hours(days: tuple[str, ...] | list[str], start: str, end: str) -> Json:
    """One availableTime element of an availability template (local wall-clock hours)."""
    return {
        "url": "availableTime",
        "extension": [{"url": "daysOfWeek", "valueCode": d} for d in days]
        + [
            {"url": "availableStartTime", "valueTime": start},
            {"url": "availableEndTime", "valueTime": end},
        ],
    }


def template(
    tz: str,
    *available: Json,
    slot: int = 30,
    capacity: int | None = None,
    buffer_before: int | None = None,
    buffer_after: int | None = None,
    alignment: int | None = None,
) -> Json:
    """An availability-template extension as declared in
    ``StructureDefinition-availability-template.json``."""
    subs: list[Json] = [{"url": "timezone", "valueCode": tz}, *available]
    subs.append({"url": "slotMinutes", "valuePositiveInt": slot})
    if alignment is not None:
        subs.append({"url": "alignmentMinutes", "valuePositiveInt": alignment})
    if capacity is not None:
        subs.append({"url": "capacity", "valuePositiveInt": capacity})
    if buffer_before is not None:
        subs.append({"url": "bufferBeforeMinutes", "valueUnsignedInt": buffer_before})
    if buffer_after is not None:
        subs.append({"url": "bufferAfterMinutes", "valueUnsignedInt": buffer_after})
    return {"url": TEMPLATE_URL, "extension": subs}


def concept(system: str, code: str) -> Json:
    return {"coding": [{"system": system, "code": code}]}


def schedule(
    sid: str,
    actor: str,
    *templates: Json,
    specialty: tuple[str, str] | None = None,
    kind: tuple[str, str] | None = None,
    horizon: tuple[str, str] | None = None,
) -> Json:
    """A Schedule for one actor; ``specialty``/``kind`` are (system, code) pairs."""
    body: Json = {"resourceType": "Schedule", "id": sid, "actor": [{"reference": actor}]}
    exts = list(templates)
    if kind is not None:
        exts.append({"url": RESOURCE_KIND_URL, "valueCodeableConcept": concept(*kind)})
    if exts:
        body["extension"] = exts
    if specialty is not None:
        body["specialty"] = [concept(*specialty)]
    if horizon is not None:
        body["planningHorizon"] = {"start": horizon[0], "end": horizon[1]}
    return body


def need(actor_type: str, *, specialty: tuple[str, str] | None = None,
         kind: tuple[str, str] | None = None) -> Json:
    subs: list[Json] = [{"url": "actorType", "valueCode": actor_type}]
    if specialty is not None:
        subs.append({"url": "specialty", "valueCodeableConcept": concept(*specialty)})
    if kind is not None:
        subs.append({"url": "kind", "valueCodeableConcept": concept(*kind)})
    return {"url": "need", "extension": subs}


def visit_type(system: str, code: str, minutes: int, *needs: Json) -> Json:
    """A visit-type extension for a HealthcareService."""
    return {
        "url": VISIT_TYPE_URL,
        "extension": [
            {"url": "code", "valueCoding": {"system": system, "code": code}},
            {"url": "minutesDuration", "valuePositiveInt": minutes},
            *needs,
        ],
    }


def token(system: str, code: str) -> str:
    return f"{system}|{code}"


# ------------------------------------------------------------------------ HTTP helpers


async def put(client: httpx.AsyncClient, resource: Json) -> Json:
    """PUT a resource under its own id; a failure here is a broken fixture, so say so loudly."""
    r = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text
    return r.json()


async def put_all(client: httpx.AsyncClient, *resources: Json) -> None:
    for res in resources:
        await put(client, res)


async def find_response(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    """GET $find; keyword names use ``_`` for ``-`` except ``_count``."""
    query: list[tuple[str, str]] = []
    for name, value in params.items():
        key = name if name.startswith("_") else name.replace("_", "-")
        for v in value if isinstance(value, list | tuple) else [value]:
            query.append((key, str(v)))
    return await client.get("/Appointment/$find", params=query)


async def find(client: httpx.AsyncClient, **params: Any) -> list[Json]:
    r = await find_response(client, **params)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset"
    return [e["resource"] for e in bundle.get("entry", [])]


def parameters(*items: tuple[str, Any]) -> Json:
    """A Parameters resource: resources go in ``resource``, strings in ``valueString``."""
    out: list[Json] = []
    for name, value in items:
        if isinstance(value, dict) and "resourceType" in value:
            out.append({"name": name, "resource": value})
        elif isinstance(value, dict) and "reference" in value:
            out.append({"name": name, "valueReference": value})
        else:
            out.append({"name": name, "valueString": value})
    return {"resourceType": "Parameters", "parameter": out}


async def hold(client: httpx.AsyncClient, option: Json) -> httpx.Response:
    return await client.post("/Appointment/$hold",
                             json=parameters(("appt-resource", option)))


async def book_option(client: httpx.AsyncClient, option: Json,
                      *extra: tuple[str, Any]) -> httpx.Response:
    return await client.post("/Appointment/$book",
                             json=parameters(("appt-resource", option), *extra))


async def book_id(client: httpx.AsyncClient, appt_id: str) -> httpx.Response:
    return await client.post(f"/Appointment/{appt_id}/$book", json={"resourceType": "Parameters"})


async def set_status(client: httpx.AsyncClient, appt_id: str, status: str) -> httpx.Response:
    return await client.patch(
        f"/Appointment/{appt_id}",
        json=[{"op": "replace", "path": "/status", "value": status}],
        headers=JSON_PATCH,
    )


def bundle_resource(response: httpx.Response) -> Json:
    """The one Appointment a $hold/$book answer carries."""
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert len(entries) == 1
    resource = entries[0]["resource"]
    assert resource["resourceType"] == "Appointment"
    return resource


def outcome(response: httpx.Response) -> Json:
    """The OperationOutcome of a refusal: the body, or for ``$book`` the one entry of the
    Bundle that IHE ITI-117 (2:3.117.4.2.2) says carries only the OperationOutcome."""
    body = response.json()
    if body.get("resourceType") == "Bundle":
        [only] = body.get("entry", [])
        assert only["search"]["mode"] == "outcome", body
        body = only["resource"]
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"], body
    return body


def names_parameter(response: httpx.Response, name: str) -> bool:
    """Whether a 400 OperationOutcome points at parameter ``name`` (expression or text)."""
    issues = outcome(response)["issue"]
    return any(name in (i.get("expression") or []) or f"'{name}'" in i.get("diagnostics", "")
               for i in issues)


def starts(options: list[Json]) -> list[str]:
    return [o["start"] for o in options]


DEVICE_PARTICIPANT_URL = EXT + "device-participant"


def actors(appointment: Json) -> list[str]:
    """Participants, then the devices (which ihe-sched-appt keeps out of participant, so they
    travel in the device-participant extension)."""
    devices = [sub["valueReference"]["reference"]
               for e in appointment.get("extension", []) if e["url"] == DEVICE_PARTICIPANT_URL
               for sub in e["extension"] if sub["url"] == "actor"]
    return [p["actor"]["reference"] for p in appointment.get("participant", [])] + devices


def utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def booked_appointment(client: httpx.AsyncClient, actor: str, start: str, end: str,
                             *, patient: str | None = None, status: str = "booked"
                             ) -> httpx.Response:
    """A plain REST create of an Appointment that takes ``actor``'s time."""
    participants = [{"actor": {"reference": actor}, "status": "accepted"}]
    if patient is not None:
        participants.append({"actor": {"reference": patient}, "status": "accepted"})
    return await client.post("/Appointment", json={
        "resourceType": "Appointment", "status": status, "start": start, "end": end,
        "participant": participants})


# ------------------------------------------------------------------------ one calendar


@dataclass(frozen=True, slots=True)
class Calendar:
    """One practitioner with one templated Schedule and a specialty nobody else has."""

    practitioner: str
    schedule: str
    specialty: str  # a $find token

    @property
    def ref(self) -> str:
        return f"Practitioner/{self.practitioner}"


async def practitioner_calendar(
    client: httpx.AsyncClient,
    tz: str = "America/New_York",
    days: tuple[str, ...] = ("mon", "tue"),
    start: str = "09:00:00",
    end: str = "17:00:00",
    *,
    slot: int = 30,
    capacity: int | None = None,
    specialty_code: str | None = None,
    horizon: tuple[str, str] | None = None,
) -> Calendar:
    key = uid()
    pid, sid = f"pr-{key}", f"sc-{key}"
    code = specialty_code or f"spec-{key}"
    await put(client, {"resourceType": "Practitioner", "id": pid,
                       "name": [{"family": f"Doc {key}"}]})
    await put(client, schedule(sid, f"Practitioner/{pid}",
                               template(tz, hours(days, start, end), slot=slot, capacity=capacity),
                               specialty=("http://example.org/specialty", code),
                               horizon=horizon))
    return Calendar(pid, sid, token("http://example.org/specialty", code))


async def patient(client: httpx.AsyncClient) -> str:
    pid = f"pat-{uid()}"
    await put(client, {"resourceType": "Patient", "id": pid, "name": [{"family": "Tester"}]})
    return f"Patient/{pid}"
