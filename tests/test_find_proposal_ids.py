"""Every $find proposal has an id a pure IHE client can hold and book by reference.

The id leads back to exactly what was offered (it is a digest of the proposal, kept store-side
for an hour), it never names a stored Appointment, and an id the server did not make, or one
that has expired, is refused the way ITI-116 refuses an appointment that cannot be held.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import orjson

from fhir_sched.service.proposals import proposal_id
from fhir_sched.timeutil import format_instant
from tests.support.scheduling import (
    Json,
    actors,
    bundle_resource,
    find,
    hold,
    outcome,
    parameters,
    practitioner_calendar,
    starts,
)
from tests.support.server import ServerProcess, opened_store

WINDOW = {"start": "2037-12-01T00:00:00Z", "end": "2037-12-08T00:00:00Z"}
ID = re.compile(r"^proposal-[a-z2-7]{26}$")


def by_reference(appt_id: str) -> Json:
    return parameters(("appointment-reference", {"reference": f"Appointment/{appt_id}"}))


async def options(fhir: httpx.AsyncClient, count: int = 3) -> list[Json]:
    cal = await practitioner_calendar(fhir)
    return await find(fhir, **WINDOW, specialty=cal.specialty, _count=count)


async def test_each_proposal_has_a_valid_distinct_id(fhir: httpx.AsyncClient) -> None:
    found = await options(fhir, 5)
    ids = [o["id"] for o in found]
    assert all(ID.match(i) for i in ids), ids
    assert len(set(ids)) == 5


async def test_the_same_option_offered_again_has_the_same_id(fhir: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(fhir)
    first = await find(fhir, **WINDOW, specialty=cal.specialty, _count=2)
    again = await find(fhir, start="2037-12-01T05:00:00Z", end="2037-12-03T00:00:00Z",
                       specialty=cal.specialty, _count=2)
    assert [o["id"] for o in again] == [o["id"] for o in first]


async def test_a_proposal_id_holds_and_the_hold_books(fhir: httpx.AsyncClient) -> None:
    found = await options(fhir)
    chosen = found[1]
    r = await fhir.post("/Appointment/$hold", json=by_reference(chosen["id"]))
    held = bundle_resource(r)
    assert held["status"] == "pending"
    assert held["id"] != chosen["id"] and not held["id"].startswith("proposal-")
    assert (held["start"], held["end"]) == (chosen["start"], chosen["end"])
    assert actors(held) == actors(chosen)
    booked = bundle_resource(await fhir.post("/Appointment/$book",
                                             json=by_reference(held["id"])))
    assert booked["id"] == held["id"] and booked["status"] == "booked"
    stored = (await fhir.get(f"/Appointment/{held['id']}")).json()
    assert stored["status"] == "booked"
    offer = await fhir.get(f"/Appointment/{chosen['id']}")  # the offer, as made: not the booking
    assert offer.json()["status"] == "proposed" and offer.json()["id"] == chosen["id"]


async def test_a_proposal_id_books_directly(fhir: httpx.AsyncClient) -> None:
    found = await options(fhir)
    booked = bundle_resource(await fhir.post("/Appointment/$book",
                                             json=by_reference(found[0]["id"])))
    assert booked["status"] == "booked"
    assert booked["start"] == found[0]["start"]


async def test_a_booked_proposal_is_not_offered_again_and_cannot_be_held_twice(
    fhir: httpx.AsyncClient
) -> None:
    cal = await practitioner_calendar(fhir)
    found = await find(fhir, **WINDOW, specialty=cal.specialty, _count=2)
    assert (await fhir.post("/Appointment/$book", json=by_reference(found[0]["id"]))
            ).status_code == 200
    after = await find(fhir, **WINDOW, specialty=cal.specialty, _count=2)
    assert starts(after)[0] == found[1]["start"]
    second = await fhir.post("/Appointment/$hold", json=by_reference(found[0]["id"]))
    assert second.status_code == 409, second.text


async def test_an_unknown_or_tampered_proposal_id_is_a_404_not_found(
    fhir: httpx.AsyncClient
) -> None:
    real = (await options(fhir, 1))[0]["id"]
    tampered = real[:-1] + ("a" if real[-1] != "a" else "b")
    for bad in (tampered, "proposal-" + "a" * 26, "proposal-short"):
        for op in ("$hold", "$book"):
            r = await fhir.post(f"/Appointment/{op}", json=by_reference(bad))
            assert r.status_code == 404, (op, bad, r.text)
            body = r.json()
            oo = body if body["resourceType"] == "OperationOutcome" else \
                body["entry"][0]["resource"]
            assert any(i["code"] == "not-found" and i["severity"] == "fatal"
                       for i in oo["issue"]), oo


async def test_an_expired_proposal_is_a_409_not_found(fhir: httpx.AsyncClient,
                                                      server: ServerProcess) -> None:
    offered = (await options(fhir, 1))[0]
    body = {k: v for k, v in offered.items() if k != "id"}
    pid = proposal_id(body)
    assert pid == offered["id"]  # the documented digest
    past = datetime.now(UTC) - timedelta(minutes=1)
    async with opened_store(server.store) as store:
        # an option kept from an earlier search whose hour is over (content altered so that
        # the live one from this search is not the one overwritten)
        stale = {**body, "comment": "offered long ago"}
        await store.put_proposals([(proposal_id(stale), orjson.dumps(stale))],
                                  format_instant(past), format_instant(past))
    r = await fhir.post("/Appointment/$hold", json=by_reference(proposal_id(stale)))
    assert r.status_code == 409, r.text
    issues = outcome(r)["issue"]
    assert any(i["code"] == "not-found" and "expired" in i["diagnostics"] for i in issues)


async def test_a_stored_appointment_cannot_take_a_proposal_id(fhir: httpx.AsyncClient) -> None:
    pid = "proposal-" + "b" * 26
    r = await fhir.put(f"/Appointment/{pid}", json={
        "resourceType": "Appointment", "id": pid, "status": "proposed",
        "participant": [{"actor": {"reference": "Patient/x"}, "status": "needs-action"}]})
    assert r.status_code == 422, r.text
    assert outcome(r)["issue"][0]["expression"] == ["Appointment.id"]


async def test_posting_the_proposal_back_still_holds_it(fhir: httpx.AsyncClient) -> None:
    chosen = (await options(fhir, 1))[0]
    held = bundle_resource(await hold(fhir, chosen))
    assert held["status"] == "pending"
    assert held["id"] != chosen["id"]
    assert held["start"] == chosen["start"]


async def test_a_proposal_holds_at_its_instance_url(fhir: httpx.AsyncClient) -> None:
    chosen = (await options(fhir, 1))[0]
    r = await fhir.post(f"/Appointment/{chosen['id']}/$hold",
                        json={"resourceType": "Parameters"})
    held = bundle_resource(r)
    assert held["status"] == "pending" and held["start"] == chosen["start"]


async def test_a_proposal_can_be_read_at_its_full_url(fhir: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(fhir)
    r = await fhir.get("/Appointment/$find", params={**WINDOW, "specialty": cal.specialty,
                                                      "_count": "1"})
    [entry] = [e for e in r.json()["entry"] if e["search"]["mode"] == "match"]
    read = await fhir.get(entry["fullUrl"])
    assert read.status_code == 200, read.text
    assert read.json() == entry["resource"]
    assert "etag" not in read.headers  # not a stored version


async def test_reading_a_proposal_id_the_server_never_made_is_404(
        fhir: httpx.AsyncClient) -> None:
    r = await fhir.get("/Appointment/proposal-" + "a" * 26)
    assert r.status_code == 404, r.text
    assert outcome(r)["issue"][0]["code"] == "not-found"
