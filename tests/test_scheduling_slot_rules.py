"""A Slot that a booking holds keeps its time: moving, withdrawing or deleting it is a 409
naming the appointment, until the appointment is moved or cancelled."""

from __future__ import annotations

import httpx

from tests.support.scheduling import put, uid

START, END = "2031-04-01T09:00:00Z", "2031-04-01T09:30:00Z"


async def booked_slot(client: httpx.AsyncClient) -> tuple[dict, dict]:
    key = uid()
    doc = f"Practitioner/pr-{key}"
    await put(client, {"resourceType": "Practitioner", "id": f"pr-{key}"})
    await put(client, {"resourceType": "Schedule", "id": f"sc-{key}",
                       "actor": [{"reference": doc}]})
    slot = await put(client, {"resourceType": "Slot", "id": f"sl-{key}",
                              "schedule": {"reference": f"Schedule/sc-{key}"},
                              "status": "free", "start": START, "end": END})
    r = await client.post("/Appointment", json={
        "resourceType": "Appointment", "status": "booked", "start": START, "end": END,
        "slot": [{"reference": f"Slot/{slot['id']}"}],
        "participant": [{"actor": {"reference": doc}, "status": "accepted"}]})
    assert r.status_code == 201, r.text
    current = (await client.get(f"/Slot/{slot['id']}")).json()
    assert current["status"] == "busy"
    return current, r.json()


def without_meta(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "meta"}


async def test_deleting_a_held_slot_is_a_409(fhir: httpx.AsyncClient) -> None:
    slot, appt = await booked_slot(fhir)
    r = await fhir.delete(f"/Slot/{slot['id']}")
    assert r.status_code == 409, r.text
    assert f"Appointment/{appt['id']}" in r.json()["issue"][0]["diagnostics"]


async def test_moving_a_held_slot_is_a_409(fhir: httpx.AsyncClient) -> None:
    slot, _ = await booked_slot(fhir)
    moved = {**without_meta(slot), "start": "2031-04-01T10:00:00Z", "end": "2031-04-01T10:30:00Z"}
    r = await fhir.put(f"/Slot/{slot['id']}", json=moved)
    assert r.status_code == 409, r.text


async def test_withdrawing_a_held_slot_is_a_409(fhir: httpx.AsyncClient) -> None:
    slot, _ = await booked_slot(fhir)
    r = await fhir.put(f"/Slot/{slot['id']}",
                       json={**without_meta(slot), "status": "busy-unavailable"})
    assert r.status_code == 409, r.text


async def test_a_slot_may_be_withdrawn_once_its_booking_is_cancelled(
        fhir: httpx.AsyncClient) -> None:
    slot, appt = await booked_slot(fhir)
    r = await fhir.put(f"/Appointment/{appt['id']}",
                       json={**without_meta(appt), "status": "cancelled"})
    assert r.status_code == 200, r.text
    freed = (await fhir.get(f"/Slot/{slot['id']}")).json()
    assert freed["status"] == "free"
    r = await fhir.put(f"/Slot/{slot['id']}",
                       json={**without_meta(freed), "status": "busy-unavailable"})
    assert r.status_code == 200, r.text


async def test_a_held_slot_may_still_change_its_comment(fhir: httpx.AsyncClient) -> None:
    slot, _ = await booked_slot(fhir)
    r = await fhir.put(f"/Slot/{slot['id']}", json={**without_meta(slot), "comment": "room 4"})
    assert r.status_code == 200, r.text
