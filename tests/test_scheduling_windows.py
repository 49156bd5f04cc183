"""$find answers do not depend on how much of the window the server had to read.

The server reads busy time for a leading part of the window and widens it until the answer is
settled (so a year-long window costs what a month does). A wrong stopping rule would show up as
answers that change with ``_count`` or with the window's length: an option just past the part
read first would be missing, or a later one would jump ahead of it. So a crowded calendar,
with buffers straddling the boundaries, is asked the same question several ways and the answers
must agree: each shorter answer a prefix of the longest, and every one of them clear of every
booking and its buffer.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import httpx

from tests.support.scheduling import (
    ALL_DAYS,
    booked_appointment,
    find,
    hours,
    parameters,
    put_all,
    schedule,
    starts,
    template,
    uid,
    utc,
)

TZ_OFFSET = "-05:00"  # New York in December and January


def at(day: int, hhmm: str) -> str:
    """Local time on 2037-12-(day), a date in a month with a fixed New York offset."""
    base = datetime.fromisoformat(f"2037-12-01T{hhmm}:00{TZ_OFFSET}")
    return (base + timedelta(days=day - 1)).isoformat()


async def test_answers_agree_across_count_and_window_length(fhir: httpx.AsyncClient) -> None:
    key = uid()
    spec = ("http://example.org/specialty", f"windows-{key}")
    actor = f"Practitioner/pr-{key}"
    await put_all(
        fhir,
        {"resourceType": "Practitioner", "id": f"pr-{key}"},
        schedule(f"sc-{key}", actor,
                 template("America/New_York", hours(["mon", "tue", "wed", "thu", "fri"],
                                                    "09:00:00", "12:00:00"),
                          slot=30, buffer_after=10),
                 specialty=spec))
    rng = random.Random(20261201)
    bookings: list[tuple[datetime, datetime]] = []  # each booking with its buffer
    # Three weeks of weekdays, most of each morning taken by 20-minute visits whose 10-minute
    # buffers end on the slot grid, so every free slot sits right after someone's buffer.
    for day in range(1, 22):
        if datetime.fromisoformat(at(day, "09:00")).weekday() >= 5:
            continue
        for start in ("09:00", "10:00", "11:00"):
            if rng.random() < 0.8:
                r = await booked_appointment(fhir, actor, at(day, start),
                                             (datetime.fromisoformat(at(day, start))
                                              + timedelta(minutes=20)).isoformat())
                assert r.status_code == 201, r.text
                bookings.append((utc(at(day, start)),
                                 utc(at(day, start)) + timedelta(minutes=30)))
    token = f"{spec[0]}|{spec[1]}"
    month = {"start": "2037-12-01T00:00:00Z", "end": "2038-01-01T00:00:00Z"}
    year = {"start": "2037-12-01T00:00:00Z", "end": "2038-12-01T00:00:00Z"}
    longest = await find(fhir, **year, specialty=token, _count=12)
    assert len(longest) == 12
    assert starts(await find(fhir, **month, specialty=token, _count=12)) == starts(longest)
    for count in (1, 2, 5):
        assert starts(await find(fhir, **year, specialty=token, _count=count)) == \
            starts(longest)[:count]
    buffer = timedelta(minutes=10)
    for option in longest:
        s, e = utc(option["start"]), utc(option["end"])
        # A booking holds [start, start + 20 min + buffer); an option needs its own buffer too.
        assert all(e + buffer <= b0 or s >= b1 for b0, b1 in bookings), option["start"]
    assert [utc(o["start"]) for o in longest] == sorted(utc(o["start"]) for o in longest)


async def test_busy_time_just_past_the_first_part_read_still_counts(
    fhir: httpx.AsyncClient
) -> None:
    """A round-the-clock calendar whose only free half hour on the first day (23:30) needs its
    10-minute buffer at 00:00-00:10, where the next day's first booking starts: reading only the
    first day's busy time would offer it."""
    key = uid()
    spec = ("http://example.org/specialty", f"edge-{key}")
    actor = f"Practitioner/pr-{key}"
    await put_all(
        fhir,
        {"resourceType": "Practitioner", "id": f"pr-{key}"},
        schedule(f"sc-{key}", actor,
                 template("America/New_York", hours(ALL_DAYS, "00:00:00", "00:00:00"),
                          slot=30, buffer_after=10),
                 specialty=spec))
    for start, end in ((at(1, "00:00"), at(1, "23:20")), (at(2, "00:00"), at(2, "00:30"))):
        assert (await booked_appointment(fhir, actor, start, end)).status_code == 201
    first = await find(fhir, start=at(1, "00:00"), end="2038-01-01T00:00:00Z",
                       specialty=f"{spec[0]}|{spec[1]}", _count=1)
    assert starts(first) == [at(2, "01:00")]


async def test_an_option_reaching_past_the_first_part_read_is_not_overtaken(
    fhir: httpx.AsyncClient
) -> None:
    """Two practitioners: one works in 60-minute units on a quarter-hour grid from noon to noon,
    the other in 15-minute units from midnight to midnight. The earliest option, 23:15 with the
    first, sits in a unit that ends after midnight; the second's 23:30 ends by midnight. Stopping
    after reading the first day would answer 23:30."""
    key = uid()
    spec = ("http://example.org/specialty", f"reach-{key}")
    first, second = f"Practitioner/pa-{key}", f"Practitioner/pb-{key}"
    await put_all(
        fhir,
        {"resourceType": "Practitioner", "id": f"pa-{key}"},
        {"resourceType": "Practitioner", "id": f"pb-{key}"},
        schedule(f"sa-{key}", first,
                 template("America/New_York", hours(ALL_DAYS, "12:00:00", "12:00:00"),
                          slot=60, alignment=15),
                 specialty=spec),
        schedule(f"sb-{key}", second,
                 template("America/New_York", hours(ALL_DAYS, "00:00:00", "00:00:00"),
                          slot=15),
                 specialty=spec))
    busy = [(first, at(1, "00:00"), at(1, "23:15")), (first, at(1, "23:45"), at(2, "03:00")),
            (second, at(1, "00:00"), at(1, "23:30")), (second, at(2, "00:00"), at(2, "03:00"))]
    for actor, begin, finish in busy:
        r = await booked_appointment(fhir, actor, begin, finish)
        assert r.status_code == 201, r.text
    token = f"{spec[0]}|{spec[1]}"
    options = await find(fhir, start=at(1, "00:00"), end="2038-01-01T00:00:00Z",
                         specialty=token, _count=1)
    assert [(o["start"], o["participant"][0]["actor"]["reference"]) for o in options] == [
        (at(1, "23:15"), first)]


async def test_busy_time_just_before_the_window_still_counts(fhir: httpx.AsyncClient) -> None:
    """With a 10-minute buffer before each visit, a window opening at 09:00 right after an
    08:30-09:00 booking must not offer 09:00: its buffer lies before the window."""
    key = uid()
    spec = ("http://example.org/specialty", f"lead-{key}")
    actor = f"Practitioner/pr-{key}"
    await put_all(
        fhir,
        {"resourceType": "Practitioner", "id": f"pr-{key}"},
        schedule(f"sc-{key}", actor,
                 template("America/New_York", hours(ALL_DAYS, "08:00:00", "17:00:00"),
                          slot=30, buffer_before=10),
                 specialty=spec))
    assert (await booked_appointment(fhir, actor, at(1, "08:30"), at(1, "09:00"))).status_code \
        == 201
    options = await find(fhir, start=at(1, "09:00"), end=at(2, "00:00"),
                         specialty=f"{spec[0]}|{spec[1]}", _count=2)
    assert starts(options) == [at(1, "09:30"), at(1, "10:00")]


async def test_timing_preference_puts_preferred_times_first(fhir: httpx.AsyncClient) -> None:
    """``timing`` asking for afternoons: the afternoon options lead, the earlier morning ones
    only fill up what is left, and the answer still reads the whole window when it must."""
    key = uid()
    spec = ("http://example.org/specialty", f"aft-{key}")
    actor = f"Practitioner/pr-{key}"
    await put_all(
        fhir,
        {"resourceType": "Practitioner", "id": f"pr-{key}"},
        schedule(f"sc-{key}", actor,
                 template("America/New_York", hours(["tue"], "09:00:00", "13:00:00")),
                 specialty=spec))
    body = parameters(("start", at(1, "00:00")), ("end", "2038-01-01T00:00:00Z"),
                      ("specialty", f"{spec[0]}|{spec[1]}"), ("_count", "3"))
    body["parameter"].append({"name": "timing", "valueTiming": {"repeat": {"when": ["AFT"]}}})
    r = await fhir.post("/Appointment/$find", json=body)
    assert r.status_code == 200, r.text
    # Tuesdays 12:00-13:00 are the only afternoon hours: two a week, so three need two weeks.
    assert [e["resource"]["start"] for e in r.json()["entry"]] == [
        at(1, "12:00"), at(1, "12:30"), at(8, "12:00")]
