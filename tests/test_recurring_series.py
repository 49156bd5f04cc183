"""Recurring series (issue 14 item 6): ``$book`` of an Appointment carrying R5's
``recurrenceTemplate`` (as the R5-for-R4 cross-version extension) books a weekly or every-N-weeks
series up to its count, its last date or the planning horizon; all or nothing by default, or
what is free with the nearest alternatives for the rest (``series-mode=book-free``); every
occurrence is linked to the first (``originatingAppointment``, ``recurrenceId``); "this one" and
"this and following" can be moved or cancelled; the rules, referral visits included, apply to
each occurrence. Against a real server process on both adapters."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from tests.support.scheduling import (
    Calendar,
    booked_appointment,
    outcome,
    parameters,
    patient,
    practitioner_calendar,
    put,
    uid,
    visit_type,
)

XVER = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment."
TEMPLATE, NUMBER = XVER + "recurrenceTemplate", XVER + "recurrenceId"
ORIGIN, CHANGED = XVER + "originatingAppointment", XVER + "occurrenceChanged"
NY = ZoneInfo("America/New_York")
FIRST = datetime(2031, 3, 3, 9, 0, tzinfo=NY)  # a Monday; New York's clocks change on Mar 9
YEAR = ("2031-03-01", "2032-06-30")
Json = dict[str, Any]


def recurrence(*, count: int | None = None, last: str | None = None, interval: int | None = None,
               days: tuple[str, ...] = (), kind: str = "wk", zone: str | None = "America/New_York"
               ) -> Json:
    subs: list[Json] = [{"url": "recurrenceType", "valueCodeableConcept": {"coding": [
        {"system": "http://unitsofmeasure.org", "code": kind}]}}]
    if zone:
        subs.append({"url": "timezone", "valueCodeableConcept": {"coding": [
            {"system": "https://www.iana.org/time-zones", "code": zone}]}})
    weekly = [{"url": d, "valueBoolean": True} for d in days]
    if interval is not None:
        weekly.append({"url": "weekInterval", "valuePositiveInt": interval})
    if weekly:
        subs.append({"url": "weeklyTemplate", "extension": weekly})
    if count is not None:
        subs.append({"url": "occurrenceCount", "valuePositiveInt": count})
    if last is not None:
        subs.append({"url": "lastOccurrenceDate", "valueDate": last})
    return {"url": TEMPLATE, "extension": subs}


def first_visit(cal: Calendar, who: str, pattern: Json, start: datetime = FIRST,
                **extra: Any) -> Json:
    return {"resourceType": "Appointment", "status": "proposed",
            "start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat(),
            "participant": [{"actor": {"reference": cal.ref}, "status": "needs-action"},
                            {"actor": {"reference": who}, "status": "needs-action"}],
            "extension": [pattern], **extra}


async def book(fhir: httpx.AsyncClient, appt: Json, *extra: tuple[str, Any]) -> httpx.Response:
    return await fhir.post("/Appointment/$book",
                           json=parameters(("appt-resource", appt), *extra), timeout=60)


def matches(response: httpx.Response) -> list[Json]:
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json()["entry"] if e["search"]["mode"] == "match"]


def warnings(response: httpx.Response) -> list[Json]:
    return [i for e in response.json()["entry"] if e["search"]["mode"] == "outcome"
            for i in e["resource"]["issue"]]


def ext(resource: Json, url: str) -> Any:
    found = [e for e in resource.get("extension", []) if e["url"] == url]
    if not found:
        return None
    value = {k: v for k, v in found[0].items() if k != "url"}
    return next(iter(value.values())) if len(value) == 1 else value


def local(resource: Json, key: str = "start") -> datetime:
    return datetime.fromisoformat(resource[key]).astimezone(NY)


async def calendar(fhir: httpx.AsyncClient, horizon: tuple[str, str] = YEAR) -> Calendar:
    return await practitioner_calendar(fhir, days=("mon", "wed"), horizon=horizon)


async def series_of(fhir: httpx.AsyncClient, origin_id: str) -> list[Json]:
    r = await fhir.get("/Appointment", params={
        "originating-appointment": f"Appointment/{origin_id}", "_count": "500"})
    assert r.status_code == 200, r.text
    first = (await fhir.get(f"/Appointment/{origin_id}")).json()
    rest = [e["resource"] for e in r.json().get("entry", [])]
    return sorted([first, *rest], key=lambda a: ext(a, NUMBER))


# -- booking a series --------------------------------------------------------------------------
async def test_a_weekly_series_books_each_occurrence_at_the_same_wall_clock_time(
        fhir: httpx.AsyncClient) -> None:
    cal, who = await calendar(fhir), await patient(fhir)
    booked = matches(await book(fhir, first_visit(cal, who, recurrence(count=4))))
    assert [ext(a, NUMBER) for a in booked] == [1, 2, 3, 4]
    assert all(a["status"] == "booked" for a in booked)
    # the same 09:00 in New York before and after its clocks change (Mar 9)
    assert [local(a).strftime("%Y-%m-%d %H:%M") for a in booked] == [
        "2031-03-03 09:00", "2031-03-10 09:00", "2031-03-17 09:00", "2031-03-24 09:00"]
    assert {datetime.fromisoformat(a["start"]).utcoffset() for a in booked} == {
        timedelta(hours=-5), timedelta(hours=-4)}


async def test_the_first_occurrence_carries_the_pattern_and_the_others_link_to_it(
        fhir: httpx.AsyncClient) -> None:
    cal, who = await calendar(fhir), await patient(fhir)
    first, *rest = matches(await book(fhir, first_visit(cal, who, recurrence(count=3))))
    assert ext(first, TEMPLATE) is not None and ext(first, ORIGIN) is None
    assert all(ext(a, ORIGIN) == {"reference": f"Appointment/{first['id']}"} for a in rest)
    assert all(ext(a, TEMPLATE) is None for a in rest)
    stored = await series_of(fhir, first["id"])
    assert [a["id"] for a in stored] == [a["id"] for a in [first, *rest]]


async def test_every_other_week_on_two_weekdays(fhir: httpx.AsyncClient) -> None:
    cal, who = await calendar(fhir), await patient(fhir)
    booked = matches(await book(fhir, first_visit(cal, who, recurrence(
        count=5, interval=2, days=("monday", "wednesday")))))
    assert [local(a).strftime("%a %m-%d") for a in booked] == [
        "Mon 03-03", "Wed 03-05", "Mon 03-17", "Wed 03-19", "Mon 03-31"]


async def test_a_last_occurrence_date_ends_the_series(fhir: httpx.AsyncClient) -> None:
    cal, who = await calendar(fhir), await patient(fhir)
    booked = matches(await book(fhir, first_visit(cal, who, recurrence(last="2031-03-24"))))
    assert [local(a).day for a in booked] == [3, 10, 17, 24]


async def test_a_series_with_no_end_runs_to_the_planning_horizon(
        fhir: httpx.AsyncClient) -> None:
    cal, who = await calendar(fhir, horizon=("2031-03-01", "2031-04-15")), await patient(fhir)
    booked = matches(await book(fhir, first_visit(cal, who, recurrence())))
    assert [local(a).strftime("%m-%d") for a in booked] == [
        "03-03", "03-10", "03-17", "03-24", "03-31", "04-07", "04-14"]


async def test_a_pattern_that_names_no_zone_is_read_in_the_schedules_zone(
        fhir: httpx.AsyncClient) -> None:
    cal, who = await calendar(fhir), await patient(fhir)
    booked = matches(await book(fhir, first_visit(cal, who, recurrence(count=2, zone=None))))
    assert [local(a).strftime("%H:%M") for a in booked] == ["09:00", "09:00"]
    zone = ext(booked[0], TEMPLATE)[0]
    assert zone["valueCodeableConcept"]["coding"][0]["code"] == "America/New_York"


# -- a 52-week series with one blocked week ---------------------------------------------------
async def _blocked_week(fhir: httpx.AsyncClient) -> tuple[Calendar, str, datetime]:
    cal, who = await calendar(fhir), await patient(fhir)
    blocked = datetime.combine(FIRST.date() + timedelta(weeks=19), FIRST.timetz())
    r = await booked_appointment(fhir, cal.ref, blocked.isoformat(),
                                 (blocked + timedelta(minutes=30)).isoformat(),
                                 patient=await patient(fhir))
    assert r.status_code == 201, r.text
    return cal, who, blocked


async def test_a_52_week_series_with_one_blocked_week_books_nothing_all_or_nothing(
        fhir: httpx.AsyncClient) -> None:
    cal, who, _blocked = await _blocked_week(fhir)
    r = await book(fhir, first_visit(cal, who, recurrence(count=52)))
    assert r.status_code == 409, r.text
    issues = outcome(r)["issue"]
    assert "1 of 52 occurrences" in issues[0]["diagnostics"]
    [week] = [i for i in issues if i["diagnostics"].startswith("occurrence ")]
    assert week["diagnostics"].startswith("occurrence 20 (Mon 2031-07-14 09:00 America/New_York)")
    assert "nearest free: Mon 2031-07-14 09:30" in week["diagnostics"]
    mine = await fhir.get("/Appointment", params={"patient": who})
    assert mine.json().get("entry", []) == []  # not one of the 51 free weeks was kept


async def test_a_52_week_series_with_one_blocked_week_books_the_51_free_ones_in_book_free_mode(
        fhir: httpx.AsyncClient) -> None:
    cal, who, blocked = await _blocked_week(fhir)
    r = await book(fhir, first_visit(cal, who, recurrence(count=52)),
                   ("series-mode", "book-free"))
    booked = matches(r)
    assert len(booked) == 51
    assert 20 not in [ext(a, NUMBER) for a in booked]
    [week] = [i for i in warnings(r) if i["diagnostics"].startswith("occurrence 20 ")]
    assert week["severity"] == "warning"
    offered = [e["resource"] for e in r.json()["entry"] if e["search"]["mode"] == "include"]
    assert offered and all(o["status"] == "proposed" for o in offered)
    nearest = min(offered, key=lambda o: abs(datetime.fromisoformat(o["start"]) - blocked))
    assert ext(nearest, NUMBER) == 20 and ext(nearest, CHANGED) is True
    assert ext(nearest, ORIGIN) == {"reference": f"Appointment/{booked[0]['id']}"}
    # booking the alternative by reference puts it into its place in the series
    again = await fhir.post("/Appointment/$book", json=parameters(
        ("appointment-reference", {"reference": f"Appointment/{nearest['id']}"})))
    [filled] = matches(again)
    assert ext(filled, NUMBER) == 20 and filled["status"] == "booked"
    assert len(await series_of(fhir, booked[0]["id"])) == 52


async def test_a_series_with_no_free_occurrence_is_refused_in_book_free_mode_too(
        fhir: httpx.AsyncClient) -> None:
    cal, who = await calendar(fhir), await patient(fhir)
    for week in range(2):
        at = FIRST + timedelta(weeks=week)
        r = await booked_appointment(fhir, cal.ref, at.isoformat(),
                                     (at + timedelta(minutes=30)).isoformat())
        assert r.status_code == 201, r.text
    r = await book(fhir, first_visit(cal, who, recurrence(count=2)), ("series-mode", "book-free"))
    assert r.status_code == 409, r.text
    assert "2 of 2 occurrences" in outcome(r)["issue"][0]["diagnostics"]


# -- the rules apply to each occurrence ----------------------------------------------------------
async def test_a_referral_with_four_visits_takes_four_occurrences_of_six(
        fhir: httpx.AsyncClient) -> None:
    key = uid()
    system = f"https://clinic.example/{key}"
    vt = visit_type(system, "therapy", 30)
    await put(fhir, {"resourceType": "HealthcareService", "id": f"hs-{key}", "extension": [
        {**vt, "extension": [*vt["extension"], {"url": "referralRequired",
                                                 "valueBoolean": True}]}]})
    cal, who = await calendar(fhir), await patient(fhir)
    referral = (await fhir.post("/ServiceRequest", json={
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"reference": who}, "quantityQuantity": {"value": 4},
        "code": {"coding": [{"system": system, "code": "therapy"}]}})).json()["id"]
    appt = first_visit(cal, who, recurrence(count=6),
                       appointmentType={"coding": [{"system": system, "code": "therapy"}]})
    refused = await book(fhir, appt)
    assert refused.status_code == 422, refused.text
    numbered = [i["diagnostics"].split(" ")[1] for i in outcome(refused)["issue"]
                if i["diagnostics"].startswith("occurrence ")]
    assert numbered == ["5", "6"]
    assert all(i["details"]["coding"][0]["code"] == "referral-used"
               for i in outcome(refused)["issue"][1:])
    booked = matches(await book(fhir, appt, ("series-mode", "book-free")))
    assert [ext(a, NUMBER) for a in booked] == [1, 2, 3, 4]
    assert all({"reference": f"ServiceRequest/{referral}"} in a["basedOn"] for a in booked)


# -- "this one" and "this and following" -------------------------------------------------------
async def _six(fhir: httpx.AsyncClient) -> tuple[Calendar, list[Json]]:
    cal, who = await calendar(fhir), await patient(fhir)
    return cal, matches(await book(fhir, first_visit(cal, who, recurrence(count=6))))


async def test_cancelling_this_and_following_cancels_the_rest_of_the_series_only(
        fhir: httpx.AsyncClient) -> None:
    _cal, booked = await _six(fhir)
    fourth = {**booked[3], "status": "cancelled", "cancelationReason": {"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",
         "code": "pat"}]}}
    r = await book(fhir, fourth, ("series-scope", "this-and-following"))
    assert [a["status"] for a in matches(r)] == ["cancelled"] * 3
    stored = await series_of(fhir, booked[0]["id"])
    assert [a["status"] for a in stored] == ["booked"] * 3 + ["cancelled"] * 3
    assert all(a["cancelationReason"]["coding"][0]["code"] == "pat" for a in stored[3:])


async def test_cancelling_this_one_leaves_the_others_booked(fhir: httpx.AsyncClient) -> None:
    _cal, booked = await _six(fhir)
    r = await book(fhir, {**booked[1], "status": "cancelled"})
    assert r.status_code == 200, r.text
    stored = await series_of(fhir, booked[0]["id"])
    assert [a["status"] for a in stored] == ["booked", "cancelled", *["booked"] * 4]


async def test_moving_this_one_marks_it_changed_from_the_pattern(
        fhir: httpx.AsyncClient) -> None:
    _cal, booked = await _six(fhir)
    second = booked[1]
    later = {**second, "start": (local(second) + timedelta(hours=1)).isoformat(),
             "end": (local(second, "end") + timedelta(hours=1)).isoformat()}
    r = await fhir.put(f"/Appointment/{second['id']}", json=later)
    assert r.status_code == 200, r.text
    stored = await series_of(fhir, booked[0]["id"])
    assert [ext(a, CHANGED) for a in stored] == [None, True, None, None, None, None]
    assert local(stored[1]).hour == 10


async def test_moving_this_and_following_shifts_every_later_occurrence_alike(
        fhir: httpx.AsyncClient) -> None:
    _cal, booked = await _six(fhir)
    third = booked[2]  # Mar 17, after the clocks changed; the first two are before
    moved = {**third, "start": (local(third) + timedelta(hours=2)).isoformat(),
             "end": (local(third, "end") + timedelta(hours=2)).isoformat()}
    r = await book(fhir, moved, ("series-scope", "this-and-following"))
    assert len(matches(r)) == 4
    stored = await series_of(fhir, booked[0]["id"])
    assert [local(a).strftime("%m-%d %H:%M") for a in stored] == [
        "03-03 09:00", "03-10 09:00", "03-17 11:00", "03-24 11:00", "03-31 11:00",
        "04-07 11:00"]
    assert [ext(a, CHANGED) for a in stored] == [None, None, True, True, True, True]


async def test_a_move_of_this_and_following_that_one_cannot_take_leaves_the_series_as_it_was(
        fhir: httpx.AsyncClient) -> None:
    cal, booked = await _six(fhir)
    taken = FIRST + timedelta(weeks=4, hours=2)  # the fifth one's new time
    r = await booked_appointment(fhir, cal.ref, taken.isoformat(),
                                 (taken + timedelta(minutes=30)).isoformat())
    assert r.status_code == 201, r.text
    third = booked[2]
    moved = {**third, "start": (local(third) + timedelta(hours=2)).isoformat(),
             "end": (local(third, "end") + timedelta(hours=2)).isoformat()}
    r = await book(fhir, moved, ("series-scope", "this-and-following"))
    assert r.status_code == 409, r.text
    assert any(i["diagnostics"].startswith("occurrence 5 ") for i in outcome(r)["issue"])
    stored = await series_of(fhir, booked[0]["id"])
    assert {local(a).hour for a in stored} == {9}


async def test_this_and_following_needs_an_occurrence_of_a_series(
        fhir: httpx.AsyncClient) -> None:
    cal, who = await calendar(fhir), await patient(fhir)
    [one] = matches(await book(fhir, {k: v for k, v in first_visit(
        cal, who, recurrence()).items() if k != "extension"}))
    r = await book(fhir, {**one, "status": "cancelled"}, ("series-scope", "this-and-following"))
    assert r.status_code == 422, r.text
    assert "not an occurrence of a series" in outcome(r)["issue"][0]["diagnostics"]


# -- what is refused before anything is booked -------------------------------------------------
async def test_a_monthly_pattern_is_not_supported(fhir: httpx.AsyncClient) -> None:
    cal, who = await calendar(fhir), await patient(fhir)
    r = await book(fhir, first_visit(cal, who, recurrence(count=3, kind="mo")))
    assert r.status_code == 422, r.text
    assert outcome(r)["issue"][0]["code"] == "not-supported"
    assert "recurrenceType" in outcome(r)["issue"][0]["expression"][0]


async def test_a_series_longer_than_the_server_books_at_once_is_refused(
        fhir: httpx.AsyncClient) -> None:
    cal, who = await calendar(fhir, horizon=("2031-03-01", "2045-12-31")), await patient(fhir)
    r = await book(fhir, first_visit(cal, who, recurrence(count=600)))
    assert r.status_code == 422, r.text
    assert "more than 520 occurrences" in outcome(r)["issue"][0]["diagnostics"]
    meta = (await fhir.get("/metadata")).json()
    limits = [e for e in meta["rest"][0]["extension"] if e["url"].endswith("request-limits")]
    assert {"url": "max-series-occurrences", "valueInteger": 520} in limits[0]["extension"]


async def test_an_unknown_series_mode_is_a_400_naming_the_parameter(
        fhir: httpx.AsyncClient) -> None:
    cal, who = await calendar(fhir), await patient(fhir)
    r = await book(fhir, first_visit(cal, who, recurrence(count=2)), ("series-mode", "some"))
    assert r.status_code == 400, r.text
    assert outcome(r)["issue"][0]["expression"] == ["series-mode"]
