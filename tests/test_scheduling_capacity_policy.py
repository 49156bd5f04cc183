"""One capacity policy per resource, read by the guard and by $find alike.

A practitioner who works from several Schedules (two clinics, a calendar of explicit Slots) has
one capacity: $find never offers time that $book then refuses, and $book never admits time that
$find says is full. A Schedule that would give the resource a second, different policy is
refused on write, since the guard could not tell which one an appointment meant.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tests.support.scheduling import (
    book_option,
    bundle_resource,
    find,
    hours,
    outcome,
    put,
    put_all,
    schedule,
    template,
    uid,
)

DAY = "2031-09-02"  # a Tuesday
NINE = f"{DAY}T09:00:00+00:00"


@dataclass
class TwoClinics:
    practitioner: str
    clinics: tuple[str, str]  # Location references
    slot_schedule: str


async def two_clinics(client: httpx.AsyncClient, capacity: int = 2) -> TwoClinics:
    """A practitioner on two Schedules at two locations with the same hours and capacity, plus
    a third Schedule holding one explicit free Slot at 09:00."""
    key = uid()
    doc = f"Practitioner/pr-{key}"
    locs = (f"Location/l1-{key}", f"Location/l2-{key}")
    await put_all(client, {"resourceType": "Practitioner", "id": f"pr-{key}"},
                  *({"resourceType": "Location", "id": ref.split("/")[1]} for ref in locs))
    for n, loc in enumerate(locs):
        body = schedule(f"sc{n}-{key}", doc, template(
            "UTC", hours(("tue",), "09:00:00", "12:00:00"), capacity=capacity))
        body["actor"].append({"reference": loc})
        await put(client, body)
    slots = f"scs-{key}"
    await put(client, {"resourceType": "Schedule", "id": slots, "actor": [{"reference": doc}]})
    await put(client, {"resourceType": "Slot", "id": f"sl-{key}",
                       "schedule": {"reference": f"Schedule/{slots}"}, "status": "free",
                       "start": NINE, "end": f"{DAY}T09:30:00+00:00"})
    return TwoClinics(doc, locs, slots)


async def options_at_nine(client: httpx.AsyncClient, c: TwoClinics, **extra: str) -> list[dict]:
    options = await find(client, start=NINE, end=f"{DAY}T09:30:00+00:00",
                         practitioner=c.practitioner, _count=20, **extra)
    return [o for o in options if o["start"].startswith(f"{DAY}T09:00")]


async def test_each_schedule_offers_the_shared_capacity(fhir: httpx.AsyncClient) -> None:
    c = await two_clinics(fhir)
    for loc in c.clinics:
        options = await options_at_nine(fhir, c, location=loc)
        assert options, f"nothing offered at {loc}"
        assert bundle_resource(await book_option(fhir, options[0]))["status"] == "booked"


async def test_find_offers_nothing_once_the_resource_is_full(fhir: httpx.AsyncClient) -> None:
    c = await two_clinics(fhir)
    for loc in c.clinics:
        bundle_resource(await book_option(fhir, (await options_at_nine(fhir, c,
                                                                       location=loc))[0]))
    assert await options_at_nine(fhir, c) == []  # neither clinic, nor the explicit Slot


async def test_book_refuses_what_find_says_is_full(fhir: httpx.AsyncClient) -> None:
    c = await two_clinics(fhir)
    first = (await options_at_nine(fhir, c, location=c.clinics[0]))[0]
    second = (await options_at_nine(fhir, c, location=c.clinics[1]))[0]
    spare = (await options_at_nine(fhir, c, location=c.clinics[1]))[0]
    bundle_resource(await book_option(fhir, first))
    bundle_resource(await book_option(fhir, second))
    r = await book_option(fhir, spare)  # offered before the others took the time
    assert r.status_code == 409, r.text
    assert c.practitioner in outcome(r)["issue"][0]["diagnostics"]


async def test_book_admits_what_find_offers_after_a_cancellation(
        fhir: httpx.AsyncClient) -> None:
    c = await two_clinics(fhir, capacity=1)
    booked = bundle_resource(await book_option(
        fhir, (await options_at_nine(fhir, c, location=c.clinics[0]))[0]))
    assert await options_at_nine(fhir, c) == []
    booked["status"] = "cancelled"
    r = await fhir.put(f"/Appointment/{booked['id']}", json=booked)
    assert r.status_code == 200, r.text
    again = await options_at_nine(fhir, c, location=c.clinics[1])
    assert again
    assert bundle_resource(await book_option(fhir, again[0]))["status"] == "booked"


async def test_a_schedule_giving_the_resource_another_capacity_is_refused(
        fhir: httpx.AsyncClient) -> None:
    c = await two_clinics(fhir, capacity=2)
    other = schedule(f"sc-other-{uid()}", c.practitioner, template(
        "UTC", hours(("wed",), "09:00:00", "12:00:00"), capacity=3))
    r = await fhir.put(f"/Schedule/{other['id']}", json=other)
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Schedule.actor[0]"]
    assert "capacity 2" in issue["diagnostics"]


async def test_an_inactive_schedule_may_declare_another_capacity(
        fhir: httpx.AsyncClient) -> None:
    c = await two_clinics(fhir, capacity=2)
    other = schedule(f"sc-old-{uid()}", c.practitioner, template(
        "UTC", hours(("wed",), "09:00:00", "12:00:00"), capacity=3))
    other["active"] = False
    r = await fhir.put(f"/Schedule/{other['id']}", json=other)
    assert r.status_code == 201, r.text
