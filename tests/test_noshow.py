"""Automatic no-shows (issue 14, item 7): with FHIR_SCHED_NOSHOW_GRACE_MINUTES set, a booking
nobody arrived for that long after its start becomes ``noshow``, and gives back what it held:
its time and its referral visit. Against a real server process on both adapters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support import web
from tests.support.scheduling import visit_type
from tests.support.server import ServerProcess, served

FHIR_JSON = {"content-type": "application/fhir+json"}
SYSTEM = "https://clinic.example/visit-types"


@pytest.fixture(scope="module")
def server(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    with served(store_kind, mongo_uri, "fhir_sched_noshow", {
            "FHIR_SCHED_AUTH": "none", "FHIR_SCHED_NOSHOW_GRACE_MINUTES": "1",
            "FHIR_SCHED_SWEEP_SECONDS": "1"}) as proc:
        vt = visit_type(SYSTEM, "referred", 30)
        service = {"resourceType": "HealthcareService", "id": "noshow-clinic", "extension": [
            {**vt, "extension": [*vt["extension"],
                                 {"url": "referralRequired", "valueBoolean": True}]}]}
        r = web.put(f"{proc.base}/HealthcareService/noshow-clinic", headers=FHIR_JSON,
                    json=service)
        assert r.status_code in (200, 201), r.text
        yield proc


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _booking(patient: str, start: datetime) -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": "booked", "start": _iso(start),
            "end": _iso(start + timedelta(minutes=30)),
            "appointmentType": {"coding": [{"system": SYSTEM, "code": "referred"}]},
            "participant": [
                {"actor": {"reference": "HealthcareService/noshow-clinic"}, "status": "accepted"},
                {"actor": {"reference": patient}, "status": "accepted"}]}


def _status(server: ServerProcess, appt_id: str) -> str:
    return str(web.get(f"{server.base}/Appointment/{appt_id}").json()["status"])


def test_a_booking_nobody_arrived_for_becomes_a_no_show_and_gives_its_visit_back(
        server: ServerProcess) -> None:
    patient = web.post(f"{server.base}/Patient", headers=FHIR_JSON,
                       json={"resourceType": "Patient"}).json()["id"]
    web.post(f"{server.base}/ServiceRequest", headers=FHIR_JSON, json={
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"reference": f"Patient/{patient}"}, "quantityQuantity": {"value": 1},
        "code": {"coding": [{"system": SYSTEM, "code": "referred"}]}})
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    missed = web.post(f"{server.base}/Appointment", headers=FHIR_JSON,
                      json=_booking(f"Patient/{patient}", now - timedelta(minutes=10)))
    assert missed.status_code == 201, missed.text
    later = _booking(f"Patient/{patient}", now + timedelta(days=2))
    taken = web.post(f"{server.base}/Appointment", headers=FHIR_JSON, json=later)
    assert taken.status_code == 422 and "referral-used" in taken.text  # the one visit is held
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _status(server, missed.json()["id"]) != "noshow":
        time.sleep(0.2)
    assert _status(server, missed.json()["id"]) == "noshow"
    again = web.post(f"{server.base}/Appointment", headers=FHIR_JSON, json=later)
    assert again.status_code == 201, again.text  # the visit came back


def test_a_booking_still_inside_its_grace_is_left_alone(server: ServerProcess) -> None:
    patient = web.post(f"{server.base}/Patient", headers=FHIR_JSON,
                       json={"resourceType": "Patient"}).json()["id"]
    web.post(f"{server.base}/ServiceRequest", headers=FHIR_JSON, json={
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "code": {"coding": [{"system": SYSTEM, "code": "referred"}]}})
    soon = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=2)
    made = web.post(f"{server.base}/Appointment", headers=FHIR_JSON,
                    json=_booking(f"Patient/{patient}", soon))
    assert made.status_code == 201, made.text
    time.sleep(3)  # three sweeps
    assert _status(server, made.json()["id"]) == "booked"
