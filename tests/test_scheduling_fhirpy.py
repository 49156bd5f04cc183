"""A real third-party FHIR client (fhirpy, over aiohttp) runs find -> hold -> book -> cancel.

Our own test client shares our assumptions about headers, bodies and URLs; fhirpy does not, so
this catches the things only a foreign client trips over (content types, ``$`` in paths, how an
operation's answer is read back).
"""

from __future__ import annotations

from typing import Any

import httpx
from fhirpy import AsyncFHIRClient

from tests.support.scheduling import HOLD_EXPIRES_URL, patient, practitioner_calendar
from tests.support.server import ServerProcess

WINDOW = {"start": "2037-12-01T00:00:00Z", "end": "2037-12-08T00:00:00Z"}


def only_appointment(bundle: Any) -> Any:
    assert bundle["resourceType"] == "Bundle"
    [entry] = bundle["entry"]
    return entry["resource"]


async def test_fhirpy_finds_holds_books_and_cancels(
    server: ServerProcess, fhir: httpx.AsyncClient, fhir_schema: Any
) -> None:
    cal = await practitioner_calendar(fhir)
    who = await patient(fhir)
    client = AsyncFHIRClient(url=server.base, extra_headers={"Accept": "application/fhir+json"})

    found = await client.execute("Appointment/$find", method="get", params={
        **WINDOW, "specialty": cal.specialty, "patient": who, "_count": 2})
    assert fhir_schema.errors(found) == []
    assert len(found["entry"]) == 2
    assert "total" not in found  # a page of a longer answer: not counted, a next link given
    assert any(lk["relation"] == "next" for lk in found["link"])
    option = found["entry"][0]["resource"]
    assert option["status"] == "proposed"
    assert option["start"] == "2037-12-01T09:00:00-05:00"

    held = only_appointment(await client.execute("Appointment/$hold", method="post", data={
        "resourceType": "Parameters", "parameter": [{"name": "appt-resource",
                                                      "resource": option}]}))
    assert held["status"] == "pending"
    assert any(e["url"] == HOLD_EXPIRES_URL for e in held["extension"])

    booked = only_appointment(await client.execute(
        f"Appointment/{held['id']}/$book", method="post", data={"resourceType": "Parameters"}))
    assert (booked["id"], booked["status"]) == (held["id"], "booked")
    assert fhir_schema.errors(booked) == []

    after_booking = await client.execute("Appointment/$find", method="get", params={
        **WINDOW, "specialty": cal.specialty, "_count": 1})
    assert after_booking["entry"][0]["resource"]["start"] != option["start"]

    appointment = await client.reference("Appointment", booked["id"]).to_resource()
    appointment["status"] = "cancelled"
    await appointment.save()
    stored = await client.reference("Appointment", booked["id"]).to_resource()
    assert stored["status"] == "cancelled"

    freed = await client.execute("Appointment/$find", method="get", params={
        **WINDOW, "specialty": cal.specialty, "_count": 1})
    assert freed["entry"][0]["resource"]["start"] == option["start"]
    mine = await client.resources("Appointment").search(
        patient=who, status="booked").fetch_all()
    assert mine == []
