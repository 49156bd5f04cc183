"""IHE ITI-116 Hold Appointment: ``$hold`` with ``appointment-reference``, as the IHE
OperationDefinition declares it (a Reference to a proposed Appointment from a prior $find).

A held appointment comes back alone in a searchset Bundle, status ``pending``
(2:3.116.4.2.1-2); one that is no longer available is refused with an OperationOutcome - only
that, no Bundle - carrying a fatal ``not-found`` issue for the Appointment (2:3.116.4.2.2-3).
"""

from __future__ import annotations

import httpx

from tests.support.ihe import issue_codes, matches, outcome_entries, profile_problems
from tests.support.scheduling import (
    Json,
    book_option,
    bundle_resource,
    find,
    outcome,
    practitioner_calendar,
    uid,
)

WINDOW = {"start": "2034-07-17T00:00:00Z", "end": "2034-07-18T00:00:00Z"}  # a Monday


def by_reference(appointment_id: str) -> Json:
    """The ITI-116 request: one appointment-reference parameter, a Reference."""
    return {"resourceType": "Parameters", "parameter": [
        {"name": "appointment-reference",
         "valueReference": {"reference": f"Appointment/{appointment_id}"}}]}


async def stored_proposal(fhir: httpx.AsyncClient, identifier: str | None = None) -> Json:
    """A proposed Appointment from $find, stored so it can be referred to."""
    cal = await practitioner_calendar(fhir, days=("mon",))
    [option] = await find(fhir, **WINDOW, specialty=cal.specialty, _count=1)
    if identifier is not None:
        option["identifier"] = [{"system": "urn:example:proposal", "value": identifier}]
    created = await fhir.post("/Appointment", json=option)
    assert created.status_code == 201, created.text
    body: Json = created.json()
    return body


async def test_hold_by_reference_answers_the_pending_appointment_alone(
        fhir: httpx.AsyncClient) -> None:
    proposal = await stored_proposal(fhir)
    r = await fhir.post("/Appointment/$hold", json=by_reference(proposal["id"]))
    assert r.status_code == 200, r.text
    [held] = matches(r)
    assert r.json()["total"] == 1 and outcome_entries(r) == []
    assert held["id"] == proposal["id"] and held["status"] == "pending"
    assert held["start"] == proposal["start"]
    assert profile_problems(held) == []
    assert r.headers["expires"]


async def test_hold_of_time_no_longer_available_is_a_fatal_not_found_outcome(
        fhir: httpx.AsyncClient) -> None:
    proposal = await stored_proposal(fhir)
    taken = await book_option(fhir, {k: v for k, v in proposal.items()
                                     if k not in ("id", "meta")})
    assert bundle_resource(taken)["status"] == "booked"
    r = await fhir.post("/Appointment/$hold", json=by_reference(proposal["id"]))
    assert r.status_code == 409, r.text
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"  # only the outcome, no Bundle
    assert ("fatal", "not-found") in issue_codes(oo)
    [ihe] = [i for i in oo["issue"] if i["code"] == "not-found"]
    assert ihe["expression"] == ["Appointment"]


async def test_hold_of_an_already_booked_appointment_is_a_fatal_not_found_outcome(
        fhir: httpx.AsyncClient) -> None:
    proposal = await stored_proposal(fhir)
    booked = await fhir.post(f"/Appointment/{proposal['id']}/$book",
                             json={"resourceType": "Parameters"})
    assert bundle_resource(booked)["status"] == "booked"
    r = await fhir.post("/Appointment/$hold", json=by_reference(proposal["id"]))
    assert r.status_code == 409, r.text
    assert ("fatal", "not-found") in issue_codes(outcome(r))


async def test_hold_of_an_unknown_appointment_is_a_fatal_not_found_outcome(
        fhir: httpx.AsyncClient) -> None:
    r = await fhir.post("/Appointment/$hold", json=by_reference(f"none-{uid()}"))
    assert r.status_code == 404, r.text
    assert issue_codes(outcome(r))[0] == ("fatal", "not-found")


async def test_hold_by_logical_reference_holds_the_appointment_with_that_identifier(
        fhir: httpx.AsyncClient) -> None:
    value = f"prop-{uid()}"
    proposal = await stored_proposal(fhir, identifier=value)
    r = await fhir.post("/Appointment/$hold", json={"resourceType": "Parameters", "parameter": [
        {"name": "appointment-reference", "valueReference": {
            "identifier": {"system": "urn:example:proposal", "value": value}}}]})
    assert r.status_code == 200, r.text
    assert bundle_resource(r)["id"] == proposal["id"]


async def test_hold_by_a_logical_reference_two_appointments_share_is_a_422(
        fhir: httpx.AsyncClient) -> None:
    value = f"dup-{uid()}"
    await stored_proposal(fhir, identifier=value)
    await stored_proposal(fhir, identifier=value)
    r = await fhir.post("/Appointment/$hold", json={"resourceType": "Parameters", "parameter": [
        {"name": "appointment-reference", "valueReference": {
            "identifier": {"system": "urn:example:proposal", "value": value}}}]})
    assert r.status_code == 422, r.text
    assert issue_codes(outcome(r))[0] == ("error", "multiple-matches")


async def test_hold_with_an_unknown_parameter_holds_and_reports_it(
        fhir: httpx.AsyncClient) -> None:
    """2:3.116.4.2.2: a successful $hold MAY add an OperationOutcome beside the Appointment."""
    proposal = await stored_proposal(fhir)
    body = by_reference(proposal["id"])
    body["parameter"].append({"name": "x-channel", "valueString": "kiosk"})
    r = await fhir.post("/Appointment/$hold", json=body)
    assert r.status_code == 200, r.text
    assert [a["status"] for a in matches(r)] == ["pending"]
    [oo] = outcome_entries(r)
    assert issue_codes(oo) == [("warning", "not-supported")]
