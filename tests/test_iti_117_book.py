"""IHE ITI-117 Book Appointment: book, modify and cancel, as the IHE OperationDefinition says.

Book: ``appointment-reference`` (after ITI-116) or ``appointment-resource`` with status
``pending``; modify: ``appointment-resource`` with status ``booked``; cancel: with status
``cancelled``. The resource sent is the IG's ``example-appointment.json`` with the test's ids
and dates. A success is a searchset Bundle with the single Appointment; a refusal is a Bundle
carrying only the OperationOutcome (2:3.117.4.2.2), whatever the cause.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.ihe import fixture, issue_codes, matches, outcome_entries, profile_problems
from tests.support.scheduling import (
    Calendar,
    Json,
    find,
    parameters,
    patient,
    practitioner_calendar,
    uid,
)

# example-appointment.json books 2025-03-17T00:45Z-01:00Z, which is 20:45 New York time on a
# Sunday; the tests' calendars open Sundays in the evening so the example's times fit as they are.
DAY = {"start": "2034-07-16T00:00:00Z", "end": "2034-07-18T00:00:00Z"}
START, END = "2034-07-17T00:45:00Z", "2034-07-17T01:00:00Z"


async def calendar(fhir: httpx.AsyncClient) -> Calendar:
    return await practitioner_calendar(fhir, days=("sun",), start="20:00:00", end="22:00:00",
                                       slot=15)


def example(cal: Calendar, who: str, status: str, id_: str | None = None) -> Json:
    """example-appointment.json, with this test's practitioner, patient, dates and status."""
    appt: Json = fixture("ihe-example-appointment.json", {
        "Practitioner/dr-y": cal.ref, "Patient/pat1": who,
        "2025-03-17T00:45:00Z": START, "2025-03-17T01:00:00Z": END,
        "2024-03-15T20:00:00Z": DAY["start"], "2024-03-22T20:00:00Z": DAY["end"]})
    appt["status"] = status
    appt.pop("meta")
    if id_ is None:
        appt.pop("id")
    else:
        appt["id"] = id_
    return appt


def book_body(*items: tuple[str, object]) -> Json:
    return parameters(*items)


def appointment_of(r: httpx.Response) -> Json:
    assert r.status_code == 200, r.text
    [appt] = matches(r)
    assert r.json()["total"] == 1
    assert profile_problems(appt) == []
    return appt


def refusal_outcome(r: httpx.Response) -> Json:
    """The one OperationOutcome of a refused $book, checking the Bundle holds nothing else."""
    body = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset", body
    assert matches(r) == []
    [oo] = outcome_entries(r)
    assert len(body["entry"]) == 1
    return oo


async def test_book_by_reference_after_a_hold(fhir: httpx.AsyncClient) -> None:
    cal = await calendar(fhir)
    [option] = await find(fhir, **DAY, specialty=cal.specialty, _count=1)
    held = await fhir.post("/Appointment/$hold", json=parameters(("appointment-resource",
                                                                 option)))
    [pending] = matches(held)
    r = await fhir.post("/Appointment/$book", json=book_body(
        ("appointment-reference", {"reference": f"Appointment/{pending['id']}"})))
    booked = appointment_of(r)
    assert (booked["id"], booked["status"]) == (pending["id"], "booked")
    assert {p["status"] for p in booked["participant"]} == {"accepted"}


async def test_book_the_example_appointment_given_as_pending(fhir: httpx.AsyncClient) -> None:
    cal = await calendar(fhir)
    who = await patient(fhir)
    r = await fhir.post("/Appointment/$book", json=book_body(
        ("appointment-resource", example(cal, who, "pending"))))
    booked = appointment_of(r)
    assert booked["status"] == "booked"
    assert (booked["start"], booked["end"]) == (START, END)
    assert booked["appointmentType"]["coding"][0]["code"] == "ROUTINE"
    stored = (await fhir.get(f"/Appointment/{booked['id']}")).json()
    assert stored["status"] == "booked"


async def test_modify_a_booked_appointment_with_status_booked(fhir: httpx.AsyncClient) -> None:
    cal = await calendar(fhir)
    who = await patient(fhir)
    first = appointment_of(await fhir.post("/Appointment/$book", json=book_body(
        ("appointment-resource", example(cal, who, "pending")))))
    changed = example(cal, who, "booked", first["id"])
    changed["serviceType"][0]["text"] = "Office call, interpreter needed"
    r = await fhir.post("/Appointment/$book", json=book_body(("appointment-resource", changed),
                                                             ("comment", "bring an interpreter")))
    modified = appointment_of(r)
    assert (modified["id"], modified["status"]) == (first["id"], "booked")
    assert modified["serviceType"][0]["text"] == "Office call, interpreter needed"
    assert modified["comment"] == "bring an interpreter"


async def test_cancel_a_booked_appointment_with_status_cancelled(
        fhir: httpx.AsyncClient) -> None:
    cal = await calendar(fhir)
    who = await patient(fhir)
    first = appointment_of(await fhir.post("/Appointment/$book", json=book_body(
        ("appointment-resource", example(cal, who, "pending")))))
    r = await fhir.post("/Appointment/$book", json=book_body(
        ("appointment-resource", example(cal, who, "cancelled", first["id"]))))
    cancelled = appointment_of(r)
    assert (cancelled["id"], cancelled["status"]) == (first["id"], "cancelled")
    again = await fhir.post("/Appointment/$book", json=book_body(
        ("appointment-resource", example(cal, who, "pending"))))
    assert appointment_of(again)["status"] == "booked"  # the time is free again


async def test_book_of_taken_time_is_a_bundle_with_only_the_outcome(
        fhir: httpx.AsyncClient) -> None:
    cal = await calendar(fhir)
    who = await patient(fhir)
    appointment_of(await fhir.post("/Appointment/$book", json=book_body(
        ("appointment-resource", example(cal, who, "pending")))))
    r = await fhir.post("/Appointment/$book", json=book_body(
        ("appointment-resource", example(cal, await patient(fhir), "pending"))))
    assert r.status_code == 409, r.text
    oo = refusal_outcome(r)
    assert issue_codes(oo)[0] == ("fatal", "conflict")
    assert cal.ref in oo["issue"][0]["diagnostics"]


async def test_book_of_an_unknown_reference_is_a_bundle_with_only_the_outcome(
        fhir: httpx.AsyncClient) -> None:
    r = await fhir.post("/Appointment/$book", json=book_body(
        ("appointment-reference", {"reference": f"Appointment/none-{uid()}"})))
    assert r.status_code == 404, r.text
    assert issue_codes(refusal_outcome(r))[0] == ("fatal", "not-found")


@pytest.mark.parametrize("body", [
    {"resourceType": "Parameters"},  # nothing to book
    {"resourceType": "Parameters", "parameter": [
        {"name": "appointment-resource", "resource": {"resourceType": "Patient"}}]},
])
async def test_malformed_book_is_a_bundle_with_only_the_outcome(
        fhir: httpx.AsyncClient, body: Json) -> None:
    r = await fhir.post("/Appointment/$book", json=body)
    assert r.status_code == 400, r.text
    oo = refusal_outcome(r)
    assert issue_codes(oo)[0] == ("error", "invalid")
    assert oo["issue"][0]["expression"][0].startswith("appointment-")


async def test_unknown_parameter_under_strict_handling_is_a_refusal_naming_it(
        fhir: httpx.AsyncClient) -> None:
    cal = await calendar(fhir)
    body = book_body(("appointment-resource", example(cal, await patient(fhir), "pending")),
                     ("x-priority", "high"))
    r = await fhir.post("/Appointment/$book", json=body, headers={"prefer": "handling=strict"})
    assert r.status_code == 400, r.text
    assert refusal_outcome(r)["issue"][0]["expression"] == ["x-priority"]
    lenient = await fhir.post("/Appointment/$book", json=body)
    assert appointment_of(lenient)["status"] == "booked"
    [oo] = outcome_entries(lenient)
    assert issue_codes(oo) == [("warning", "not-supported")]
