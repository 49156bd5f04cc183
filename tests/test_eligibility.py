"""Eligibility (issue 14 item 4): a booking of a visit type that needs coverage asks the payer's
gateway, a real HTTP process the test starts, whether the Coverage is in force; the answer is
stored as a CoverageEligibilityResponse, linked from the Appointment and reused for a while;
a slow, failing or garbled checker follows the deployment's policy (book flagged, or refuse)
within the time budget. ``$submit`` asks the same checker, or the local Coverage rules."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_sched.scheduling.booking_rules import RULE_SYSTEM
from tests.support import web
from tests.support.scheduling import parameters, visit_type
from tests.support.server import ServerProcess, cleanup_dir, free_port, store_url

SYSTEM = "https://clinic.example/visit-types"
FLAG_URL = "https://fhir-sched.org/fhir/StructureDefinition/booking-flag"
BUDGET_MS = 800
SLOW_SECONDS = 3.0  # the slow payer answers well after the budget
JSON = {"content-type": "application/fhir+json"}


@dataclass
class Checker:
    port: int
    out: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/eligibility"

    def calls(self, coverage: str) -> list[dict[str, Any]]:
        """The requests the checker got about ``coverage`` (Coverage/<id>)."""
        if not self.out.exists():
            return []
        seen = [json.loads(line) for line in self.out.read_text().splitlines()]
        return [s for s in seen
                if s["body"]["insurance"][0]["coverage"]["reference"] == coverage]


@pytest.fixture(scope="module")
def checker() -> Iterator[Checker]:
    out = Path(tempfile.mkdtemp(prefix="fhir-sched-checker-")) / "calls.jsonl"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.eligibility_checker",
                             "--port", str(port), "--out", str(out),
                             "--slow-seconds", str(SLOW_SECONDS)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    try:
        yield Checker(port, out, proc)
    finally:
        proc.kill()
        proc.wait()
        cleanup_dir(str(out.parent))


@dataclass
class Clinic:
    server: ServerProcess

    @property
    def base(self) -> str:
        return self.server.base

    def put(self, body: dict[str, Any]) -> None:
        r = web.put(f"{self.base}/{body['resourceType']}/{body['id']}", json=body, headers=JSON)
        assert r.status_code in (200, 201), r.text

    def post(self, path: str, body: Any) -> httpx.Response:
        return web.post(f"{self.base}{path}", json=body, headers=JSON, timeout=15.0)

    def get(self, ref: str) -> dict[str, Any]:
        r = web.get(f"{self.base}/{ref}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def patient(self) -> str:
        pid = uuid.uuid4().hex[:12]
        self.put({"resourceType": "Patient", "id": pid, "birthDate": "1980-05-05"})
        return f"Patient/{pid}"

    def coverage(self, kind: str, patient: str, period: tuple[str, str] | None = None) -> str:
        """A Coverage whose id tells the test checker how to answer (see its docstring)."""
        cid = f"{kind}-{uuid.uuid4().hex[:10]}"
        body: dict[str, Any] = {"resourceType": "Coverage", "id": cid, "status": "active",
                                "beneficiary": {"reference": patient},
                                "payor": [{"reference": "Organization/acme"}]}
        if period:
            body["period"] = {"start": period[0], "end": period[1]}
        self.put(body)
        return f"Coverage/{cid}"


def _clinic(store: str, env: dict[str, str]) -> ServerProcess:
    proc = ServerProcess(store, env={"FHIR_SCHED_AUTH": "none", **env}).start()
    c = Clinic(proc)
    c.put({"resourceType": "Organization", "id": "acme", "name": "Acme Health"})
    c.put({"resourceType": "HealthcareService", "id": "insured", "extension": [
        {**visit_type(SYSTEM, "insured", 30), "extension": [
            *visit_type(SYSTEM, "insured", 30)["extension"],
            {"url": "coverageRequired", "valueBoolean": True}]},
        visit_type(SYSTEM, "walk-in", 30)]})
    return proc


@pytest.fixture(scope="module")
def clinic(store_kind: str, mongo_uri: str | None, checker: Checker) -> Iterator[Clinic]:
    """Book and flag when the payer gives no answer (the default policy)."""
    url = store_url(store_kind, mongo_uri, "fhir_sched_eligibility")
    proc = _clinic(url, {"FHIR_SCHED_ELIGIBILITY_URL": checker.url,
                         "FHIR_SCHED_ELIGIBILITY_TIMEOUT_MS": str(BUDGET_MS)})
    try:
        yield Clinic(proc)
    finally:
        proc.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@pytest.fixture(scope="module")
def strict(checker: Checker) -> Iterator[Clinic]:
    """Refuse when the payer gives no answer, and never reuse an answer."""
    url = store_url("sqlite", None, "")
    proc = _clinic(url, {"FHIR_SCHED_ELIGIBILITY_URL": checker.url,
                         "FHIR_SCHED_ELIGIBILITY_TIMEOUT_MS": str(BUDGET_MS),
                         "FHIR_SCHED_ELIGIBILITY_ON_FAILURE": "refuse",
                         "FHIR_SCHED_ELIGIBILITY_CACHE_MINUTES": "0",
                         "FHIR_SCHED_LOG_LEVEL": "info"})
    try:
        yield Clinic(proc)
    finally:
        proc.stop()
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@pytest.fixture(scope="module")
def local() -> Iterator[Clinic]:
    """No payer configured: the local checker answers $submit."""
    url = store_url("sqlite", None, "")
    proc = _clinic(url, {})
    try:
        yield Clinic(proc)
    finally:
        proc.stop()
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


_day = iter(range(1, 10_000))


def appointment(patient: str, coverage: str | None, code: str = "insured") -> dict[str, Any]:
    """A 30-minute visit on a day of its own, so no two bookings of the suite meet."""
    start = datetime(2031, 1, 6, 9, tzinfo=UTC) + timedelta(days=next(_day))
    out: dict[str, Any] = {
        "resourceType": "Appointment", "status": "booked",
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
        "appointmentType": {"coding": [{"system": SYSTEM, "code": code}]},
        "participant": [
            {"actor": {"reference": "HealthcareService/insured"}, "status": "accepted"},
            {"actor": {"reference": patient}, "status": "accepted"}]}
    if coverage:
        out["supportingInformation"] = [{"reference": coverage}]
    return out


Door = Callable[[Clinic, dict[str, Any]], httpx.Response]


def _rest(c: Clinic, appt: dict[str, Any]) -> httpx.Response:
    return c.post("/Appointment", appt)


def _book(c: Clinic, appt: dict[str, Any]) -> httpx.Response:
    return c.post("/Appointment/$book",
                  parameters(("appt-resource", {**appt, "status": "proposed"})))


def _hold(c: Clinic, appt: dict[str, Any]) -> httpx.Response:
    return c.post("/Appointment/$hold",
                  parameters(("appt-resource", {**appt, "status": "proposed"})))


def _transaction(c: Clinic, appt: dict[str, Any]) -> httpx.Response:
    return c.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": appt, "request": {"method": "POST", "url": "Appointment"}}]})


DOORS: dict[str, Door] = {"rest": _rest, "$book": _book, "$hold": _hold,
                          "transaction": _transaction}


def booked(c: Clinic, r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    body = r.json()
    if body["resourceType"] == "Bundle":
        entry = body["entry"][0]
        if "resource" in entry and entry["resource"]["resourceType"] == "Appointment":
            return dict(entry["resource"])
        return c.get(entry["response"]["location"].split("/_history")[0])
    return dict(body)


def refusal(r: httpx.Response) -> tuple[int, str, str]:
    body = r.json()
    if body.get("resourceType") == "Bundle":
        body = body["entry"][0]["resource"]
    issue = body["issue"][0]
    [coding] = issue["details"]["coding"]
    assert coding["system"] == RULE_SYSTEM
    return r.status_code, coding["code"], issue["diagnostics"]


def answer_of(c: Clinic, appt: dict[str, Any]) -> dict[str, Any]:
    [ref] = [s["reference"] for s in appt["supportingInformation"]
             if s["reference"].startswith("CoverageEligibilityResponse/")]
    return c.get(ref)


def flags(appt: dict[str, Any]) -> dict[str, str]:
    out = {}
    for e in appt.get("extension", []):
        if e["url"] == FLAG_URL:
            subs = {s["url"]: s for s in e["extension"]}
            out[subs["rule"]["valueCode"]] = subs.get("detail", {}).get("valueString", "")
    return out


# -- a payer that answers ---------------------------------------------------------------------


@pytest.mark.parametrize("door", DOORS)
def test_a_coverage_the_payer_says_is_in_force_books_and_links_the_stored_answer(
        clinic: Clinic, checker: Checker, door: str) -> None:
    patient = clinic.patient()
    plan = clinic.coverage("good", patient)
    appt = booked(clinic, DOORS[door](clinic, appointment(patient, plan)))
    assert flags(appt) == {}
    assert {"reference": plan} in appt["supportingInformation"]
    answer = answer_of(clinic, appt)
    assert answer["outcome"] == "complete"
    # The payer named the Coverage by its own URL; the stored answer names ours.
    assert answer["insurance"] == [{"coverage": {"reference": plan}, "inforce": True}]
    assert answer["patient"] == {"reference": patient}
    assert answer["identifier"][0]["value"] == "E-1"  # the payer's own id for it, kept
    request = clinic.get(answer["request"]["reference"])
    assert request["insurance"] == [{"focal": True, "coverage": {"reference": plan}}]
    [call] = checker.calls(plan)
    sent = call["body"]
    assert call["content_type"] == "application/fhir+json"
    assert sent["resourceType"] == "CoverageEligibilityRequest"
    assert sent["id"] == request["id"]
    assert sent["patient"] == {"reference": patient}
    assert sent["servicedDate"] == appt["start"][:10]
    assert sent["insurer"] == {"reference": "Organization/acme"}
    assert sent["item"][0]["productOrService"]["coding"] == [{"system": SYSTEM,
                                                               "code": "insured"}]


def test_an_answer_in_a_parameters_return_is_read_as_the_answer(
        clinic: Clinic) -> None:
    patient = clinic.patient()
    appt = booked(clinic, _rest(clinic, appointment(patient,
                                                    clinic.coverage("wrapped", patient))))
    assert flags(appt) == {}
    assert answer_of(clinic, appt)["insurance"][0]["inforce"] is True


def test_the_answer_is_reused_for_the_same_coverage_within_its_lifetime(
        clinic: Clinic, checker: Checker) -> None:
    patient = clinic.patient()
    plan = clinic.coverage("good", patient)
    first = booked(clinic, _rest(clinic, appointment(patient, plan)))
    second = booked(clinic, _book(clinic, appointment(patient, plan)))
    assert answer_of(clinic, first)["id"] == answer_of(clinic, second)["id"]
    assert len(checker.calls(plan)) == 1


def test_with_no_lifetime_every_booking_asks_again(strict: Clinic, checker: Checker) -> None:
    patient = strict.patient()
    plan = strict.coverage("good", patient)
    for _ in range(2):
        booked(strict, _rest(strict, appointment(patient, plan)))
    assert len(checker.calls(plan)) == 2


def test_the_coverage_found_on_file_is_the_one_asked_about(
        clinic: Clinic, checker: Checker) -> None:
    patient = clinic.patient()
    plan = clinic.coverage("good", patient)
    appt = booked(clinic, _rest(clinic, appointment(patient, None)))
    assert {"reference": plan} in appt["supportingInformation"]
    assert len(checker.calls(plan)) == 1


@pytest.mark.parametrize("door", DOORS)
def test_a_coverage_the_payer_says_is_not_in_force_is_refused(
        clinic: Clinic, door: str) -> None:
    patient = clinic.patient()
    r = DOORS[door](clinic, appointment(patient, clinic.coverage("lapsed", patient)))
    status, code, why = refusal(r)
    assert (status, code) == (422, "coverage-not-eligible")
    assert "policy terminated" in why  # the payer's own words reach the front desk


def test_a_visit_type_that_needs_no_coverage_never_asks_the_payer(
        clinic: Clinic, checker: Checker) -> None:
    patient = clinic.patient()
    plan = clinic.coverage("good", patient)
    booked(clinic, _rest(clinic, appointment(patient, plan, code="walk-in")))
    assert checker.calls(plan) == []


def test_the_local_coverage_rules_are_checked_before_the_payer_is_asked(
        clinic: Clinic, checker: Checker) -> None:
    patient = clinic.patient()
    plan = clinic.coverage("good", patient, period=("2020-01-01", "2020-12-31"))
    status, code, _ = refusal(_rest(clinic, appointment(patient, plan)))
    assert (status, code) == (422, "coverage-required")
    assert checker.calls(plan) == []


# -- a payer that does not answer -------------------------------------------------------------


@pytest.mark.parametrize(("kind", "why"), [
    ("slow", f"did not answer within {BUDGET_MS} ms"),
    ("fail", "HTTP 503: payer system down for maintenance"),
    ("garbage", "not JSON"),
    ("error", "Subscriber not found"),
])
def test_no_usable_answer_books_flagged_with_the_reason_by_default(
        clinic: Clinic, kind: str, why: str) -> None:
    patient = clinic.patient()
    appt = booked(clinic, _rest(clinic, appointment(patient, clinic.coverage(kind, patient))))
    assert why in flags(appt)["eligibility-unverified"]
    answer = answer_of(clinic, appt)
    assert answer["outcome"] == "error"
    assert why in json.dumps([answer.get("disposition"), answer["error"]])  # ours, or the payer's


def test_an_answer_that_verified_nothing_is_not_reused(clinic: Clinic, checker: Checker) -> None:
    patient = clinic.patient()
    plan = clinic.coverage("fail", patient)
    for _ in range(2):
        booked(clinic, _rest(clinic, appointment(patient, plan)))
    assert len(checker.calls(plan)) == 2


@pytest.mark.parametrize("kind", ["slow", "fail"])
@pytest.mark.parametrize("door", ["rest", "$book"])
def test_with_the_refuse_policy_no_usable_answer_refuses_the_booking(
        strict: Clinic, kind: str, door: str) -> None:
    patient = strict.patient()
    status, code, why = refusal(DOORS[door](strict, appointment(
        patient, strict.coverage(kind, patient))))
    assert (status, code) == (422, "eligibility-unverified")
    assert "did not confirm" in why


# -- $submit -----------------------------------------------------------------------------------


def _request(patient: str, coverage: str, served: str = "2031-03-03") -> dict[str, Any]:
    return {"resourceType": "CoverageEligibilityRequest", "status": "active",
            "purpose": ["validation"], "patient": {"reference": patient},
            "servicedDate": served, "created": "2031-03-01",
            "insurer": {"reference": "Organization/acme"},
            "insurance": [{"focal": True, "coverage": {"reference": coverage}}]}


def test_submit_answers_from_the_local_coverage_rules_when_no_payer_is_configured(
        local: Clinic) -> None:
    patient = local.patient()
    active = local.coverage("any", patient, period=("2031-01-01", "2031-12-31"))
    lapsed = local.coverage("any", patient, period=("2020-01-01", "2020-12-31"))
    yes = local.post("/CoverageEligibilityRequest/$submit", _request(patient, active))
    assert yes.status_code == 200, yes.text
    assert yes.json()["resourceType"] == "CoverageEligibilityResponse"
    assert yes.json()["insurance"][0]["coverage"] == {"reference": active}
    assert yes.json()["insurance"][0]["inforce"] is True
    no = local.post("/CoverageEligibilityRequest/$submit",
                    parameters(("resource", _request(patient, lapsed))))
    assert no.status_code == 200, no.text
    assert no.json()["insurance"][0]["inforce"] is False
    assert "period" in no.json()["disposition"]


def test_submit_keeps_the_question_and_the_answer(local: Clinic) -> None:
    patient = local.patient()
    plan = local.coverage("any", patient)
    answer = local.post("/CoverageEligibilityRequest/$submit", _request(patient, plan)).json()
    assert local.get(f"CoverageEligibilityResponse/{answer['id']}")["outcome"] == "complete"
    request = local.get(answer["request"]["reference"])
    assert request["patient"] == {"reference": patient}
    found = web.get(f"{local.base}/CoverageEligibilityResponse",
                    params={"coverage": plan}).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [answer["id"]]
    mine = web.get(f"{local.base}/Patient/{patient.split('/')[1]}/CoverageEligibilityRequest"
                   ).json()
    assert [e["resource"]["id"] for e in mine.get("entry", [])] == [request["id"]]


def test_submit_asks_the_configured_payer(clinic: Clinic, checker: Checker) -> None:
    patient = clinic.patient()
    plan = clinic.coverage("lapsed", patient)
    r = clinic.post("/CoverageEligibilityRequest/$submit", _request(patient, plan))
    assert r.status_code == 200, r.text
    assert r.json()["insurance"] == [{"coverage": {"reference": plan}, "inforce": False}]
    assert r.json()["disposition"] == "policy terminated 2026-01-01"
    assert len(checker.calls(plan)) == 1


def test_submit_names_a_coverage_that_does_not_exist(local: Clinic) -> None:
    r = local.post("/CoverageEligibilityRequest/$submit",
                   _request(local.patient(), "Coverage/nowhere"))
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"] == [
        "CoverageEligibilityRequest.insurance[0].coverage"]


def test_submit_refuses_a_request_that_is_not_valid(local: Clinic) -> None:
    body = {**_request(local.patient(), "Coverage/x"), "status": "approved"}
    r = local.post("/CoverageEligibilityRequest/$submit", body)
    assert r.status_code in (400, 422), r.text
    assert "status" in r.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_a_client_cannot_write_an_eligibility_answer_of_its_own(
        local: Clinic, method: str) -> None:
    patient = local.patient()
    plan = local.coverage("any", patient)
    answer = local.post("/CoverageEligibilityRequest/$submit", _request(patient, plan)).json()
    forged = {**answer, "insurance": [{"coverage": {"reference": plan}, "inforce": True}]}
    url = f"{local.base}/CoverageEligibilityResponse"
    if method == "POST":
        forged.pop("id")
        r = web.post(url, json=forged, headers=JSON)
    elif method == "PUT":
        r = web.put(f"{url}/{answer['id']}", json=forged, headers=JSON)
    else:
        r = web.delete(f"{url}/{answer['id']}")
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "GET"
    assert local.get(f"CoverageEligibilityResponse/{answer['id']}")["meta"]["versionId"] == "1"


def test_the_capability_statement_lists_submit_and_both_eligibility_types(
        local: Clinic) -> None:
    cs = web.get(f"{local.base}/metadata").json()
    types = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert "CoverageEligibilityResponse" in types
    ops = {o["name"] for o in types["CoverageEligibilityRequest"].get("operation", [])}
    assert "submit" in ops


def test_asking_the_payer_logs_neither_the_patient_nor_each_outbound_request(
        strict: Clinic, checker: Checker) -> None:
    patient = strict.patient()
    plan = strict.coverage("fail", patient)
    refusal(_rest(strict, appointment(patient, plan)))
    assert len(checker.calls(plan)) == 1
    strict.server.log_with("gave no usable answer")
    log = strict.server.log_with("fhir_sched.access")  # info lines are on
    assert "HTTP Request:" not in log  # httpx's own line, with the gateway URL
    assert patient.split("/")[1] not in log and plan.split("/")[1] not in log
