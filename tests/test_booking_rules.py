"""Visit-type booking rules (issue 14): each rule refuses on every booking door with its code
from the booking-rule CodeSystem, passes when met, and a calendar of record or staff with the
front-desk override books anyway with the breach flagged; against a real server process on
both adapters, with auth on so the staff-only rule meets a real patient token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from fhir_sched.scheduling.booking_rules import RULE_SYSTEM, TIMEZONE_URL
from tests.support import web
from tests.support.launch import REDIRECT, Browser, add_user, pkce
from tests.support.scheduling import hours, need, parameters, schedule, template, visit_type
from tests.support.server import ServerProcess, cleanup_dir, store_url
from tests.support.smart import BackendClient, get_token, register, register_backend

SYSTEM = "https://clinic.example/visit-types"
FLAG_URL = "https://fhir-sched.org/fhir/StructureDefinition/booking-flag"
OVERBOOKED_URL = "https://fhir-sched.org/fhir/StructureDefinition/overbooked"
ZONE = "Pacific/Auckland"  # far from UTC, so a rule read in UTC would be caught
PASSWORD = "rules-password-1"
ADMIN = BackendClient.new("rules-admin")
DESK = BackendClient.new("rules-desk")
AUDITOR = BackendClient.new("rules-auditor")
REASON_URL = "https://fhir-sched.org/fhir/StructureDefinition/override-reason"

RULED_TYPES: dict[str, list[dict[str, Any]]] = {
    "notice": [{"url": "minNoticeMinutes", "valueUnsignedInt": 24 * 60}],
    "advance": [{"url": "maxAdvanceDays", "valuePositiveInt": 30}],
    "cutoff": [{"url": "sameDayCutoff", "valueTime": "00:00:00"}],  # never again today
    "staff": [{"url": "selfBooking", "valueBoolean": False}],
    "adults": [{"url": "minAgeYears", "valueUnsignedInt": 18}],
    "paediatric": [{"url": "maxAgeYears", "valueUnsignedInt": 17}],
    "specialist": [{"url": "referralRequired", "valueBoolean": True}],
    "strict": [{"url": "minNoticeMinutes", "valueUnsignedInt": 24 * 60},
               {"url": "minAgeYears", "valueUnsignedInt": 18}],
    "insured": [{"url": "coverageRequired", "valueBoolean": True}],
    "authorized": [{"url": "priorAuthorizationRequired", "valueBoolean": True}],
    "new-only": [{"url": "patientStatus", "valueCode": "new"},
                 {"url": "lookbackYears", "valuePositiveInt": 3}],
    "follow-up": [{"url": "patientStatus", "valueCode": "established"}],
    "late-48": [{"url": "lateCancelHours", "valuePositiveInt": 48}],
    "monthly": [{"url": "maxVisits", "valuePositiveInt": 1},
                {"url": "visitsPeriodDays", "valuePositiveInt": 30}],
    "acme-only": [{"url": "acceptedPayor", "valueReference": {"reference": "Organization/acme"}},
                  {"url": "acceptedPayor", "valueReference": {"reference": "Organization/beta"}}],
}


@dataclass
class Clinic:
    server: ServerProcess
    admin: dict[str, str]  # system/*.cruds: staff, no override
    desk: dict[str, str]  # the front-desk override scope
    alice_token: dict[str, str]  # a patient's own token
    alice: str  # born 30 years ago
    child: str  # born 5 years ago
    unknown: str  # no birth date

    def post(self, path: str, body: Any, who: dict[str, str] | None = None) -> httpx.Response:
        return web.post(f"{self.server.base}{path}", json=body,
                        headers={**(who or self.admin), "content-type": "application/fhir+json"})


def _patient_token(server: ServerProcess) -> dict[str, str]:
    verifier, challenge = pkce()
    b = Browser(server.base.removesuffix("/fhir"), server.base)
    code = b.code("rules-app", "launch/patient patient/*.cruds", challenge, "alice", PASSWORD)
    response = b.exchange("rules-app", code, verifier)
    assert response.status_code == 200, response.text
    return {"authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="module")
def clinic(store_kind: str, mongo_uri: str | None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Clinic]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_rules")
    keys = tmp_path_factory.mktemp("rules")
    register_backend(url, ADMIN, "system/*.cruds", keys)
    register_backend(url, DESK, "system/*.cruds fhir-sched/overbook", keys)
    register_backend(url, AUDITOR, "system/AuditEvent.rs", keys)
    assert register(url, "rules-app", "launch/patient patient/*.cruds", "--redirect-uri",
                    REDIRECT, "--public").returncode == 0
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart"}).start()
    try:
        admin = {"authorization": f"Bearer {get_token(proc.base, ADMIN, 'system/*.cruds')}"}
        desk = {"authorization": "Bearer " + get_token(
            proc.base, DESK, "system/*.cruds fhir-sched/overbook")}
        today = datetime.now(UTC).date()

        def make(body: dict[str, Any]) -> str:
            r = web.post(f"{proc.base}/{body['resourceType']}", json=body, headers=admin)
            assert r.status_code == 201, r.text
            return f"{body['resourceType']}/{r.json()['id']}"

        alice = make({"resourceType": "Patient", "birthDate": f"{today.year - 30}-01-01"})
        child = make({"resourceType": "Patient", "birthDate": f"{today.year - 5}-01-01"})
        unknown = make({"resourceType": "Patient", "name": [{"family": "NoBirthDate"}]})
        for org in ("acme", "beta", "other"):  # the payors the visit types name
            r = web.put(f"{proc.base}/Organization/{org}", headers=admin,
                        json={"resourceType": "Organization", "id": org, "name": org})
            assert r.status_code in (200, 201), r.text
        service = {"resourceType": "HealthcareService", "id": "ruled",
                   "extension": [{"url": TIMEZONE_URL, "valueCode": ZONE}] + [
                       {**visit_type(SYSTEM, code, 30), "extension": [
                           *visit_type(SYSTEM, code, 30)["extension"], *rules]}
                       for code, rules in RULED_TYPES.items()]}
        r = web.put(f"{proc.base}/HealthcareService/ruled", json=service, headers=admin)
        assert r.status_code in (200, 201), r.text
        add_user(url, "alice", PASSWORD, alice)
        yield Clinic(proc, admin, desk, _patient_token(proc), alice, child, unknown)
    finally:
        proc.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


_used: list[datetime] = []


def _at(delta: timedelta) -> tuple[str, str]:
    """A 30-minute visit starting about ``delta`` from now: the first time from there, in
    half-hour steps, that no earlier call of the suite took, so no two bookings meet on the
    service's one seat or a shared patient's time."""
    start = (datetime.now(UTC) + delta).replace(second=0, microsecond=0)
    start -= timedelta(minutes=start.minute % 5)
    while any(abs(start - u) < timedelta(minutes=30) for u in _used):
        start += timedelta(minutes=30)
    _used.append(start)
    return start.isoformat().replace("+00:00", "Z"), (start + timedelta(minutes=30)).isoformat(
    ).replace("+00:00", "Z")


def appointment(code: str, patient: str, when: timedelta, status: str = "booked",
                override: bool | str = False, based_on: str | None = None,
                coverage: str | None = None) -> dict[str, Any]:
    start, end = _at(when)
    out: dict[str, Any] = {
        "resourceType": "Appointment", "status": status, "start": start, "end": end,
        "appointmentType": {"coding": [{"system": SYSTEM, "code": code}]},
        "participant": [
            {"actor": {"reference": "HealthcareService/ruled"}, "status": "accepted"},
            {"actor": {"reference": patient}, "status": "accepted"}]}
    if override:
        out["extension"] = [{"url": OVERBOOKED_URL, "valueBoolean": True}]
        if isinstance(override, str):
            out["extension"].append({"url": REASON_URL, "valueString": override})
    if based_on:
        out["basedOn"] = [{"reference": based_on}]
    if coverage:
        out["supportingInformation"] = [{"reference": coverage}]
    return out


# The booking doors: each takes an Appointment and answers what the door answers.
Door = Callable[[Clinic, dict[str, Any], dict[str, str] | None], httpx.Response]


def _rest(c: Clinic, appt: dict[str, Any], who: dict[str, str] | None) -> httpx.Response:
    return c.post("/Appointment", appt, who)


def _hold(c: Clinic, appt: dict[str, Any], who: dict[str, str] | None) -> httpx.Response:
    return c.post("/Appointment/$hold",
                  parameters(("appt-resource", {**appt, "status": "proposed"})), who)


def _book(c: Clinic, appt: dict[str, Any], who: dict[str, str] | None) -> httpx.Response:
    return c.post("/Appointment/$book",
                  parameters(("appt-resource", {**appt, "status": "proposed"})), who)


def _transaction(c: Clinic, appt: dict[str, Any], who: dict[str, str] | None
                 ) -> httpx.Response:
    return c.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": appt, "request": {"method": "POST", "url": "Appointment"}}]}, who)


DOORS: dict[str, Door] = {"rest": _rest, "$hold": _hold, "$book": _book,
                          "transaction": _transaction}


def refused_rule(r: httpx.Response) -> tuple[int, str, list[str]]:
    """(status, the rule code in issue.details, expression) of a refusal, whatever the door
    wraps it in (a $book Bundle's outcome entry, a transaction's OperationOutcome)."""
    body = r.json()
    if body.get("resourceType") == "Bundle":
        [only] = body["entry"]
        body = only["resource"]
    assert body["resourceType"] == "OperationOutcome", body
    issue = body["issue"][0]
    [coding] = issue["details"]["coding"]
    assert coding["system"] == RULE_SYSTEM
    assert issue["diagnostics"].endswith(issue["details"]["text"])  # a transaction adds where
    return r.status_code, coding["code"], issue.get("expression", [])


def booked(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    body = r.json()
    if body["resourceType"] == "Bundle":
        return next(e["resource"] for e in body["entry"]
                    if e.get("resource", {}).get("resourceType") == "Appointment")
    return dict(body)


def flags(appt: dict[str, Any]) -> list[str]:
    return [sub["valueCode"] for e in appt.get("extension", []) if e["url"] == FLAG_URL
            for sub in e["extension"] if sub["url"] == "rule"]


# (visit type, patient, when, rule broken or None): the rules table, each row on each door.
ROWS = [
    ("notice", "alice", timedelta(hours=2), "min-notice"),
    ("notice", "alice", timedelta(days=3), None),
    ("advance", "alice", timedelta(days=90), "max-advance"),
    ("advance", "alice", timedelta(days=3), None),
    ("adults", "child", timedelta(days=3), "min-age"),
    ("adults", "alice", timedelta(days=3), None),
    ("adults", "unknown", timedelta(days=3), "age-unknown"),
    ("paediatric", "alice", timedelta(days=3), "max-age"),
    ("paediatric", "child", timedelta(days=3), None),
]


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize(("code", "who", "when", "rule"), ROWS,
                         ids=[f"{r[0]}-{r[1]}-{r[3] or 'ok'}" for r in ROWS])
def test_each_rule_refuses_or_passes_on_each_booking_door(
        clinic: Clinic, door: str, code: str, who: str, when: timedelta,
        rule: str | None) -> None:
    patient = getattr(clinic, who)
    r = DOORS[door](clinic, appointment(code, patient, when), None)
    if rule is None:
        assert flags(booked(r)) == []
        return
    status, got, expression = refused_rule(r)
    assert (status, got) == (422, rule), r.text
    assert expression[-1] in ("Appointment.start", "Appointment.participant")


def test_the_same_day_cut_off_is_read_in_the_clinics_zone(clinic: Clinic) -> None:
    """Cut-off 00:00 means "not today, in Auckland": an hour from now is refused when it is
    still today there, and tomorrow there is fine."""
    zone = ZoneInfo(ZONE)
    now = datetime.now(UTC)
    soon = appointment("cutoff", clinic.alice, timedelta(hours=1))
    start = datetime.fromisoformat(soon["start"].replace("Z", "+00:00"))
    same_day = start.astimezone(zone).date() == now.astimezone(zone).date()
    r = _rest(clinic, soon, None)
    if same_day:
        assert refused_rule(r)[:2] == (422, "same-day-cutoff")
    else:
        assert flags(booked(r)) == []
    day_after = datetime.combine(now.astimezone(zone).date() + timedelta(days=2),
                                 datetime.min.time(), zone)
    assert flags(booked(_rest(clinic, appointment("cutoff", clinic.alice,
                                                  day_after - now), None))) == []


def test_a_staff_only_visit_refuses_the_patients_own_token_and_takes_staff(
        clinic: Clinic) -> None:
    r = _rest(clinic, appointment("staff", clinic.alice, timedelta(days=4)), clinic.alice_token)
    status, got, expression = refused_rule(r)
    assert (status, got, expression) == (422, "staff-only", ["Appointment.appointmentType"])
    ok = _rest(clinic, appointment("staff", clinic.alice, timedelta(days=4)), None)
    assert flags(booked(ok)) == []


def test_a_patient_may_book_a_visit_that_allows_self_booking(clinic: Clinic) -> None:
    r = _rest(clinic, appointment("notice", clinic.alice, timedelta(days=5)),
              clinic.alice_token)
    assert flags(booked(r)) == []


def test_the_front_desk_override_books_anyway_with_the_breach_flagged(clinic: Clinic) -> None:
    appt = appointment("notice", clinic.alice, timedelta(hours=1),
                       override="patient in pain, doctor agreed")
    assert refused_rule(_rest(clinic, appt, None))[:2] == (422, "min-notice")  # not staff's
    done = booked(_rest(clinic, appt, clinic.desk))
    assert flags(done) == ["min-notice"]
    auditor = {"authorization": "Bearer " + get_token(clinic.server.base, AUDITOR,
                                                      "system/AuditEvent.rs")}
    trail = web.get(f"{clinic.server.base}/AuditEvent", headers=auditor,
                    params={"subtype": "overbook", "entity": f"Appointment/{done['id']}"})
    assert trail.status_code == 200, trail.text
    assert "patient in pain, doctor agreed" in trail.text


def test_overriding_a_booking_rule_needs_a_reason(clinic: Clinic) -> None:
    appt = appointment("notice", clinic.alice, timedelta(hours=1), override=True)
    r = _rest(clinic, appt, clinic.desk)
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "required" and "override-reason" in issue["diagnostics"]


def test_every_broken_rule_is_told_not_only_the_first(clinic: Clinic) -> None:
    r = _rest(clinic, appointment("strict", clinic.child, timedelta(hours=1)), None)
    assert refused_rule(r)[:2] == (422, "min-notice")
    codes = [i["details"]["coding"][0]["code"] for i in r.json()["issue"]]
    assert codes == ["min-notice", "min-age"]
    appt = appointment("strict", clinic.child, timedelta(hours=1), override="walk-in")
    done = booked(_rest(clinic, appt, clinic.desk))
    assert flags(done) == ["min-notice", "min-age"]


def test_moving_a_booking_checks_the_rules_again_and_a_status_change_does_not(
        clinic: Clinic) -> None:
    made = booked(_rest(clinic, appointment("notice", clinic.alice, timedelta(days=3)), None))
    base = f"{clinic.server.base}/Appointment/{made['id']}"
    headers = {**clinic.admin, "content-type": "application/fhir+json"}
    start, end = _at(timedelta(hours=2))
    moved = web.put(base, json={**made, "start": start, "end": end}, headers=headers)
    assert refused_rule(moved)[:2] == (422, "min-notice")
    arrived = web.put(base, json={**made, "status": "arrived"}, headers=headers)
    assert arrived.status_code == 200, arrived.text


def test_a_rule_setting_that_makes_no_sense_is_refused_on_the_service(clinic: Clinic) -> None:
    bad = {"resourceType": "HealthcareService", "id": "bad-rules", "extension": [
        {**visit_type(SYSTEM, "x", 30), "extension": [
            *visit_type(SYSTEM, "x", 30)["extension"],
            {"url": "minAgeYears", "valueUnsignedInt": 40},
            {"url": "maxAgeYears", "valueUnsignedInt": 20}]}]}
    r = web.put(f"{clinic.server.base}/HealthcareService/bad-rules", json=bad,
                headers={**clinic.admin, "content-type": "application/fhir+json"})
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["HealthcareService.extension[0].extension[2]"]
    assert "maxAgeYears" in issue["diagnostics"]


def test_the_rule_codes_are_served_as_a_code_system(clinic: Clinic) -> None:
    r = web.get(f"{clinic.server.base}/CodeSystem/booking-rule", headers=clinic.admin)
    assert r.status_code == 200, r.text
    codes = {c["code"] for c in r.json()["concept"]}
    assert {"min-notice", "max-advance", "same-day-cutoff", "staff-only", "min-age",
            "max-age", "age-unknown"} <= codes


# -- referrals ------------------------------------------------------------------------------------


PRIOR_AUTH_URL = "https://fhir-sched.org/fhir/StructureDefinition/prior-authorization"


def referral(c: Clinic, patient: str, *, visits: int | None = None, status: str = "active",
             code: str = "specialist", period: tuple[str, str] | None = None,
             authorized: tuple[str, str] | None = None, identifier: str | None = None) -> str:
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest", "status": status, "intent": "order",
        "subject": {"reference": patient},
        "code": {"coding": [{"system": SYSTEM, "code": code}]}}
    if visits is not None:
        body["quantityQuantity"] = {"value": visits}
    if period is not None:
        body["occurrencePeriod"] = {"start": period[0], "end": period[1]}
    if identifier is not None:
        body["identifier"] = [{"system": "https://clinic.example/referrals", "value": identifier}]
    if authorized is not None:
        body["extension"] = [{"url": PRIOR_AUTH_URL, "extension": [
            {"url": "number", "valueString": "PA-123"},
            {"url": "period", "valuePeriod": {"start": authorized[0], "end": authorized[1]}}]}]
    r = c.post("/ServiceRequest", body)
    assert r.status_code == 201, r.text
    return f"ServiceRequest/{r.json()['id']}"


def _new_patient(c: Clinic) -> str:
    r = c.post("/Patient", {"resourceType": "Patient", "birthDate": "1980-02-02"})
    assert r.status_code == 201, r.text
    return f"Patient/{r.json()['id']}"


@pytest.mark.parametrize("door", DOORS)
def test_a_referral_only_visit_without_a_referral_is_refused_on_each_door(
        clinic: Clinic, door: str) -> None:
    r = DOORS[door](clinic, appointment("specialist", _new_patient(clinic), timedelta(days=3)),
                    None)
    status, got, expression = refused_rule(r)
    assert (status, got, expression[-1]) == (422, "referral-required", "Appointment.basedOn")


@pytest.mark.parametrize("door", DOORS)
def test_a_named_referral_is_used_and_kept_on_the_booking(clinic: Clinic, door: str) -> None:
    patient = _new_patient(clinic)
    request = referral(clinic, patient)
    done = booked(DOORS[door](clinic, appointment("specialist", patient, timedelta(days=3),
                                                  based_on=request), None))
    assert [b["reference"] for b in done["basedOn"]] == [request]


def test_the_server_finds_the_patients_referral_when_none_is_named(clinic: Clinic) -> None:
    patient = _new_patient(clinic)
    referral(clinic, patient, code="another-service")  # not this one
    request = referral(clinic, patient)
    done = booked(_rest(clinic, appointment("specialist", patient, timedelta(days=3)), None))
    assert [b["reference"] for b in done["basedOn"]] == [request]


@pytest.mark.parametrize(("make", "why"), [
    (lambda c, p: referral(c, _new_patient(c)), "another patient"),
    (lambda c, p: referral(c, p, status="completed"), "not active"),
    (lambda c, p: referral(c, p, code="dermatology"), "another service"),
    (lambda c, p: referral(c, p, period=("2020-01-01", "2020-12-31")), "occurrencePeriod"),
], ids=["other-patient", "not-active", "other-service", "expired"])
def test_a_named_referral_that_does_not_qualify_is_refused_saying_why(
        clinic: Clinic, make: Callable[[Clinic, str], str], why: str) -> None:
    patient = _new_patient(clinic)
    request = make(clinic, patient)
    r = _rest(clinic, appointment("specialist", patient, timedelta(days=3), based_on=request),
              None)
    status, got, _ = refused_rule(r)
    assert (status, got) == (422, "referral-required")
    assert request in r.text and why in r.text


def test_each_booking_uses_a_visit_and_a_cancellation_gives_it_back(clinic: Clinic) -> None:
    patient = _new_patient(clinic)
    request = referral(clinic, patient, visits=2)
    first = booked(_rest(clinic, appointment("specialist", patient, timedelta(days=3)), None))
    booked(_rest(clinic, appointment("specialist", patient, timedelta(days=4)), None))
    third = _rest(clinic, appointment("specialist", patient, timedelta(days=5)), None)
    status, got, _ = refused_rule(third)
    assert (status, got) == (422, "referral-used")
    assert "no visits left (all 2 are booked)" in third.text
    headers = {**clinic.admin, "content-type": "application/fhir+json"}
    cancel = web.put(f"{clinic.server.base}/Appointment/{first['id']}",
                     json={**first, "status": "cancelled"}, headers=headers)
    assert cancel.status_code == 200, cancel.text
    again = booked(_rest(clinic, appointment("specialist", patient, timedelta(days=5)), None))
    assert [b["reference"] for b in again["basedOn"]] == [request]


def test_a_status_change_keeps_its_referral_visit(clinic: Clinic) -> None:
    patient = _new_patient(clinic)
    referral(clinic, patient, visits=1)
    made = booked(_rest(clinic, appointment("specialist", patient, timedelta(days=3)), None))
    headers = {**clinic.admin, "content-type": "application/fhir+json"}
    arrived = web.put(f"{clinic.server.base}/Appointment/{made['id']}",
                      json={**made, "status": "arrived"}, headers=headers)
    assert arrived.status_code == 200, arrived.text
    other = _rest(clinic, appointment("specialist", patient, timedelta(days=6)), None)
    assert refused_rule(other)[1] == "referral-used"  # the arrived visit still holds it


# -- $find ----------------------------------------------------------------------------------------
ALL_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@pytest.fixture(scope="module")
def found_clinic(clinic: Clinic) -> str:
    """A practitioner open around the clock every day, and a service whose visit types need
    them: one with 48 hours' notice and at most 6 days ahead, one for staff only."""
    headers = {**clinic.admin, "content-type": "application/fhir+json"}
    base = clinic.server.base
    spec = ("https://clinic.example/specialty", "ruled-find")
    assert web.put(f"{base}/Practitioner/ruled-doc", json={
        "resourceType": "Practitioner", "id": "ruled-doc"}, headers=headers).status_code < 300
    sched = schedule("ruled-doc-sched", "Practitioner/ruled-doc",
                     template("UTC", hours(ALL_WEEK, "00:00:00", "23:59:00")), specialty=spec)
    assert web.put(f"{base}/Schedule/ruled-doc-sched", json=sched,
                   headers=headers).status_code < 300
    doctor = need("Practitioner", specialty=spec)

    def typed(code: str, *rules: dict[str, Any]) -> dict[str, Any]:
        vt = visit_type(SYSTEM, code, 30, doctor)
        return {**vt, "extension": [*vt["extension"], *rules]}

    service = {"resourceType": "HealthcareService", "id": "ruled-find", "extension": [
        {"url": TIMEZONE_URL, "valueCode": ZONE},
        typed("find-notice", {"url": "minNoticeMinutes", "valueUnsignedInt": 48 * 60},
              {"url": "maxAdvanceDays", "valuePositiveInt": 6}),
        typed("find-staff", {"url": "selfBooking", "valueBoolean": False}),
        typed("find-adults", {"url": "minAgeYears", "valueUnsignedInt": 18}),
        typed("find-referral", {"url": "referralRequired", "valueBoolean": True}),
        typed("find-insured", {"url": "acceptedPayor",
                               "valueReference": {"reference": "Organization/acme"}})]}
    assert web.put(f"{base}/HealthcareService/ruled-find", json=service,
                   headers=headers).status_code < 300
    return "ruled-find"


def _find_bundle(c: Clinic, code: str, days: int, who: dict[str, str] | None = None,
                 **extra: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    r = web.get(f"{c.server.base}/Appointment/$find", headers=who or c.admin, params={
        "start": now.isoformat().replace("+00:00", "Z"),
        "end": (now + timedelta(days=days)).isoformat().replace("+00:00", "Z"),
        "visit-type": f"{SYSTEM}|{code}", "_count": "100", **extra})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _find(c: Clinic, code: str, days: int, who: dict[str, str] | None = None,
          **extra: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in _find_bundle(c, code, days, who, **extra).get("entry", [])
            if e["resource"]["resourceType"] == "Appointment"]


def _explained(c: Clinic, code: str, days: int, who: dict[str, str] | None = None,
               **extra: str) -> list[str]:
    """The booking-rule codes a $find with _explain=true says narrowed its answer."""
    bundle = _find_bundle(c, code, days, who, _explain="true", **extra)
    return [coding["code"] for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] == "OperationOutcome"
            for issue in e["resource"]["issue"] if issue["severity"] == "information"
            for coding in issue.get("details", {}).get("coding", [])
            if coding["system"] == RULE_SYSTEM]


def test_find_offers_only_times_the_notice_and_advance_rules_allow(
        clinic: Clinic, found_clinic: str) -> None:
    asked = datetime.now(UTC)
    options = _find(clinic, "find-notice", 10)
    assert options, "an open calendar must offer something between 2 and 6 days ahead"
    starts = [datetime.fromisoformat(o["start"]) for o in options]
    assert min(starts) >= asked + timedelta(hours=48)
    assert max(starts) <= datetime.now(UTC) + timedelta(days=6)
    assert all(o["supportingInformation"] == [{"reference": f"HealthcareService/{found_clinic}"}]
               for o in options)


def test_a_find_proposal_books_under_its_visit_types_rules(
        clinic: Clinic, found_clinic: str) -> None:
    [option, *_] = _find(clinic, "find-staff", 3)
    proposal = {**option, "participant": [*option["participant"], {
        "actor": {"reference": clinic.alice}, "status": "accepted"}]}
    r = _book(clinic, proposal, clinic.alice_token)
    assert refused_rule(r)[:2] == (422, "staff-only")
    assert booked(_book(clinic, proposal, None))["status"] == "booked"


def test_find_says_why_when_asked_and_only_then(clinic: Clinic, found_clinic: str) -> None:
    assert set(_explained(clinic, "find-notice", 10)) == {"min-notice", "max-advance"}
    bundle = _find_bundle(clinic, "find-notice", 10)
    assert not any(e["resource"]["resourceType"] == "OperationOutcome"
                   for e in bundle.get("entry", []))


def test_find_offers_a_staff_only_visit_to_staff_and_nothing_to_a_patient(
        clinic: Clinic, found_clinic: str) -> None:
    assert _find(clinic, "find-staff", 3)
    assert _find(clinic, "find-staff", 3, clinic.alice_token) == []
    assert _explained(clinic, "find-staff", 3, clinic.alice_token) == ["staff-only"]


def test_find_with_the_patient_applies_their_age(clinic: Clinic, found_clinic: str) -> None:
    assert _find(clinic, "find-adults", 3, **{"patient-reference": clinic.alice})
    assert _find(clinic, "find-adults", 3, **{"patient-reference": clinic.child}) == []
    assert _explained(clinic, "find-adults", 3,
                      **{"patient-reference": clinic.child}) == ["min-age"]
    assert _explained(clinic, "find-adults", 3,
                      **{"patient-reference": clinic.unknown}) == ["age-unknown"]


def test_find_with_the_patient_offers_only_what_their_referral_covers(
        clinic: Clinic, found_clinic: str) -> None:
    patient = _new_patient(clinic)
    assert _find(clinic, "find-referral", 6, **{"patient-reference": patient}) == []
    assert _explained(clinic, "find-referral", 6,
                      **{"patient-reference": patient}) == ["referral-required"]
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    referral(clinic, patient, code="find-referral", period=(day.isoformat(), day.isoformat()))
    options = _find(clinic, "find-referral", 6, **{"patient-reference": patient})
    assert options
    assert {datetime.fromisoformat(o["start"]).astimezone(UTC).date() for o in options} == {day}


# -- coverage -------------------------------------------------------------------------------------


def coverage(c: Clinic, patient: str, payor: str = "Organization/acme", status: str = "active",
             period: tuple[str, str] | None = None) -> str:
    body: dict[str, Any] = {"resourceType": "Coverage", "status": status,
                            "beneficiary": {"reference": patient},
                            "payor": [{"reference": payor}]}
    if period is not None:
        body["period"] = {"start": period[0], "end": period[1]}
    r = c.post("/Coverage", body)
    assert r.status_code == 201, r.text
    return f"Coverage/{r.json()['id']}"


@pytest.mark.parametrize("door", DOORS)
def test_an_insured_visit_without_coverage_is_refused_and_with_it_booked(
        clinic: Clinic, door: str) -> None:
    patient = _new_patient(clinic)
    r = DOORS[door](clinic, appointment("insured", patient, timedelta(days=3)), None)
    status, got, expression = refused_rule(r)
    assert (status, got, expression[-1]) == (422, "coverage-required",
                                             "Appointment.supportingInformation")
    plan = coverage(clinic, patient)
    done = booked(DOORS[door](clinic, appointment("insured", patient, timedelta(days=3)), None))
    assert {"reference": plan} in done["supportingInformation"]  # found and linked


@pytest.mark.parametrize(("make", "rule", "why"), [
    (lambda c, p: coverage(c, p, status="cancelled"), "coverage-required", "not active"),
    (lambda c, p: coverage(c, _new_patient(c)), "coverage-required", "beneficiary"),
    (lambda c, p: coverage(c, p, period=("2020-01-01", "2020-12-31")), "coverage-required",
     "period"),
    (lambda c, p: coverage(c, p, payor="Organization/other"), "payor-not-accepted",
     "does not accept"),
], ids=["not-active", "other-patient", "expired", "payor"])
def test_a_named_coverage_that_does_not_cover_the_visit_is_refused_saying_why(
        clinic: Clinic, make: Callable[[Clinic, str], str], rule: str,
        why: str) -> None:
    patient = _new_patient(clinic)
    plan = make(clinic, patient)
    r = _rest(clinic, appointment("acme-only", patient, timedelta(days=3), coverage=plan), None)
    status, got, _ = refused_rule(r)
    assert (status, got) == (422, rule)
    assert plan in r.text and why in r.text


def test_any_accepted_payor_will_do(clinic: Clinic) -> None:
    patient = _new_patient(clinic)
    plan = coverage(clinic, patient, payor="Organization/beta")
    done = booked(_rest(clinic, appointment("acme-only", patient, timedelta(days=3),
                                            coverage=plan), None))
    assert {"reference": plan} in done["supportingInformation"]


def test_find_with_the_patient_offers_only_while_an_accepted_coverage_lasts(
        clinic: Clinic, found_clinic: str) -> None:
    patient = _new_patient(clinic)
    assert _explained(clinic, "find-insured", 6,
                      **{"patient-reference": patient}) == ["coverage-required"]
    coverage(clinic, patient, payor="Organization/other")
    assert _explained(clinic, "find-insured", 6,
                      **{"patient-reference": patient}) == ["payor-not-accepted"]
    day = (datetime.now(UTC) + timedelta(days=4)).date()
    coverage(clinic, patient, period=(day.isoformat(), day.isoformat()))
    options = _find(clinic, "find-insured", 6, **{"patient-reference": patient})
    assert {datetime.fromisoformat(o["start"]).astimezone(UTC).date() for o in options} == {day}


# -- prior authorization --------------------------------------------------------------------------


def _days(n: int) -> str:
    return (datetime.now(UTC) + timedelta(days=n)).date().isoformat()


def test_a_visit_needing_prior_authorization_books_only_inside_the_authorized_period(
        clinic: Clinic) -> None:
    patient = _new_patient(clinic)
    plain = referral(clinic, patient, code="authorized")
    r = _rest(clinic, appointment("authorized", patient, timedelta(days=3), based_on=plain), None)
    status, got, _ = refused_rule(r)
    assert (status, got) == (422, "prior-authorization")
    assert "carries no prior authorization" in r.text
    early = referral(clinic, patient, code="authorized", authorized=(_days(10), _days(20)))
    r = _rest(clinic, appointment("authorized", patient, timedelta(days=3), based_on=early), None)
    assert refused_rule(r)[:2] == (422, "prior-authorization")
    assert "PA-123" in r.text
    done = booked(_rest(clinic, appointment("authorized", patient, timedelta(days=12),
                                            based_on=early), None))
    assert done["basedOn"] == [{"reference": early}]


def test_the_server_finds_the_authorized_referral_among_the_patients(clinic: Clinic) -> None:
    patient = _new_patient(clinic)
    referral(clinic, patient, code="authorized")  # no authorization: passed over
    good = referral(clinic, patient, code="authorized", authorized=(_days(1), _days(9)))
    done = booked(_rest(clinic, appointment("authorized", patient, timedelta(days=3)), None))
    assert done["basedOn"] == [{"reference": good}]


# -- the patient's history ------------------------------------------------------------------------


def _seen(c: Clinic, patient: str, years_ago: float) -> None:
    """A fulfilled visit of the ruled service, in the past."""
    start = datetime.now(UTC) - timedelta(days=365 * years_ago)
    r = c.post("/Appointment", {
        "resourceType": "Appointment", "status": "fulfilled",
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
        "participant": [
            {"actor": {"reference": "HealthcareService/ruled"}, "status": "accepted"},
            {"actor": {"reference": patient}, "status": "accepted"}]})
    assert r.status_code == 201, r.text


def test_a_new_patient_visit_refuses_a_patient_seen_in_the_lookback(clinic: Clinic) -> None:
    fresh = _new_patient(clinic)
    booked(_rest(clinic, appointment("new-only", fresh, timedelta(days=3)), None))
    seen = _new_patient(clinic)
    _seen(clinic, seen, 1)
    r = _rest(clinic, appointment("new-only", seen, timedelta(days=3)), None)
    assert refused_rule(r)[:2] == (422, "new-patient")
    long_ago = _new_patient(clinic)
    _seen(clinic, long_ago, 5)  # outside the 3-year lookback: new again
    booked(_rest(clinic, appointment("new-only", long_ago, timedelta(days=3)), None))


def test_a_follow_up_visit_needs_a_patient_seen_before(clinic: Clinic) -> None:
    r = _rest(clinic, appointment("follow-up", _new_patient(clinic), timedelta(days=3)), None)
    assert refused_rule(r)[:2] == (422, "established-patient")
    seen = _new_patient(clinic)
    _seen(clinic, seen, 1)
    booked(_rest(clinic, appointment("follow-up", seen, timedelta(days=3)), None))


def test_visits_per_period_counts_the_patients_other_bookings_of_the_type(
        clinic: Clinic) -> None:
    patient = _new_patient(clinic)
    first = booked(_rest(clinic, appointment("monthly", patient, timedelta(days=3)), None))
    r = _rest(clinic, appointment("monthly", patient, timedelta(days=20)), None)
    assert refused_rule(r)[:2] == (422, "visit-limit")
    booked(_rest(clinic, appointment("monthly", patient, timedelta(days=40)), None))
    headers = {**clinic.admin, "content-type": "application/fhir+json"}
    cancel = web.put(f"{clinic.server.base}/Appointment/{first['id']}",
                     json={**first, "status": "cancelled"}, headers=headers)
    assert cancel.status_code == 200, cancel.text
    booked(_rest(clinic, appointment("monthly", patient, timedelta(days=4)), None))


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_find_for_a_named_referral_offers_only_what_that_referral_covers(
        clinic: Clinic, found_clinic: str, method: str) -> None:
    patient = _new_patient(clinic)
    soon, later = (datetime.now(UTC) + timedelta(days=2)).date(), (
        datetime.now(UTC) + timedelta(days=4)).date()
    referral(clinic, patient, code="find-referral", identifier="R-soon",
             period=(soon.isoformat(), soon.isoformat()))
    referral(clinic, patient, code="find-referral", identifier="R-later",
             period=(later.isoformat(), later.isoformat()))
    now = datetime.now(UTC)
    body = parameters(("start", now.isoformat().replace("+00:00", "Z")),
                      ("end", (now + timedelta(days=6)).isoformat().replace("+00:00", "Z")),
                      ("visit-type", f"{SYSTEM}|find-referral"),
                      ("patient-reference", {"reference": patient}))
    body["parameter"].append({"name": "referral-identifier", "valueIdentifier": {
        "system": "https://clinic.example/referrals", "value": "R-later"}})
    if method == "POST":
        r = clinic.post("/Appointment/$find", body)
    else:  # the Identifier as a token, as search writes one
        r = web.get(f"{clinic.server.base}/Appointment/$find", headers=clinic.admin, params={
            "start": now.isoformat().replace("+00:00", "Z"),
            "end": (now + timedelta(days=6)).isoformat().replace("+00:00", "Z"),
            "visit-type": f"{SYSTEM}|find-referral", "patient-reference": patient,
            "referral-identifier": "https://clinic.example/referrals|R-later"})
    assert r.status_code == 200, r.text
    days = {datetime.fromisoformat(e["resource"]["start"]).astimezone(UTC).date()
            for e in r.json().get("entry", []) if e["resource"]["resourceType"] == "Appointment"}
    assert days == {later}


# -- cancellation -------------------------------------------------------------------------------


def _cancel(c: Clinic, appt: dict[str, Any]) -> dict[str, Any]:
    r = web.put(f"{c.server.base}/Appointment/{appt['id']}", json={**appt, "status": "cancelled"},
                headers={**c.admin, "content-type": "application/fhir+json"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_cancellation_inside_the_window_is_flagged_late_and_one_before_it_is_not(
        clinic: Clinic) -> None:
    soon = booked(_rest(clinic, appointment("late-48", _new_patient(clinic),
                                            timedelta(hours=5)), None))
    assert flags(_cancel(clinic, soon)) == ["late-cancellation"]
    later = booked(_rest(clinic, appointment("late-48", _new_patient(clinic),
                                             timedelta(days=5)), None))
    assert flags(_cancel(clinic, later)) == []


CANCEL_SYSTEM = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"


@pytest.mark.parametrize(("code", "ok"), [("pat-fb", True), ("oth-weath", True),
                                          ("patient-felt-better", False)])
def test_a_cancellation_reason_from_the_r4_code_system_must_be_one_of_its_codes(
        clinic: Clinic, code: str, ok: bool) -> None:
    made = booked(_rest(clinic, appointment("notice", _new_patient(clinic), timedelta(days=3)),
                        None))
    body = {**made, "status": "cancelled",
            "cancelationReason": {"coding": [{"system": CANCEL_SYSTEM, "code": code}]}}
    r = web.put(f"{clinic.server.base}/Appointment/{made['id']}", json=body,
                headers={**clinic.admin, "content-type": "application/fhir+json"})
    if ok:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Appointment.cancelationReason.coding[0].code"]


def test_a_cancellation_reason_from_another_code_system_is_the_clinics_own(
        clinic: Clinic) -> None:
    made = booked(_rest(clinic, appointment("notice", _new_patient(clinic), timedelta(days=3)),
                        None))
    body = {**made, "status": "cancelled", "cancelationReason": {
        "coding": [{"system": "https://clinic.example/cancel", "code": "snow"}]}}
    r = web.put(f"{clinic.server.base}/Appointment/{made['id']}", json=body,
                headers={**clinic.admin, "content-type": "application/fhir+json"})
    assert r.status_code == 200, r.text
