"""CDS Hooks ``appointment-book`` (issue 14 item 5): before ``$book`` commits, the configured
CDS service, a real HTTP process the test starts, gets the hook's context and prefetch; its
cards come back as OperationOutcome issues in ``$book``'s Bundle; a critical card refuses the
booking unless the front-desk override is used with a reason; a late service is given up on
at the budget and the booking goes ahead with a warning. With auth on, as deployed."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import web
from tests.support.scheduling import parameters, visit_type
from tests.support.server import ServerProcess, cleanup_dir, free_port, store_url
from tests.support.smart import BackendClient, get_token, register_backend

SYSTEM = "https://clinic.example/visit-types"
OVERBOOKED_URL = "https://fhir-sched.org/fhir/StructureDefinition/overbooked"
REASON_URL = "https://fhir-sched.org/fhir/StructureDefinition/override-reason"
STAFF = BackendClient.new("cds-staff")
DESK = BackendClient.new("cds-desk")
BUDGET_MS = 700


@dataclass
class Clinic:
    server: ServerProcess
    out: Path
    staff: dict[str, str]
    desk: dict[str, str]

    def put(self, body: dict[str, Any]) -> None:
        r = web.put(f"{self.server.base}/{body['resourceType']}/{body['id']}", json=body,
                    headers=self.staff)
        assert r.status_code in (200, 201), r.text

    def calls(self, patient_id: str) -> list[dict[str, Any]]:
        seen = [json.loads(line) for line in self.out.read_text().splitlines()
                ] if self.out.exists() else []
        return [s for s in seen if s["context"].get("patientId") == patient_id]


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    out = Path(tempfile.mkdtemp(prefix="fhir-sched-cds-")) / "calls.jsonl"
    port = free_port()
    cds = subprocess.Popen([sys.executable, "-m", "tests.support.cds_service", "--port",
                            str(port), "--out", str(out), "--slow-seconds", "3"],
                           stdout=subprocess.PIPE)
    assert cds.stdout is not None and cds.stdout.readline().strip() == b"ready"
    url = store_url("sqlite", None, "")
    keys = tmp_path_factory.mktemp("cds")
    register_backend(url, STAFF, "system/*.cruds", keys)
    register_backend(url, DESK, "system/*.cruds fhir-sched/overbook", keys)
    proc = ServerProcess(url, env={
        "FHIR_SCHED_AUTH": "smart", "FHIR_SCHED_CDS_SERVICES": f"http://127.0.0.1:{port}/cds",
        "FHIR_SCHED_CDS_TIMEOUT_MS": str(BUDGET_MS)}).start()
    try:
        staff = {"authorization": f"Bearer {get_token(proc.base, STAFF, 'system/*.cruds')}"}
        desk = {"authorization": "Bearer " + get_token(
            proc.base, DESK, "system/*.cruds fhir-sched/overbook")}
        c = Clinic(proc, out, staff, desk)
        c.put({"resourceType": "Organization", "id": "acme", "name": "Acme"})
        c.put({"resourceType": "HealthcareService", "id": "clinic",
               "extension": [visit_type(SYSTEM, "consult", 30)]})
        yield c
    finally:
        proc.stop()
        cds.kill()
        cds.wait()
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])
        cleanup_dir(str(out.parent))


_day = iter(range(1, 10_000))


def book(c: Clinic, kind: str, who: dict[str, str] | None = None,
         override: str | None = None) -> tuple[str, httpx.Response]:
    """A $book for a new patient whose id tells the CDS service how to answer."""
    pid = f"{kind}-{next(_day)}"
    c.put({"resourceType": "Patient", "id": pid, "birthDate": "1970-01-01"})
    c.put({"resourceType": "Coverage", "id": f"cov-{pid}", "status": "active",
           "beneficiary": {"reference": f"Patient/{pid}"},
           "payor": [{"reference": "Organization/acme"}]})
    start = datetime(2031, 2, 3, 9, tzinfo=UTC) + timedelta(days=next(_day))
    appt: dict[str, Any] = {
        "resourceType": "Appointment", "status": "proposed",
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
        "appointmentType": {"coding": [{"system": SYSTEM, "code": "consult"}]},
        "participant": [{"actor": {"reference": "HealthcareService/clinic"}},
                        {"actor": {"reference": f"Patient/{pid}"}}]}
    if override:
        appt["extension"] = [{"url": OVERBOOKED_URL, "valueBoolean": True},
                             {"url": REASON_URL, "valueString": override}]
    r = web.post(f"{c.server.base}/Appointment/$book", json=parameters(("appt-resource", appt)),
                 headers={**(who or c.staff), "content-type": "application/fhir+json"})
    return pid, r


def issues(r: httpx.Response) -> list[dict[str, Any]]:
    return [i for e in r.json()["entry"] if e["resource"]["resourceType"] == "OperationOutcome"
            for i in e["resource"]["issue"]]


def appointments(r: httpx.Response) -> list[dict[str, Any]]:
    return [e["resource"] for e in r.json()["entry"]
            if e["resource"]["resourceType"] == "Appointment"]


def test_the_service_gets_the_hook_context_and_prefetch(clinic: Clinic) -> None:
    pid, r = book(clinic, "quiet")
    assert r.status_code == 200, r.text
    [call] = clinic.calls(pid)
    assert call["hook"] == "appointment-book"
    assert call["hookInstance"]
    assert call["fhirServer"] == clinic.server.base
    assert call["context"]["userId"]  # the caller
    [proposed] = [e["resource"] for e in call["context"]["appointments"]["entry"]]
    assert proposed["resourceType"] == "Appointment" and proposed["status"] == "booked"
    assert call["prefetch"]["patient"]["id"] == pid
    [plan] = [e["resource"] for e in call["prefetch"]["coverage"]["entry"]]
    assert plan["id"] == f"cov-{pid}"


def test_no_cards_books_with_no_issues(clinic: Clinic) -> None:
    _, r = book(clinic, "quiet")
    assert r.status_code == 200, r.text
    assert len(appointments(r)) == 1
    assert issues(r) == []


@pytest.mark.parametrize(("kind", "severity", "words"), [
    ("info", "information", "Copay is $20"),
    ("warn", "warning", "Prior authorization expires in 3 days: Renew it"),
])
def test_an_advisory_card_books_and_comes_back_as_an_issue(
        clinic: Clinic, kind: str, severity: str, words: str) -> None:
    _, r = book(clinic, kind)
    assert r.status_code == 200, r.text
    assert len(appointments(r)) == 1
    [issue] = issues(r)
    assert issue["severity"] == severity
    assert issue["diagnostics"].startswith("Acme Payer CRD: ")
    assert words in issue["diagnostics"]


def test_a_critical_card_refuses_the_booking(clinic: Clinic) -> None:
    pid, r = book(clinic, "crit")
    assert r.status_code == 422, r.text
    [issue] = issues(r)
    assert issue["code"] == "business-rule"
    assert "Service not covered under this plan" in issue["diagnostics"]
    found = web.get(f"{clinic.server.base}/Appointment", params={"patient": f"Patient/{pid}"},
                    headers=clinic.staff).json()
    assert found.get("entry", []) == []  # nothing was booked


def test_a_critical_card_needs_the_override_and_a_reason(clinic: Clinic) -> None:
    _, plain = book(clinic, "crit", override="payer error, confirmed by phone")
    assert plain.status_code == 422, plain.text  # the staff token has no override scope
    _, bare = book(clinic, "crit", who=clinic.desk)
    assert bare.status_code == 422, bare.text  # the override not asked for
    _, r = book(clinic, "crit", who=clinic.desk, override="payer error, confirmed by phone")
    assert r.status_code == 200, r.text
    [issue] = issues(r)
    assert issue["severity"] == "warning"
    assert issue["diagnostics"].startswith("overridden: ")


def test_a_late_service_is_given_up_on_and_the_booking_goes_ahead_with_a_warning(
        clinic: Clinic) -> None:
    _, r = book(clinic, "slow")
    assert r.status_code == 200, r.text
    assert len(appointments(r)) == 1
    [issue] = issues(r)
    assert issue["severity"] == "warning"
    assert f"did not answer within {BUDGET_MS} ms" in issue["diagnostics"]
