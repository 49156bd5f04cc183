"""Availability is enforced on every booking path (ITI-117: the server checks that the
resources are still available), not only on what ``$find`` offers.

The clinic: Dr. A in New York (Mon-Fri 09:00-12:00 and 13:00-17:00, 30-minute slots, closed
on 2037-12-25, bookable until 2038-06-30), Dr. B in Berlin (Mon-Fri 08:00-16:00), a room
whose calendar is explicit Slots, and Dr. C, open around the clock, for the past-time rule.
Tuesday 2037-12-01 is the working day most cases use. Each bad time is tried through every
door a client can book by: plain POST and PUT, JSON Patch moving a good booking, ``$hold`` and
``$book`` with the resource, and a transaction entry; each must be refused and store nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.scheduling import (
    ALL_DAYS,
    JSON_PATCH,
    Json,
    bundle_resource,
    find,
    hold,
    hours,
    outcome,
    parameters,
    patient,
    put_all,
    schedule,
    template,
    uid,
    utc,
)

NY, BERLIN = "America/New_York", "Europe/Berlin"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


@dataclass(frozen=True, slots=True)
class Clinic:
    a: str
    b: str
    c: str
    room: str


def _not_available(day: str) -> Json:
    return {"url": "notAvailable", "extension": [
        {"url": "description", "valueString": "holiday"},
        {"url": "during", "valuePeriod": {"start": day, "end": day}}]}


async def clinic(fhir: httpx.AsyncClient) -> Clinic:
    key = uid()
    a, b, c, room = f"a-{key}", f"b-{key}", f"c-{key}", f"room-{key}"
    a_hours = template(NY, hours(WEEKDAYS, "09:00:00", "12:00:00"),
                       hours(WEEKDAYS, "13:00:00", "17:00:00"))
    a_hours["extension"].append(_not_available("2037-12-25"))
    resources: list[Json] = [
        {"resourceType": "Practitioner", "id": a, "name": [{"family": "A"}]},
        {"resourceType": "Practitioner", "id": b, "name": [{"family": "B"}]},
        {"resourceType": "Practitioner", "id": c, "name": [{"family": "C"}]},
        {"resourceType": "Location", "id": room, "name": f"Room {key}"},
        schedule(f"s-{a}", f"Practitioner/{a}", a_hours,
                 horizon=("2037-01-01", "2038-06-30")),
        schedule(f"s-{b}", f"Practitioner/{b}",
                 template(BERLIN, hours(WEEKDAYS, "08:00:00", "16:00:00"))),
        schedule(f"s-{c}", f"Practitioner/{c}",
                 template("UTC", hours(ALL_DAYS, "00:00:00", "00:00:00"))),
        schedule(f"s-{room}", f"Location/{room}"),
    ]
    for n, (start, end, status) in enumerate([
            ("09:00", "09:30", "free"), ("09:30", "10:00", "free"),
            ("10:00", "10:30", "busy-unavailable"), ("11:00", "11:30", "free")]):
        resources.append({
            "resourceType": "Slot", "id": f"sl{n}-{room}",
            "schedule": {"reference": f"Schedule/s-{room}"}, "status": status,
            "start": f"2037-12-01T{start}:00-05:00", "end": f"2037-12-01T{end}:00-05:00"})
    await put_all(fhir, *resources)
    return Clinic(f"Practitioner/{a}", f"Practitioner/{b}", f"Practitioner/{c}",
                  f"Location/{room}")


def appointment(actor: str, start: str, end: str, status: str = "booked",
                patient_ref: str | None = None) -> Json:
    parts = [{"actor": {"reference": actor}, "status": "accepted"}]
    if patient_ref is not None:
        parts.append({"actor": {"reference": patient_ref}, "status": "accepted"})
    return {"resourceType": "Appointment", "status": status, "start": start, "end": end,
            "participant": parts}


# -- the doors -----------------------------------------------------------------------------
Door = Callable[[httpx.AsyncClient, Clinic, str, str], Awaitable[httpx.Response]]


async def by_post(fhir: httpx.AsyncClient, c: Clinic, start: str, end: str) -> httpx.Response:
    return await fhir.post("/Appointment", json=appointment(c.a, start, end))


async def by_put(fhir: httpx.AsyncClient, c: Clinic, start: str, end: str) -> httpx.Response:
    aid = f"put-{uid()}"
    return await fhir.put(f"/Appointment/{aid}", json={**appointment(c.a, start, end),
                                                        "id": aid})


async def by_patch(fhir: httpx.AsyncClient, c: Clinic, start: str, end: str) -> httpx.Response:
    """Move a good booking (Thursday 16:30) to the time under test."""
    good = await fhir.post("/Appointment", json=appointment(
        c.a, "2037-12-03T16:30:00-05:00", "2037-12-03T17:00:00-05:00"))
    assert good.status_code == 201, good.text
    return await fhir.patch(f"/Appointment/{good.json()['id']}", headers=JSON_PATCH, json=[
        {"op": "replace", "path": "/start", "value": start},
        {"op": "replace", "path": "/end", "value": end}])


async def by_hold(fhir: httpx.AsyncClient, c: Clinic, start: str, end: str) -> httpx.Response:
    return await hold(fhir, appointment(c.a, start, end, status="proposed"))


async def by_book(fhir: httpx.AsyncClient, c: Clinic, start: str, end: str) -> httpx.Response:
    return await fhir.post("/Appointment/$book", json=parameters(
        ("appointment-resource", appointment(c.a, start, end, status="proposed"))))


async def by_transaction(fhir: httpx.AsyncClient, c: Clinic, start: str, end: str
                         ) -> httpx.Response:
    r = await fhir.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uid()}", "resource": appointment(c.a, start, end),
         "request": {"method": "POST", "url": "Appointment"}}]})
    return r


DOORS: dict[str, Door] = {"post": by_post, "put": by_put, "patch": by_patch, "hold": by_hold,
                          "book": by_book, "transaction": by_transaction}

BAD_TIMES = {
    "lunch break": ("2037-12-01T12:00:00-05:00", "2037-12-01T12:30:00-05:00"),
    "saturday night": ("2037-12-05T03:00:00-05:00", "2037-12-05T03:30:00-05:00"),
    "off the slot grid": ("2037-12-01T14:07:00-05:00", "2037-12-01T14:37:00-05:00"),
    "holiday": ("2037-12-25T10:00:00-05:00", "2037-12-25T10:30:00-05:00"),
    "beyond the planning horizon": ("2038-07-06T10:00:00-04:00", "2038-07-06T10:30:00-04:00"),
    "running past closing": ("2037-12-01T16:45:00-05:00", "2037-12-01T17:15:00-05:00"),
}


async def bookings_of(fhir: httpx.AsyncClient, actor: str) -> list[Json]:
    r = await fhir.get("/Appointment", params={"actor": actor, "status": "booked,pending",
                                               "_count": "100"})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize("case", sorted(BAD_TIMES))
async def test_time_outside_availability_is_refused_by_every_door(
        fhir: httpx.AsyncClient, door: str, case: str) -> None:
    c = await clinic(fhir)
    start, end = BAD_TIMES[case]
    r = await DOORS[door](fhir, c, start, end)
    assert r.status_code == 409, r.text
    issue = outcome(r)["issue"][0]
    assert issue["code"] == "conflict"
    assert "not available" in issue["diagnostics"]
    stored = await bookings_of(fhir, c.a)
    assert all(utc(b["start"]) != utc(start) for b in stored), stored


@pytest.mark.parametrize("door", sorted(DOORS))
async def test_time_inside_availability_is_accepted_by_every_door(
        fhir: httpx.AsyncClient, door: str) -> None:
    c = await clinic(fhir)
    r = await DOORS[door](fhir, c, "2037-12-01T13:00:00-05:00", "2037-12-01T13:30:00-05:00")
    assert r.status_code in (200, 201), r.text
    assert any(utc(b["start"]) == utc("2037-12-01T13:00:00-05:00")
               for b in await bookings_of(fhir, c.a))


@pytest.mark.parametrize("door", sorted(DOORS))
async def test_time_in_the_past_is_refused_by_every_door(fhir: httpx.AsyncClient,
                                                         door: str) -> None:
    c = await clinic(fhir)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).replace(
        hour=10, minute=0, second=0, microsecond=0)
    start, end = yesterday.isoformat(), (yesterday + timedelta(minutes=30)).isoformat()
    at_c = Clinic(c.c, c.b, c.c, c.room)  # Dr. C is open at every hour of every day
    r = await DOORS[door](fhir, at_c, start, end)
    assert r.status_code == 422, r.text
    issue = outcome(r)["issue"][0]
    assert issue["code"] == "business-rule"
    assert "past" in issue["diagnostics"]


async def test_status_change_on_a_past_visit_is_not_refused_as_past(
        fhir: httpx.AsyncClient) -> None:
    """Only newly taken time is judged: yesterday's visit can still be marked arrived, while
    creating it now is refused."""
    c = await clinic(fhir)
    soon = (datetime.now(UTC) + timedelta(minutes=31)).replace(second=0, microsecond=0)
    soon -= timedelta(minutes=soon.minute % 30)  # Dr. C's grid: :00 and :30
    r = await fhir.post("/Appointment", json=appointment(
        c.c, soon.isoformat(), (soon + timedelta(minutes=30)).isoformat()))
    assert r.status_code == 201, r.text
    moved = await fhir.patch(f"/Appointment/{r.json()['id']}", headers=JSON_PATCH,
                             json=[{"op": "replace", "path": "/status", "value": "arrived"}])
    assert moved.status_code == 200, moved.text


async def test_explicit_slots_admit_a_visit_they_cover_without_a_gap(
        fhir: httpx.AsyncClient) -> None:
    c = await clinic(fhir)
    r = await fhir.post("/Appointment", json=appointment(
        c.room, "2037-12-01T09:00:00-05:00", "2037-12-01T10:00:00-05:00"))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(("start", "end"), [
    ("10:00", "10:30"),  # a busy-unavailable Slot
    ("09:30", "10:30"),  # runs into it
    ("10:30", "11:00"),  # no Slot at all
    ("11:00", "12:00"),  # runs past the last Slot
])
async def test_explicit_slots_refuse_a_visit_they_do_not_cover(
        fhir: httpx.AsyncClient, start: str, end: str) -> None:
    c = await clinic(fhir)
    r = await fhir.post("/Appointment", json=appointment(
        c.room, f"2037-12-01T{start}:00-05:00", f"2037-12-01T{end}:00-05:00"))
    assert r.status_code == 409, r.text
    assert "not available" in outcome(r)["issue"][0]["diagnostics"]


async def test_a_resource_without_a_calendar_here_is_only_held_to_capacity(
        fhir: httpx.AsyncClient) -> None:
    """The server schedules only the resources it holds calendars for; any other appointment
    is stored as given (Saturday night included), and still cannot double-book."""
    pid = f"free-{uid()}"
    await put_all(fhir, {"resourceType": "Practitioner", "id": pid})
    at = ("2037-12-05T03:00:00-05:00", "2037-12-05T03:30:00-05:00")
    first = await fhir.post("/Appointment", json=appointment(f"Practitioner/{pid}", *at))
    assert first.status_code == 201, first.text
    second = await fhir.post("/Appointment", json=appointment(f"Practitioner/{pid}", *at))
    assert second.status_code == 409, second.text


async def test_patient_cannot_be_booked_at_one_time_with_two_practitioners(
        fhir: httpx.AsyncClient) -> None:
    c = await clinic(fhir)
    pat = await patient(fhir)
    # Wednesday 09:00 New York is 15:00 in Berlin: inside both calendars.
    first = await fhir.post("/Appointment", json=appointment(
        c.a, "2037-12-02T09:00:00-05:00", "2037-12-02T09:30:00-05:00", patient_ref=pat))
    assert first.status_code == 201, first.text
    second = await fhir.post("/Appointment", json=appointment(
        c.b, "2037-12-02T15:00:00+01:00", "2037-12-02T15:30:00+01:00", patient_ref=pat))
    assert second.status_code == 409, second.text
    assert "two places" in outcome(second)["issue"][0]["diagnostics"]
    later = await fhir.post("/Appointment", json=appointment(
        c.b, "2037-12-02T15:30:00+01:00", "2037-12-02T16:00:00+01:00", patient_ref=pat))
    assert later.status_code == 201, later.text  # back to back is fine


async def test_cancelling_frees_the_patients_time_at_once(fhir: httpx.AsyncClient) -> None:
    c = await clinic(fhir)
    pat = await patient(fhir)
    first = await fhir.post("/Appointment", json=appointment(
        c.a, "2037-12-02T09:00:00-05:00", "2037-12-02T09:30:00-05:00", patient_ref=pat))
    assert first.status_code == 201, first.text
    cancel = await fhir.patch(f"/Appointment/{first.json()['id']}", headers=JSON_PATCH,
                              json=[{"op": "replace", "path": "/status", "value": "cancelled"}])
    assert cancel.status_code == 200, cancel.text
    second = await fhir.post("/Appointment", json=appointment(
        c.b, "2037-12-02T15:00:00+01:00", "2037-12-02T15:30:00+01:00", patient_ref=pat))
    assert second.status_code == 201, second.text


async def test_book_of_a_second_visit_for_a_booked_patient_is_refused(
        fhir: httpx.AsyncClient) -> None:
    c = await clinic(fhir)
    pat = await patient(fhir)
    [option] = await find(fhir, start="2037-12-02T00:00:00Z", end="2037-12-03T00:00:00Z",
                          practitioner=c.a, _count=1)
    booked = await fhir.post("/Appointment/$book", json=parameters(
        ("appointment-resource", option), ("patient-id", pat)))
    assert booked.status_code == 200, booked.text
    [other] = await find(fhir, start=option["start"], end="2037-12-03T00:00:00Z",
                         practitioner=c.b, patient=pat, _count=1)
    assert utc(other["start"]) >= utc(option["end"])  # $find keeps the patient's time out...
    clash = {**other, "start": option["start"], "end": option["end"]}
    clash.pop("contained", None)
    clash.pop("slot", None)
    r = await fhir.post("/Appointment/$book", json=parameters(
        ("appointment-resource", clash), ("patient-id", pat)))
    assert r.status_code == 409, r.text  # ... and $book refuses it when asked anyway
    assert bundle_resource(booked)["status"] == "booked"


async def test_concurrent_bookings_of_one_patient_at_one_time_admit_exactly_one(
        fhir: httpx.AsyncClient) -> None:
    """The patient's time is a claim in the database, like a resource's: 20 practitioners
    racing to book one patient at one time leave one booking."""
    pat = await patient(fhir)
    key = uid()
    doctors = [f"Practitioner/race-{n}-{key}" for n in range(20)]
    await put_all(fhir, *({"resourceType": "Practitioner", "id": d.split("/")[1]}
                          for d in doctors))
    at = ("2037-12-02T09:00:00-05:00", "2037-12-02T09:30:00-05:00")
    results = await asyncio.gather(*(fhir.post("/Appointment", json=appointment(
        d, *at, patient_ref=pat)) for d in doctors))
    assert sorted(r.status_code for r in results) == [201] + [409] * 19
    r = await fhir.get("/Appointment", params={"patient": pat, "status": "booked"})
    assert len(r.json().get("entry", [])) == 1
