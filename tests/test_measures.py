"""KPIs as FHIR Measures (issue 16, item 3): ``Measure/$evaluate-measure`` on a small clinic
built through the REST API, each result checked against values worked out by hand below;
stratifiers, subject restriction, parameter refusals and SMART scopes. Against a real server
on both stores.

The clinic (UTC; D is the day the module runs, ``day(k, h)`` is D+k at h:00):

- Dr A and Dr B, each with a Schedule open every day 08:00-18:00, 30-minute slots, capacity 1,
  serviceType consult; room L (no Schedule); service S offering the 30-minute consult;
- the period asked for is D-7 .. D+6 (14 whole days);
- 19 appointments of 30 minutes in it (table ``VISITS``): 11 in the past, 7 in the next days,
  and L1, the first time an hour or more from now, cancelled now (late);
- a waitlist entry for Dr B, filled by the real offer flow on a time outside the period.
"""

from __future__ import annotations

import time as clock
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support import web
from tests.support.launch import REDIRECT, Browser, add_user, pkce
from tests.support.scheduling import ALL_DAYS, hours, need, template, visit_type
from tests.support.server import ServerProcess, cleanup_dir, served, store_url
from tests.support.smart import BackendClient, get_token, register, register_backend

FHIR_JSON = {"content-type": "application/fhir+json"}
SYSTEM = "https://clinic.example/visit-types"
CONSULT = f"{SYSTEM}|consult"
MP = "http://terminology.hl7.org/CodeSystem/measure-population"
HOLD_EXPIRES = "https://fhir-sched.org/fhir/StructureDefinition/hold-expires"
OFFER_URL = "https://fhir-sched.org/fhir/StructureDefinition/waitlist-offer"
PASSWORD = "measures-password-1"

# (name, day offset, hour, minute, practitioner, final status, lead days: created = start -
# lead; None for P6: recorded an hour after its start)
VISITS: list[tuple[str, int, int, int, str, str, float | None]] = [
    ("P1", -6, 9, 0, "A", "fulfilled", 10), ("P2", -6, 10, 0, "A", "noshow", 4),
    ("P3", -5, 9, 0, "B", "fulfilled", 2), ("P4", -5, 11, 0, "B", "noshow", 6),
    ("P5", -4, 9, 0, "A", "booked", 1), ("P6", -4, 14, 0, "B", "fulfilled", None),
    ("P7", -3, 9, 0, "A", "fulfilled", 5), ("P8", -3, 10, 0, "A", "cancelled", 7),
    ("P9", -2, 9, 0, "B", "fulfilled", 8), ("P10", -2, 15, 0, "B", "noshow", 2),
    ("P11", -1, 9, 0, "A", "fulfilled", 1),
    ("F1", 1, 9, 0, "A", "booked", 3), ("F2", 1, 10, 0, "B", "booked", 5),
    ("F3", 2, 9, 0, "A", "cancelled", 3), ("F4", 2, 10, 0, "B", "booked", 4),
    ("F5", 3, 9, 0, "A", "booked", 6), ("F7", 4, 9, 0, "A", "booked", 5),
    ("F8", 5, 9, 0, "B", "booked", 6),
]
KEPT = {"booked", "arrived", "checked-in", "fulfilled", "noshow"}


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Clinic:
    server: ServerProcess
    today: date
    start_of: dict[str, datetime]
    who: dict[str, str]  # visit name -> Practitioner/x
    status: dict[str, str]
    a: str
    b: str
    room: str
    service: str
    entry: dict[str, Any]  # the waitlist entry, closed
    period: dict[str, str]


def _make(base: str, body: dict[str, Any]) -> dict[str, Any]:
    r = web.post(f"{base}/{body['resourceType']}", headers=FHIR_JSON, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _cancel(base: str, id_: str) -> None:
    current = web.get(f"{base}/Appointment/{id_}").json()
    r = web.put(f"{base}/Appointment/{id_}", headers=FHIR_JSON,
                json={**current, "status": "cancelled"})
    assert r.status_code == 200, r.text


def _wait(check: Any, timeout: float = 30.0) -> Any:
    deadline = clock.monotonic() + timeout
    while True:
        found = check()
        if found or clock.monotonic() > deadline:
            return found
        clock.sleep(0.2)


def _first_open_after(instant: datetime) -> datetime:
    """The first 30-minute grid start within 08:00-18:00 at or after ``instant``."""
    t = instant.replace(minute=0, second=0, microsecond=0)
    while True:
        if t >= instant and time(8) <= t.time() <= time(17, 30):
            return t
        t += timedelta(minutes=30)


def _build(server: ServerProcess) -> Clinic:
    base = server.base
    now = datetime.now(UTC)
    today = now.date()

    def day(k: int, h: int, m: int = 0) -> datetime:
        return datetime.combine(today + timedelta(days=k), time(h, m), UTC)

    open_all_day = template("UTC", hours(ALL_DAYS, "08:00:00", "18:00:00"), slot=30)
    consult = {"coding": [{"system": SYSTEM, "code": "consult"}]}
    refs: dict[str, str] = {}
    for key, family in (("A", "Able"), ("B", "Baker")):
        doc = _make(base, {"resourceType": "Practitioner", "name": [{"family": family}]})
        refs[key] = f"Practitioner/{doc['id']}"
        _make(base, {"resourceType": "Schedule", "actor": [{"reference": refs[key]}],
                     "serviceType": [consult], "extension": [open_all_day]})
    room = "Location/" + _make(base, {"resourceType": "Location", "name": "Room L"})["id"]
    service = "HealthcareService/" + _make(base, {
        "resourceType": "HealthcareService", "name": "Consults",
        "extension": [visit_type(SYSTEM, "consult", 30, need("Practitioner"))]})["id"]

    def book(name: str, start: datetime, practitioner: str, created: datetime,
             places: tuple[str, ...] = (room,)) -> str:
        patient = _make(base, {"resourceType": "Patient", "name": [{"given": [name]}]})
        body = {"resourceType": "Appointment", "status": "booked", "start": _iso(start),
                "end": _iso(start + timedelta(minutes=30)), "created": _iso(created),
                "appointmentType": consult, "participant": [
                    {"actor": {"reference": ref}, "status": "accepted"}
                    for ref in (practitioner, *places, service, f"Patient/{patient['id']}")]}
        return str(_make(base, body)["id"])

    start_of: dict[str, datetime] = {}
    who: dict[str, str] = {}
    status: dict[str, str] = {}
    ids: dict[str, str] = {}
    for name, k, h, m, doc_key, final, lead in VISITS:
        start = day(k, h, m)
        created = start + timedelta(hours=1) if lead is None else start - timedelta(days=lead)
        ids[name] = book(name, start, refs[doc_key], created)
        start_of[name], who[name], status[name] = start, refs[doc_key], final
        if final in ("fulfilled", "noshow"):
            current = web.get(f"{base}/Appointment/{ids[name]}").json()
            r = web.put(f"{base}/Appointment/{ids[name]}", headers=FHIR_JSON,
                        json={**current, "status": final})
            assert r.status_code == 200, r.text
    late = _first_open_after(now + timedelta(hours=1))
    ids["L1"] = book("L1", late, refs["A"], late - timedelta(days=2))
    start_of["L1"], who["L1"], status["L1"] = late, refs["A"], "cancelled"
    for name in ("P8", "F3", "L1"):
        _cancel(base, ids[name])

    # The waitlist: Dr B's visit at D+10 11:00 is cancelled; the entry waiting for exactly that
    # time is offered it, the offer is booked, and the server closes the entry. (No room: the
    # offer is looked for with $find on the freed visit's resources, and L has no calendar.)
    freed = day(10, 11)
    x = book("X", freed, refs["B"], day(-1, 12), places=())
    waiting = _make(base, {"resourceType": "Patient", "name": [{"given": ["Waiting"]}]})
    entry = _make(base, {
        "resourceType": "Appointment", "status": "waitlist", "created": _iso(now - timedelta(
            days=3)), "appointmentType": consult,
        "participant": [{"actor": {"reference": f"Patient/{waiting['id']}"},
                         "status": "needs-action"},
                        {"actor": {"reference": refs["B"]}, "status": "needs-action"}],
        "requestedPeriod": [{"start": _iso(freed), "end": _iso(freed + timedelta(minutes=30))}]})
    _cancel(base, x)

    def offer() -> dict[str, Any] | None:
        found = web.get(f"{base}/Appointment", params={"status": "pending",
                                                          "_count": "100"}).json()
        for e in found.get("entry", []):
            for ext in e["resource"].get("extension", []):
                if ext["url"] == OFFER_URL and any(s.get("valueReference", {}).get(
                        "reference") == f"Appointment/{entry['id']}" for s in ext["extension"]):
                    return dict(e["resource"])
        return None

    held = _wait(offer)
    assert held, "the waitlist entry got no offer"
    booked = {**held, "status": "booked",
              "extension": [e for e in held["extension"] if e["url"] != HOLD_EXPIRES]}
    r = web.put(f"{base}/Appointment/{held['id']}", headers=FHIR_JSON, json=booked)
    assert r.status_code == 200, r.text
    closed = _wait(lambda: (b := web.get(f"{base}/Appointment/{entry['id']}").json())[
        "status"] == "cancelled" and b)
    assert closed, "the waitlist entry was not closed"
    period = {"periodStart": (today - timedelta(days=7)).isoformat(),
              "periodEnd": (today + timedelta(days=6)).isoformat()}
    return Clinic(server, today, start_of, who, status, refs["A"], refs["B"], room,
                  service, dict(closed), period)


@pytest.fixture(scope="module")
def clinic(store_kind: str, mongo_uri: str | None) -> Iterator[Clinic]:
    env = {"FHIR_SCHED_AUTH": "none", "FHIR_SCHED_PAST_GRACE_SECONDS": str(8 * 86400),
           "FHIR_SCHED_WAITLIST_OFFER_SECONDS": "600", "FHIR_SCHED_REMINDERS": ""}
    with served(store_kind, mongo_uri, "fhir_sched_measures", env) as proc:
        yield _build(proc)


def _evaluate(clinic: Clinic, measure: str, **params: str) -> dict[str, Any]:
    r = web.get(f"{clinic.server.base}/Measure/{measure}/$evaluate-measure",
                params={**clinic.period, **params})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["resourceType"] == "MeasureReport" and report["status"] == "complete"
    return dict(report)


def _counts(populations: list[dict[str, Any]]) -> dict[str, int]:
    return {p["code"]["coding"][0]["code"]: p["count"] for p in populations}


def _group(report: dict[str, Any], n: int = 0) -> dict[str, Any]:
    return dict(report["group"][n])


def _strata(group: dict[str, Any], code: str) -> dict[str, dict[str, Any]]:
    (found,) = [s for s in group["stratifier"] if s["code"][0]["text"] == code]
    return {s["value"]["text"]: s for s in found["stratum"]}


def _score(part: dict[str, Any]) -> float | None:
    score = part.get("measureScore")
    return None if score is None else float(score["value"])


def _week(dt: datetime) -> str:
    y, w, _ = dt.isocalendar()
    return f"{y}-W{w:02d}"


# -- the Measures themselves -----------------------------------------------------------------
def test_every_kpi_is_a_measure_readable_and_searchable(clinic: Clinic) -> None:
    base = clinic.server.base
    bundle = web.get(f"{base}/Measure").json()
    ids = {e["resource"]["id"] for e in bundle["entry"]}
    assert ids == {"no-show-rate", "cancellation-rate", "late-cancellation-rate", "fill-rate",
                   "utilisation", "lead-time", "third-next-available", "waitlist-time-to-fill"}
    tnaa = web.get(f"{base}/Measure/third-next-available").json()
    assert any("Third Next Available" in a["display"] for a in tnaa["relatedArtifact"])
    assert tnaa["scoring"]["coding"][0]["code"] == "continuous-variable"
    found = web.get(f"{base}/Measure", params={"url": tnaa["url"]}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["third-next-available"]
    assert web.put(f"{base}/Measure/no-show-rate", headers=FHIR_JSON,
                   json=tnaa).status_code == 405


def test_the_capability_statement_lists_the_operation_with_its_limits(clinic: Clinic) -> None:
    cs = web.get(f"{clinic.server.base}/metadata").json()
    (measure,) = [r for r in cs["rest"][0]["resource"] if r["type"] == "Measure"]
    (op,) = measure["operation"]
    assert op["name"] == "evaluate-measure" and "731 days" in op["documentation"]


# -- each measure against the hand count -----------------------------------------------------
def test_no_show_rate_is_no_shows_over_kept_visits_whose_start_passed(clinic: Clinic) -> None:
    report = _evaluate(clinic, "no-show-rate")
    assert report["type"] == "summary"
    assert report["measure"].startswith("https://fhir-sched.org/fhir/Measure/no-show-rate")
    assert report["period"]["start"].startswith((clinic.today - timedelta(days=7)).isoformat())
    assert report["improvementNotation"]["coding"][0]["code"] == "decrease"
    g = _group(report)
    # 19 visits in the period; passed and kept: P1-P11 but the cancelled P8 = 10;
    # no-shows P2, P4, P10 = 3: 3 / 10
    assert _counts(g["population"]) == {"initial-population": 19, "denominator": 10,
                                        "numerator": 3}
    assert _score(g) == pytest.approx(0.3)


def test_no_show_rate_is_stratified_by_practitioner_location_service_and_week(
        clinic: Clinic) -> None:
    g = _group(_evaluate(clinic, "no-show-rate"))
    by_doc = _strata(g, "practitioner")
    # A: P1 P2 P5 P7 P11 passed and kept, P2 no-show: 1/5; B: P3 P4 P6 P9 P10, P4 P10: 2/5
    assert _counts(by_doc[clinic.a]["population"]) == {
        "initial-population": 11, "denominator": 5, "numerator": 1}
    assert _score(by_doc[clinic.a]) == pytest.approx(0.2)
    assert _score(by_doc[clinic.b]) == pytest.approx(0.4)
    assert _score(_strata(g, "location")[clinic.room]) == pytest.approx(0.3)
    services = _strata(g, "service")
    assert _score(services[clinic.service]) == pytest.approx(0.3)
    assert _counts(services[CONSULT]["population"])["denominator"] == 10
    now = datetime.now(UTC)
    expected: dict[str, Counter[str]] = {}
    for name, start in clinic.start_of.items():
        c = expected.setdefault(_week(start), Counter())
        c["initial-population"] += 1
        if start < now and clinic.status[name] in KEPT:
            c["denominator"] += 1
            c["numerator"] += clinic.status[name] == "noshow"
    weeks = _strata(g, "week")
    assert set(weeks) == set(expected)
    for week, c in expected.items():
        assert _counts(weeks[week]["population"]) == {
            "initial-population": c["initial-population"], "denominator": c["denominator"],
            "numerator": c["numerator"]}


def test_cancellation_rate_is_cancelled_over_ever_booked(clinic: Clinic) -> None:
    g = _group(_evaluate(clinic, "cancellation-rate"))
    # every one of the 19 was booked; cancelled: P8, F3, L1 = 3/19; A 3 of 11, B 0 of 8
    assert _counts(g["population"]) == {"initial-population": 19, "denominator": 19,
                                        "numerator": 3}
    assert _score(g) == pytest.approx(3 / 19, abs=1e-6)
    by_doc = _strata(g, "practitioner")
    assert _score(by_doc[clinic.a]) == pytest.approx(3 / 11, abs=1e-6)
    assert _score(by_doc[clinic.b]) == 0


def test_late_cancellation_rate_counts_cancellations_within_24_hours_of_the_start(
        clinic: Clinic) -> None:
    g = _group(_evaluate(clinic, "late-cancellation-rate"))
    # P8 was cancelled after its start, L1 less than 24 h before; F3 (D+2 09:00) at least
    # 33 h before: 2/19
    assert _counts(g["population"]) == {"initial-population": 19, "denominator": 19,
                                        "numerator": 2}
    assert _score(g) == pytest.approx(2 / 19, abs=1e-6)
    assert _counts(_strata(g, "practitioner")[clinic.a]["population"])["numerator"] == 2


def test_fill_rate_is_booked_visits_over_template_capacity(clinic: Clinic) -> None:
    g = _group(_evaluate(clinic, "fill-rate"))
    # capacity: 14 days x 10 hours x 2 half-hours = 280 visits per doctor, 560 for both;
    # kept visits: A P1 P2 P5 P7 P11 F1 F5 F7 = 8, B P3 P4 P6 P9 P10 F2 F4 F8 = 8: 16/560
    assert _counts(g["population"]) == {"denominator": 560, "numerator": 16}
    assert _score(g) == pytest.approx(16 / 560, abs=1e-6)
    by_doc = _strata(g, "practitioner")
    assert _counts(by_doc[clinic.a]["population"]) == {"denominator": 280, "numerator": 8}
    # the room has no Schedule: no capacity of its own, and the doctors' is not the room's
    assert clinic.room not in _strata(g, "location")
    assert _counts(_strata(g, "service")[CONSULT]["population"]) == {
        "denominator": 560, "numerator": 16}
    first = datetime.combine(clinic.today - timedelta(days=7), time(), UTC)
    weeks: Counter[str] = Counter()
    for n in range(14):
        weeks[_week(first + timedelta(days=n))] += 2 * 20  # two doctors, 20 visits a day
    assert {w: _counts(s["population"])["denominator"]
            for w, s in _strata(g, "week").items()} == dict(weeks)


def test_utilisation_is_booked_minutes_over_open_minutes(clinic: Clinic) -> None:
    g = _group(_evaluate(clinic, "utilisation"))
    # open: 14 days x 600 minutes x 2 doctors = 16800; booked: 16 kept visits x 30 = 480
    assert _counts(g["population"]) == {"denominator": 16800, "numerator": 480}
    assert _score(g) == pytest.approx(480 / 16800, abs=1e-6)
    assert _counts(_strata(g, "practitioner")[clinic.b]["population"]) == {
        "denominator": 8400, "numerator": 240}


def test_lead_time_is_the_median_and_mean_days_from_booking_to_visit(clinic: Clinic) -> None:
    report = _evaluate(clinic, "lead-time")
    median_group, mean_group = _group(report, 0), _group(report, 1)
    assert (median_group["id"], mean_group["id"]) == ("median", "mean")
    # kept: 16; P6 was recorded after its start and is excluded. Leads (days):
    # A: 10 4 1 5 1 3 6 5 -> 1 1 3 4 5 5 6 10: median (4+5)/2 = 4.5, mean 35/8 = 4.375
    # B: 2 6 8 2 5 4 6 -> 2 2 4 5 6 6 8: median 5, mean 33/7
    # all 15: 1 1 2 2 3 4 4 5 5 5 6 6 6 8 10: median 5, mean 68/15
    assert _counts(median_group["population"]) == {
        "measure-population": 16, "measure-population-exclusion": 1, "measure-observation": 15}
    assert _score(median_group) == pytest.approx(5)
    assert _score(mean_group) == pytest.approx(68 / 15, abs=1e-4)
    assert median_group["measureScore"]["code"] == "d"
    median_by_doc = _strata(median_group, "practitioner")
    mean_by_doc = _strata(mean_group, "practitioner")
    assert _score(median_by_doc[clinic.a]) == pytest.approx(4.5)
    assert _score(mean_by_doc[clinic.a]) == pytest.approx(4.375)
    assert _score(median_by_doc[clinic.b]) == pytest.approx(5)
    assert _score(mean_by_doc[clinic.b]) == pytest.approx(33 / 7, abs=1e-4)


def _third_free(clinic: Clinic, doctor: str, now: datetime) -> int:
    """By hand: walk the half-hour grid from now and skip the doctor's kept visits."""
    taken = {s for n, s in clinic.start_of.items()
             if clinic.who[n] == doctor and clinic.status[n] in KEPT}
    found: list[datetime] = []
    t = _first_open_after(now)
    while len(found) < 3:
        if t not in taken:
            found.append(t)
        t = _first_open_after(t + timedelta(minutes=30))
    return (found[2].date() - now.date()).days


def test_third_next_available_is_days_to_the_third_open_time_per_doctor_and_visit_type(
        clinic: Clinic) -> None:
    before = datetime.now(UTC)
    g = _group(_evaluate(clinic, "third-next-available"), 1)  # the mean
    after = datetime.now(UTC)
    expected = [{d: _third_free(clinic, d, at) for d in (clinic.a, clinic.b)}
                for at in (before, after)]
    by_doc = _strata(g, "practitioner")
    got = {d: _score(by_doc[d]) for d in (clinic.a, clinic.b)}
    assert got in expected  # a half-hour boundary may pass during the call
    assert _counts(g["population"]) == {"measure-population": 2,
                                        "measure-population-exclusion": 0,
                                        "measure-observation": 2}
    assert _score(g) == pytest.approx(sum(v or 0.0 for v in got.values()) / 2)
    assert set(_strata(g, "service")) == {CONSULT}


def test_waitlist_time_to_fill_is_days_from_the_entry_to_its_booked_offer(
        clinic: Clinic) -> None:
    g = _group(_evaluate(clinic, "waitlist-time-to-fill"))
    entry = clinic.entry
    filled = datetime.fromisoformat(entry["meta"]["lastUpdated"])
    days = (filled - datetime.fromisoformat(entry["created"])).total_seconds() / 86400
    assert days == pytest.approx(3, abs=0.01)  # made three days ago, filled just now
    assert _counts(g["population"])["measure-observation"] == 1
    assert _score(g) == pytest.approx(days, abs=1e-4)
    assert set(_strata(g, "practitioner")) == {clinic.b}  # the booked offer's doctor
    assert set(_strata(g, "week")) == {_week(filled)}


# -- subject, report types, POST -------------------------------------------------------------
def test_a_subject_restricts_the_population_and_makes_an_individual_report(
        clinic: Clinic) -> None:
    report = _evaluate(clinic, "no-show-rate", subject=clinic.a)
    assert report["type"] == "individual" and report["subject"] == {"reference": clinic.a}
    # only A's visits: 11 in the period, 5 passed and kept, P2 a no-show
    assert _counts(_group(report)["population"]) == {"initial-population": 11,
                                                     "denominator": 5, "numerator": 1}
    assert set(_strata(_group(report), "practitioner")) == {clinic.a}


def test_a_subject_restricts_capacity_to_its_own_schedules(clinic: Clinic) -> None:
    g = _group(_evaluate(clinic, "fill-rate", subject=clinic.b, reportType="population"))
    assert _counts(g["population"]) == {"denominator": 280, "numerator": 8}


def test_a_service_subject_travels_in_the_r5_subject_extension(clinic: Clinic) -> None:
    report = _evaluate(clinic, "cancellation-rate", subject=clinic.service)
    assert "subject" not in report
    assert report["extension"][0]["valueReference"] == {"reference": clinic.service}
    assert _counts(_group(report)["population"])["denominator"] == 19


def test_type_level_post_with_parameters_gives_the_same_report(clinic: Clinic) -> None:
    r = web.post(f"{clinic.server.base}/Measure/$evaluate-measure", headers=FHIR_JSON, json={
        "resourceType": "Parameters", "parameter": [
            {"name": "measure", "valueString": "https://fhir-sched.org/fhir/Measure/"
                                               "no-show-rate"},
            {"name": "periodStart", "valueDate": clinic.period["periodStart"]},
            {"name": "periodEnd", "valueDate": clinic.period["periodEnd"]},
            {"name": "reportType", "valueCode": "population"}]})
    assert r.status_code == 200, r.text
    assert _counts(r.json()["group"][0]["population"]) == {
        "initial-population": 19, "denominator": 10, "numerator": 3}


def test_a_change_after_an_evaluation_is_in_the_next_one(clinic: Clinic) -> None:
    """Facts are kept per period and brought up to date from the change feed: a later period
    with one visit of its own, cancelled, then moved out of it."""
    base = clinic.server.base
    start = datetime.combine(clinic.today + timedelta(days=25), time(9), UTC)
    period = {"periodStart": (clinic.today + timedelta(days=20)).isoformat(),
              "periodEnd": (clinic.today + timedelta(days=30)).isoformat()}
    patient = _make(base, {"resourceType": "Patient"})
    appt = _make(base, {"resourceType": "Appointment", "status": "booked",
                        "start": _iso(start), "end": _iso(start + timedelta(minutes=30)),
                        "participant": [{"actor": {"reference": ref}, "status": "accepted"}
                                        for ref in (clinic.a, f"Patient/{patient['id']}")]})

    def counts() -> dict[str, int]:
        r = web.get(f"{base}/Measure/cancellation-rate/$evaluate-measure", params=period)
        assert r.status_code == 200, r.text
        return _counts(r.json()["group"][0]["population"])

    assert counts() == {"initial-population": 1, "denominator": 1, "numerator": 0}
    _cancel(base, appt["id"])
    assert counts() == {"initial-population": 1, "denominator": 1, "numerator": 1}
    r = web.delete(f"{base}/Appointment/{appt['id']}")
    assert r.status_code in (200, 204), r.text
    assert counts() == {"initial-population": 0, "denominator": 0, "numerator": 0}


# -- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "status", "named"), [
    ({"periodStart": None}, 400, "periodStart"),
    ({"periodStart": "2026-06-01", "periodEnd": "2026-05-01"}, 400, "periodEnd"),
    ({"periodStart": "2026-01-01", "periodEnd": "2028-12-31"}, 422, "periodEnd"),
    ({"periodStart": "soon", "periodEnd": "2026-05-01"}, 400, "periodStart"),
    ({"reportType": "subject-list"}, 400, "reportType"),
    ({"reportType": "everything"}, 400, "reportType"),
    ({"reportType": "subject"}, 400, "subject"),
    ({"subject": "Patient/somebody"}, 400, "subject"),
    ({"subject": "Practitioner/nobody-here"}, 404, "subject"),
    ({"measure": "fill-rate"}, 400, "measure"),
], ids=["no-start", "end-before-start", "three-years", "not-a-date", "subject-list",
        "unknown-report-type", "subject-report-without-subject", "patient-subject",
        "unknown-subject", "other-measure-on-an-instance"])
def test_bad_parameters_are_refused_naming_the_parameter(
        clinic: Clinic, params: dict[str, str | None], status: int, named: str) -> None:
    query = {k: v for k, v in {**clinic.period, **params}.items() if v is not None}
    r = web.get(f"{clinic.server.base}/Measure/no-show-rate/$evaluate-measure", params=query)
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    assert r.json()["resourceType"] == "OperationOutcome" and named in issue["expression"]


def test_a_type_level_call_needs_a_measure(clinic: Clinic) -> None:
    r = web.get(f"{clinic.server.base}/Measure/$evaluate-measure", params=clinic.period)
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["measure"]


def test_an_unknown_measure_is_not_found(clinic: Clinic) -> None:
    r = web.get(f"{clinic.server.base}/Measure/wait-times/$evaluate-measure",
                params=clinic.period)
    assert r.status_code == 404


# -- with auth on ----------------------------------------------------------------------------
STAFF = BackendClient.new("measures-staff")
NARROW = BackendClient.new("measures-narrow")
NO_APPOINTMENTS = BackendClient.new("measures-directory")
ADMIN = BackendClient.new("measures-admin")


@dataclass
class Secured:
    base: str
    headers: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def secured(store_kind: str, mongo_uri: str | None,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_measures_smart")
    keys: Path = tmp_path_factory.mktemp("measures")
    grants = [(STAFF, "system/Appointment.rs system/Practitioner.rs"),
              (NARROW, "system/Appointment.rs?status=booked"),
              (NO_APPOINTMENTS, "system/Practitioner.rs system/Schedule.rs"),
              (ADMIN, "system/*.cruds")]
    for client, scope in grants:
        register_backend(url, client, scope, keys)
    assert register(url, "measures-app", "launch/patient patient/*.cruds", "--redirect-uri",
                    REDIRECT, "--public").returncode == 0
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart"}).start()
    try:
        headers = {client.client_id: {
            "authorization": f"Bearer {get_token(proc.base, client, scope)}"}
            for client, scope in grants}
        patient = web.post(f"{proc.base}/Patient", headers={
            **headers[ADMIN.client_id], **FHIR_JSON}, json={"resourceType": "Patient"})
        assert patient.status_code == 201, patient.text
        add_user(url, "pat", PASSWORD, f"Patient/{patient.json()['id']}")
        verifier, challenge = pkce()
        b = Browser(proc.base.removesuffix("/fhir"), proc.base)
        code = b.code("measures-app", "launch/patient patient/*.cruds", challenge, "pat",
                      PASSWORD)
        token = b.exchange("measures-app", code, verifier).json()["access_token"]
        headers["patient"] = {"authorization": f"Bearer {token}"}
        yield Secured(proc.base, headers)
    finally:
        proc.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def _secured(secured: Secured, who: str | None) -> Any:
    return web.get(f"{secured.base}/Measure/no-show-rate/$evaluate-measure",
                   params={"periodStart": "2026-01-01", "periodEnd": "2026-12-31"},
                   headers=secured.headers[who] if who else {})


def test_with_auth_on_a_staff_token_that_searches_appointments_evaluates(
        secured: Secured) -> None:
    r = _secured(secured, STAFF.client_id)
    assert r.status_code == 200, r.text
    assert r.json()["resourceType"] == "MeasureReport"


def test_with_auth_on_no_token_is_401(secured: Secured) -> None:
    assert _secured(secured, None).status_code == 401


def test_with_auth_on_a_token_without_appointment_scopes_is_403(secured: Secured) -> None:
    assert _secured(secured, NO_APPOINTMENTS.client_id).status_code == 403


def test_with_auth_on_a_restricted_appointment_scope_gets_no_aggregates(
        secured: Secured) -> None:
    r = _secured(secured, NARROW.client_id)
    assert r.status_code == 403 and "user/Appointment.rs" in r.text


def test_with_auth_on_a_patient_token_gets_no_clinic_wide_aggregates(
        secured: Secured) -> None:
    r = _secured(secured, "patient")
    assert r.status_code == 403, r.text
