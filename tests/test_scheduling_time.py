"""Time rules of $find: local hours survive daylight-saving changes, offsets are mandatory.

Expected answers are written out by hand as local times with the offset each zone has on that
day, so the tests do not reuse the server's own zone arithmetic: 09:00 in New York is
09:00-05:00 before 2037-03-08 and 09:00-04:00 after, and the other way round around 2037-11-01;
Berlin switches on 2037-03-29 and 2037-10-25.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.scheduling import (
    ALL_DAYS,
    Json,
    find,
    find_response,
    names_parameter,
    parameters,
    practitioner_calendar,
    starts,
    utc,
)


async def nine_oclock(fhir: httpx.AsyncClient, tz: str, start: str, end: str) -> list[Json]:
    """A calendar open 09:00-09:30 every day, searched over [start, end)."""
    cal = await practitioner_calendar(fhir, tz, ALL_DAYS, "09:00:00", "09:30:00")
    return await find(fhir, start=start, end=end, specialty=cal.specialty, _count=20)


@pytest.mark.parametrize(("tz", "start", "end", "expected"), [
    pytest.param("America/New_York", "2037-03-06T00:00:00Z", "2037-03-11T00:00:00Z", [
        "2037-03-06T09:00:00-05:00", "2037-03-07T09:00:00-05:00", "2037-03-08T09:00:00-04:00",
        "2037-03-09T09:00:00-04:00", "2037-03-10T09:00:00-04:00"], id="new-york-spring-forward"),
    pytest.param("America/New_York", "2037-10-30T00:00:00Z", "2037-11-04T00:00:00Z", [
        "2037-10-30T09:00:00-04:00", "2037-10-31T09:00:00-04:00", "2037-11-01T09:00:00-05:00",
        "2037-11-02T09:00:00-05:00", "2037-11-03T09:00:00-05:00"], id="new-york-fall-back"),
    pytest.param("Europe/Berlin", "2037-03-27T00:00:00Z", "2037-03-31T00:00:00Z", [
        "2037-03-27T09:00:00+01:00", "2037-03-28T09:00:00+01:00", "2037-03-29T09:00:00+02:00",
        "2037-03-30T09:00:00+02:00"], id="berlin-spring-forward"),
    pytest.param("Europe/Berlin", "2037-10-23T00:00:00Z", "2037-10-27T00:00:00Z", [
        "2037-10-23T09:00:00+02:00", "2037-10-24T09:00:00+02:00", "2037-10-25T09:00:00+01:00",
        "2037-10-26T09:00:00+01:00"], id="berlin-fall-back"),
])
async def test_template_hours_stay_local_across_daylight_saving_change(
    fhir: httpx.AsyncClient, tz: str, start: str, end: str, expected: list[str]
) -> None:
    options = await nine_oclock(fhir, tz, start, end)
    assert starts(options) == expected
    for option in options:
        assert utc(option["end"]) - utc(option["start"]) == utc("2037-01-01T00:30:00Z") - utc(
            "2037-01-01T00:00:00Z")
        assert option["minutesDuration"] == 30
        slot = option["contained"][0]
        assert (slot["start"], slot["end"]) == (option["start"], option["end"])


async def test_spring_forward_night_offers_only_real_hours(fhir: httpx.AsyncClient) -> None:
    """01:00-04:00 on Berlin's spring-forward night holds two real hours; 02:00 never exists."""
    cal = await practitioner_calendar(fhir, "Europe/Berlin", ALL_DAYS, "01:00:00", "04:00:00",
                                      slot=60)
    options = await find(fhir, start="2037-03-28T23:00:00Z", end="2037-03-29T05:00:00Z",
                         specialty=cal.specialty, _count=20)
    assert starts(options) == ["2037-03-29T01:00:00+01:00", "2037-03-29T03:00:00+02:00"]


async def test_fall_back_night_offers_the_repeated_hour_twice(fhir: httpx.AsyncClient) -> None:
    """01:00-04:00 on New York's fall-back night holds four real hours: 01:00 happens twice."""
    cal = await practitioner_calendar(fhir, "America/New_York", ALL_DAYS, "01:00:00", "04:00:00",
                                      slot=60)
    options = await find(fhir, start="2037-11-01T04:00:00Z", end="2037-11-01T12:00:00Z",
                         specialty=cal.specialty, _count=20)
    assert starts(options) == ["2037-11-01T01:00:00-04:00", "2037-11-01T01:00:00-05:00",
                               "2037-11-01T02:00:00-05:00", "2037-11-01T03:00:00-05:00"]
    assert [o["end"] for o in options] == [
        "2037-11-01T01:00:00-05:00", "2037-11-01T02:00:00-05:00",
        "2037-11-01T03:00:00-05:00", "2037-11-01T04:00:00-05:00"]


async def test_same_instant_in_different_offsets_gives_the_same_answer(
    fhir: httpx.AsyncClient
) -> None:
    cal = await practitioner_calendar(fhir, "America/New_York", ("mon", "tue", "wed"))
    spellings = [
        ("2037-12-01T14:00:00Z", "2037-12-03T00:00:00Z"),
        ("2037-12-01T09:00:00-05:00", "2037-12-02T19:00:00-05:00"),
        ("2037-12-01T23:00:00+09:00", "2037-12-03T09:00:00+09:00"),
        ("2037-12-01T14:00:00.000+00:00", "2037-12-02T20:30:00-03:30"),
    ]
    answers = [await find(fhir, start=s, end=e, specialty=cal.specialty, _count=30)
               for s, e in spellings]
    assert answers[0], "the window holds open hours"
    assert starts(answers[0])[0] == "2037-12-01T09:00:00-05:00"
    for other in answers[1:]:
        assert other == answers[0]
    posted = await fhir.post("/Appointment/$find", json=parameters(
        ("start", "2037-12-01T15:00:00+01:00"), ("end", "2037-12-02T16:00:00-08:00"),
        ("specialty", cal.specialty), ("_count", "30")))
    assert [e["resource"] for e in posted.json()["entry"]] == answers[0]


@pytest.mark.parametrize(("name", "value"), [
    ("start", "2037-12-01T09:00:00"),
    ("end", "2037-12-08T09:00:00"),
    ("start", "2037-12-01"),
    ("startTime", "2037-12-01T09:00:00"),
    ("endTime", "2037-12-08T17:00"),
])
async def test_find_input_without_an_offset_is_a_400_naming_the_parameter(
    fhir: httpx.AsyncClient, name: str, value: str
) -> None:
    window = {"start": "2037-12-01T00:00:00Z", "end": "2037-12-08T00:00:00Z"}
    counterpart = {"start": "start", "end": "end", "startTime": "start", "endTime": "end"}[name]
    window.pop(counterpart)
    r = await fhir.get("/Appointment/$find", params={**window, name: value})
    assert r.status_code == 400
    assert names_parameter(r, name)


async def test_post_find_without_an_offset_is_a_400_naming_the_parameter(
    fhir: httpx.AsyncClient
) -> None:
    r = await fhir.post("/Appointment/$find", json=parameters(
        ("start", "2037-12-01T00:00:00Z"), ("end", "2037-12-08T00:00:00")))
    assert r.status_code == 400
    assert names_parameter(r, "end")


async def test_window_end_before_start_is_a_400(fhir: httpx.AsyncClient) -> None:
    r = await find_response(fhir, start="2037-12-08T00:00:00Z", end="2037-12-01T00:00:00Z")
    assert r.status_code == 400
    assert names_parameter(r, "end")
