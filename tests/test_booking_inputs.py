"""Smaller booking inputs that used to be taken the wrong way (issue 10's "smaller" list)."""

from __future__ import annotations

import httpx

from tests.support.scheduling import (
    book_option,
    bundle_resource,
    find,
    outcome,
    parameters,
    patient,
    practitioner_calendar,
)

WINDOW = {"start": "2037-12-01T00:00:00Z", "end": "2037-12-02T00:00:00Z"}


async def an_option(fhir: httpx.AsyncClient) -> dict[str, object]:
    cal = await practitioner_calendar(fhir)
    [option] = await find(fhir, **WINDOW, specialty=cal.specialty, _count=1)
    return option


async def test_book_without_participants_is_a_422_naming_participant(
        fhir: httpx.AsyncClient) -> None:
    option = await an_option(fhir)
    r = await book_option(fhir, {**option, "participant": []})
    assert r.status_code == 422, r.text
    assert outcome(r)["issue"][0]["expression"] == ["Appointment.participant"]


async def test_foreign_absolute_appointment_reference_is_refused(
        fhir: httpx.AsyncClient) -> None:
    held = await fhir.post("/Appointment/$hold", json=parameters(
        ("appt-resource", await an_option(fhir))))
    assert held.status_code == 200, held.text
    aid = bundle_resource(held)["id"]
    r = await fhir.post("/Appointment/$book", json={"resourceType": "Parameters", "parameter": [
        {"name": "appointment-reference",
         "valueReference": {"reference": f"http://elsewhere.example/fhir/Appointment/{aid}"}}]})
    assert r.status_code == 422, r.text
    assert "not on this server" in outcome(r)["issue"][0]["diagnostics"]
    still = await fhir.get(f"/Appointment/{aid}")
    assert still.json()["status"] == "pending"


async def test_absolute_appointment_reference_to_this_server_books(
        fhir: httpx.AsyncClient) -> None:
    held = await fhir.post("/Appointment/$hold", json=parameters(
        ("appt-resource", await an_option(fhir))))
    aid = bundle_resource(held)["id"]
    own = f"{str(fhir.base_url).rstrip('/')}/Appointment/{aid}"
    r = await fhir.post("/Appointment/$book", json={"resourceType": "Parameters", "parameter": [
        {"name": "appointment-reference", "valueReference": {"reference": own}}]})
    assert r.status_code == 200, r.text
    assert bundle_resource(r)["status"] == "booked"


async def test_patient_resource_reusing_an_existing_id_is_refused_not_relinked(
        fhir: httpx.AsyncClient) -> None:
    existing = await patient(fhir)
    pid = existing.split("/")[1]
    r = await book_option(fhir, await an_option(fhir), (
        "patient-resource", {"resourceType": "Patient", "id": pid,
                             "name": [{"family": "Somebody Else"}]}))
    assert r.status_code == 409, r.text
    assert outcome(r)["issue"][0]["expression"] == ["patient-resource"]
    stored = (await fhir.get(f"/Patient/{pid}")).json()
    assert stored["name"] == [{"family": "Tester"}]
