"""How long a booking may last: FHIR_SCHED_MAX_APPOINTMENT_HOURS (24) on every booking path,
or, when the appointment names a visit type its HealthcareService offers with a
``maxMinutesDuration``, that visit type's own longest, larger or smaller; against a real
server process on both adapters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import web
from tests.support.scheduling import visit_type
from tests.support.server import ServerProcess, served

FHIR_JSON = {"content-type": "application/fhir+json"}
SYSTEM = "https://clinic.example/visit-types"


@pytest.fixture(scope="module")
def server(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    with served(store_kind, mongo_uri, "fhir_sched_length", {"FHIR_SCHED_AUTH": "none"}
                ) as proc:
        service = {"resourceType": "HealthcareService", "id": "sleep-lab", "extension": [
            _typed(visit_type(SYSTEM, "sleep-study", 600), 2880),  # up to 48 hours
            _typed(visit_type(SYSTEM, "quick-check", 15), 30)]}
        put = web.put(f"{proc.base}/HealthcareService/sleep-lab", headers=FHIR_JSON,
                      json=service)
        assert put.status_code in (200, 201), put.text
        yield proc


def _typed(ext: dict[str, Any], longest: int) -> dict[str, Any]:
    return {**ext, "extension": [*ext["extension"],
                                 {"url": "maxMinutesDuration", "valuePositiveInt": longest}]}


def book(server: ServerProcess, start: str, end: str, code: str | None = None) -> Any:
    appt: dict[str, Any] = {
        "resourceType": "Appointment", "status": "booked", "start": start, "end": end,
        "participant": [{"actor": {"reference": "HealthcareService/sleep-lab"},
                         "status": "accepted"}]}
    if code:
        appt["appointmentType"] = {"coding": [{"system": SYSTEM, "code": code}]}
    return web.post(f"{server.base}/Appointment", headers=FHIR_JSON, json=appt)


def test_a_visit_type_may_allow_longer_than_the_server_cap(server: ServerProcess) -> None:
    r = book(server, "2031-05-01T20:00:00Z", "2031-05-03T08:00:00Z", "sleep-study")  # 36 h
    assert r.status_code == 201, r.text


def test_without_the_visit_type_the_server_cap_applies(server: ServerProcess) -> None:
    r = book(server, "2031-06-01T20:00:00Z", "2031-06-03T08:00:00Z")
    assert r.status_code == 422
    assert "FHIR_SCHED_MAX_APPOINTMENT_HOURS" in r.text


def test_a_visit_type_may_allow_less_than_the_server_cap(server: ServerProcess) -> None:
    r = book(server, "2031-07-01T09:00:00Z", "2031-07-01T09:45:00Z", "quick-check")
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert "quick-check" in issue["diagnostics"] and issue["expression"] == ["Appointment.end"]
    ok = book(server, "2031-07-02T09:00:00Z", "2031-07-02T09:30:00Z", "quick-check")
    assert ok.status_code == 201, ok.text


def test_a_longest_below_the_visit_length_is_refused_on_the_service(
        server: ServerProcess) -> None:
    bad = {"resourceType": "HealthcareService", "id": "bad-lab", "extension": [
        _typed(visit_type(SYSTEM, "long", 60), 30)]}
    r = web.put(f"{server.base}/HealthcareService/bad-lab", headers=FHIR_JSON, json=bad)
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["HealthcareService.extension[0].extension[2].valuePositiveInt"]
    assert "minutesDuration (60)" in issue["diagnostics"]
