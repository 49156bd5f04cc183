"""Bookings on daylight-saving days are judged by the calendar's own wall clock.

New York, 2037: clocks spring forward on Sunday 8 March (02:00 EST -> 03:00 EDT) and fall back on
Sunday 1 November (02:00 EDT -> 01:00 EST). A calendar open 09:00-10:00 stays 09:00-10:00 local
on the spring day; one open 01:00-02:00 is open twice on the autumn day, once per real hour.
"""

from __future__ import annotations

import httpx

from tests.support.scheduling import (
    ALL_DAYS,
    find,
    hours,
    outcome,
    put_all,
    schedule,
    template,
    uid,
    utc,
)

NY = "America/New_York"


async def calendar(fhir: httpx.AsyncClient, start: str, end: str) -> str:
    pid = f"dst-{uid()}"
    await put_all(fhir, {"resourceType": "Practitioner", "id": pid},
                  schedule(f"s-{pid}", f"Practitioner/{pid}",
                           template(NY, hours(ALL_DAYS, start, end))))
    return f"Practitioner/{pid}"


async def book(fhir: httpx.AsyncClient, actor: str, start: str, end: str) -> httpx.Response:
    return await fhir.post("/Appointment", json={
        "resourceType": "Appointment", "status": "booked", "start": start, "end": end,
        "participant": [{"actor": {"reference": actor}, "status": "accepted"}]})


async def test_spring_forward_day_books_nine_oclock_daylight_time(
        fhir: httpx.AsyncClient) -> None:
    dr = await calendar(fhir, "09:00:00", "10:00:00")
    r = await book(fhir, dr, "2037-03-08T09:00:00-04:00", "2037-03-08T09:30:00-04:00")
    assert r.status_code == 201, r.text


async def test_spring_forward_day_refuses_nine_oclock_standard_time(
        fhir: httpx.AsyncClient) -> None:
    """09:00 at -05:00 is 10:00 on that day's wall clock: after closing."""
    dr = await calendar(fhir, "09:00:00", "10:00:00")
    r = await book(fhir, dr, "2037-03-08T09:30:00-05:00", "2037-03-08T10:00:00-05:00")
    assert r.status_code == 409, r.text
    assert "not available" in outcome(r)["issue"][0]["diagnostics"]


async def test_fall_back_day_books_the_repeated_hour_twice(fhir: httpx.AsyncClient) -> None:
    dr = await calendar(fhir, "01:00:00", "02:00:00")
    first = await book(fhir, dr, "2037-11-01T01:00:00-04:00", "2037-11-01T01:30:00-04:00")
    second = await book(fhir, dr, "2037-11-01T01:00:00-05:00", "2037-11-01T01:30:00-05:00")
    assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)


async def test_fall_back_day_refuses_two_oclock_standard_time(fhir: httpx.AsyncClient) -> None:
    dr = await calendar(fhir, "01:00:00", "02:00:00")
    r = await book(fhir, dr, "2037-11-01T02:00:00-05:00", "2037-11-01T02:30:00-05:00")
    assert r.status_code == 409, r.text


async def test_every_option_find_offers_on_both_change_days_is_bookable(
        fhir: httpx.AsyncClient) -> None:
    dr = await calendar(fhir, "00:30:00", "04:00:00")
    for day, midnight in (("2037-03-08", "-05:00"), ("2037-11-01", "-04:00")):
        options = await find(fhir, start=f"{day}T00:00:00{midnight}", end=f"{day}T12:00:00Z",
                             practitioner=dr, _count=50)
        assert options, day
        for option in options:
            r = await book(fhir, dr, option["start"], option["end"])
            assert r.status_code == 201, (option["start"], r.text)
        # the spring day lost an hour, the autumn day repeats one
        real_hours = (utc(options[-1]["end"]) - utc(options[0]["start"])).total_seconds() / 3600
        assert real_hours == (2.5 if day.endswith("03-08") else 4.5)
