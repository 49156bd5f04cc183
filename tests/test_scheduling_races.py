"""The booking guard under contention: many clients, two server processes, one database.

Each test fires 100 requests for the same time at once, alternating between two ``fhir-sched
serve`` processes that share one store (a SQLite file, or a MongoDB database when the suite runs
against MongoDB). What must hold is what the contract promises: as many winners as the time has
capacity, every loser a 409 OperationOutcome, and in the database exactly the winners' claims.
The store is opened directly for that last check, so a guard that answered correctly but wrote
stray claims (or none) would still fail.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from fhir_sched.scheduling import claims as codec
from tests.support.scheduling import (
    Calendar,
    Json,
    book_option,
    booked_appointment,
    find,
    hold,
    outcome,
    practitioner_calendar,
    uid,
    utc,
)
from tests.support.server import ServerProcess, clients, opened_store, servers, store_url

N = 100
WINDOW = {"start": "2037-12-01T00:00:00Z", "end": "2037-12-08T00:00:00Z"}


@pytest.fixture(scope="module")
def pair(store_kind: str, mongo_uri: str | None) -> Iterator[tuple[str, list[ServerProcess]]]:
    """Two server processes on one fresh database of the adapter under test."""
    url = store_url(store_kind, mongo_uri, "races")
    with servers(url, 2) as procs:
        yield url, procs


def expected_keys(actor: str, appointment: Json, seats: range) -> set[str]:
    """The claim keys a fully booked ``appointment`` span must hold: every seat of every
    5-minute unit, spelled by the one claims codec the guard and $find use."""
    start, end = utc(appointment["start"]), utc(appointment["end"])
    assert seats.start == 0
    return set(codec.unit_keys(actor, start, end, seats.stop))


async def race(pair_clients: list[httpx.AsyncClient], send: Any) -> list[httpx.Response]:
    """``N`` copies of one request, alternating servers, all in flight together."""
    return list(await asyncio.gather(
        *(send(pair_clients[n % len(pair_clients)]) for n in range(N))))


def winners(responses: list[httpx.Response], ok: int, expected: int) -> list[Json]:
    """Check the split into ``expected`` successes and 409 conflicts; return the winners."""
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {ok: expected, 409: N - expected}, statuses
    for r in responses:
        if r.status_code == 409:  # $book: the OperationOutcome inside a Bundle (ITI-117)
            assert outcome(r)["issue"][0]["code"] == "conflict"
    out = []
    for r in responses:
        if r.status_code == ok:
            body = r.json()
            out.append(body["entry"][0]["resource"] if body["resourceType"] == "Bundle" else body)
    return out


async def claims_of_actor(url: str, actor: str) -> list[tuple[str, str, str]]:
    async with opened_store(url) as store:
        return await store.claim_keys(codec.resource_prefix(actor))


async def one_option(client: httpx.AsyncClient, cal: Calendar) -> Json:
    options = await find(client, **WINDOW, specialty=cal.specialty, _count=1)
    assert len(options) == 1
    return options[0]


async def test_100_concurrent_book_calls_on_two_servers_book_exactly_one(
    pair: tuple[str, list[ServerProcess]], fhir_schema: Any
) -> None:
    url, procs = pair
    async with clients(procs, fhir_schema) as cs:
        cal = await practitioner_calendar(cs[0])
        option = await one_option(cs[1], cal)
        [won] = winners(await race(cs, lambda c: book_option(c, option)), 200, 1)
        assert won["status"] == "booked"
        claims = await claims_of_actor(url, cal.ref)
        assert {k for k, _, _ in claims} == expected_keys(cal.ref, option, range(1))
        assert {(t, i) for _, t, i in claims} == {("Appointment", won["id"])}
        search = await cs[1].get("/Appointment", params={
            "practitioner": cal.ref, "status": "booked", "_total": "accurate"})
        assert search.json()["total"] == 1


async def test_100_concurrent_plain_posts_of_booked_appointments_create_exactly_one(
    pair: tuple[str, list[ServerProcess]], fhir_schema: Any
) -> None:
    url, procs = pair
    async with clients(procs, fhir_schema) as cs:
        cal = await practitioner_calendar(cs[0])
        option = await one_option(cs[0], cal)
        responses = await race(cs, lambda c: booked_appointment(
            c, cal.ref, option["start"], option["end"]))
        [won] = winners(responses, 201, 1)
        claims = await claims_of_actor(url, cal.ref)
        assert {k for k, _, _ in claims} == expected_keys(cal.ref, option, range(1))
        assert {i for _, _, i in claims} == {won["id"]}


async def test_100_concurrent_holds_on_two_servers_hold_exactly_one(
    pair: tuple[str, list[ServerProcess]], fhir_schema: Any
) -> None:
    url, procs = pair
    async with clients(procs, fhir_schema) as cs:
        cal = await practitioner_calendar(cs[0])
        option = await one_option(cs[0], cal)
        [won] = winners(await race(cs, lambda c: hold(c, option)), 200, 1)
        assert won["status"] == "pending"
        claims = await claims_of_actor(url, cal.ref)
        assert {k for k, _, _ in claims} == expected_keys(cal.ref, option, range(1))
        assert {i for _, _, i in claims} == {won["id"]}


async def test_capacity_three_admits_exactly_three_of_100_concurrent_bookings(
    pair: tuple[str, list[ServerProcess]], fhir_schema: Any
) -> None:
    url, procs = pair
    async with clients(procs, fhir_schema) as cs:
        cal = await practitioner_calendar(cs[0], capacity=3)
        option = await one_option(cs[0], cal)
        won = winners(await race(cs, lambda c: book_option(c, option)), 200, 3)
        assert all(w["status"] == "booked" for w in won)
        claims = await claims_of_actor(url, cal.ref)
        assert {k for k, _, _ in claims} == expected_keys(cal.ref, option, range(3))
        per_owner = Counter(i for _, _, i in claims)
        assert set(per_owner) == {w["id"] for w in won}
        assert set(per_owner.values()) == {6}  # a 30-minute visit: six units each
        # Full now: $find must stop offering the time that all three took.
        again = await find(cs[1], **WINDOW, specialty=cal.specialty, _count=1)
        assert again[0]["start"] != option["start"]


async def test_book_hold_and_plain_post_racing_each_other_leave_one_winner(
    pair: tuple[str, list[ServerProcess]], fhir_schema: Any
) -> None:
    """Every door goes through the same guard: mixing them changes nothing."""
    url, procs = pair
    async with clients(procs, fhir_schema) as cs:
        cal = await practitioner_calendar(cs[0])
        option = await one_option(cs[0], cal)
        doors = (
            lambda c: book_option(c, option),
            lambda c: hold(c, option),
            lambda c: booked_appointment(c, cal.ref, option["start"], option["end"]),
        )
        responses = list(await asyncio.gather(
            *(doors[n % 3](cs[n % 2]) for n in range(N))))
        statuses = Counter(r.status_code for r in responses)
        assert statuses[409] == N - 1, statuses
        assert statuses[200] + statuses[201] == 1, statuses
        claims = await claims_of_actor(url, cal.ref)
        assert {k for k, _, _ in claims} == expected_keys(cal.ref, option, range(1))
        assert len({i for _, _, i in claims}) == 1


async def test_100_bookings_racing_for_a_referrals_last_visit_on_two_servers_leave_one(
    pair: tuple[str, list[ServerProcess]], fhir_schema: Any
) -> None:
    """Each booking at its own time, so only the referral's one visit is contended: the
    visit is a claim like a seat of time, and exactly one booking may take it."""
    from fhir_sched.scheduling.booking_rules import RULE_SYSTEM
    from fhir_sched.scheduling.visit_types import VISIT_TYPE_URL

    url, procs = pair
    system, code = "https://clinic.example/visit-types", f"specialist-{uid()}"
    async with clients(procs, fhir_schema) as cs:
        service = f"hs-{uid()}"
        r = await cs[0].put(f"/HealthcareService/{service}", json={
            "resourceType": "HealthcareService", "id": service, "extension": [{
                "url": VISIT_TYPE_URL, "extension": [
                    {"url": "code", "valueCoding": {"system": system, "code": code}},
                    {"url": "minutesDuration", "valuePositiveInt": 30},
                    {"url": "referralRequired", "valueBoolean": True}]}]})
        assert r.status_code == 201, r.text
        patient = await cs[0].post("/Patient", json={"resourceType": "Patient"})
        pid = f"Patient/{patient.json()['id']}"
        request = await cs[1].post("/ServiceRequest", json={
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "subject": {"reference": pid}, "quantityQuantity": {"value": 1},
            "code": {"coding": [{"system": system, "code": code}]}})
        sid = request.json()["id"]
        first = utc("2038-03-01T00:00:00Z")

        def booking(n: int) -> Json:
            start = first + timedelta(minutes=30 * n)
            return {"resourceType": "Appointment", "status": "booked",
                    "start": start.isoformat().replace("+00:00", "Z"),
                    "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
                    "appointmentType": {"coding": [{"system": system, "code": code}]},
                    "participant": [
                        {"actor": {"reference": f"HealthcareService/{service}"},
                         "status": "accepted"},
                        {"actor": {"reference": pid}, "status": "accepted"}]}

        responses = await asyncio.gather(*(cs[n % 2].post("/Appointment", json=booking(n))
                                           for n in range(N)))
        assert Counter(r.status_code for r in responses) == {201: 1, 422: N - 1}
        for r in responses:
            if r.status_code == 422:
                [coding] = r.json()["issue"][0]["details"]["coding"]
                assert (coding["system"], coding["code"]) == (RULE_SYSTEM, "referral-used")
        [won] = [r.json() for r in responses if r.status_code == 201]
        assert won["basedOn"] == [{"reference": f"ServiceRequest/{sid}"}]
        async with opened_store(url) as store:
            visits = await store.claim_keys(codec.referral_prefix(sid))
        assert [(t, i) for _, t, i in visits] == [("Appointment", won["id"])]
