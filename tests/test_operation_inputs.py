"""Malformed operation input is a 400/422 naming the parameter, never a 500: the operation
modules turn Parameters into typed requests and check the shapes they read."""

from __future__ import annotations

import httpx
import pytest

from tests.support.scheduling import names_parameter, outcome, parameters

WINDOW = [{"name": "start", "valueDateTime": "2031-01-06T09:00:00Z"},
          {"name": "end", "valueDateTime": "2031-01-07T09:00:00Z"}]


async def test_find_timing_with_a_non_object_repeat_is_a_400(fhir: httpx.AsyncClient) -> None:
    body = {"resourceType": "Parameters",
            "parameter": [*WINDOW, {"name": "timing", "valueTiming": {"repeat": "x"}}]}
    r = await fhir.post("/Appointment/$find", json=body)
    assert r.status_code == 400, r.text
    assert names_parameter(r, "timing")


async def test_find_timing_with_an_unknown_day_is_a_400(fhir: httpx.AsyncClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        *WINDOW, {"name": "timing", "valueTiming": {"repeat": {"dayOfWeek": ["funday"]}}}]}
    r = await fhir.post("/Appointment/$find", json=body)
    assert r.status_code == 400, r.text
    assert names_parameter(r, "timing")


@pytest.mark.parametrize("operation", ["$hold", "$book"])
@pytest.mark.parametrize("element", ["participant", "slot"])
async def test_appointment_resource_with_a_string_element_is_a_422(
        fhir: httpx.AsyncClient, operation: str, element: str) -> None:
    appt = {"resourceType": "Appointment", "status": "proposed",
            "start": "2031-01-06T09:00:00Z", "end": "2031-01-06T09:30:00Z",
            "participant": [{"actor": {"reference": "Practitioner/x"}, "status": "needs-action"}],
            element: "Practitioner/x"}
    r = await fhir.post(f"/Appointment/{operation}",
                        json=parameters(("appointment-resource", appt)))
    assert r.status_code == 422, r.text
    assert names_parameter(r, "appointment-resource")
    assert f"Appointment.{element}" in outcome(r)["issue"][0]["expression"]


async def test_participant_actor_given_as_a_string_is_a_422(fhir: httpx.AsyncClient) -> None:
    appt = {"resourceType": "Appointment", "status": "proposed",
            "start": "2031-01-06T09:00:00Z", "end": "2031-01-06T09:30:00Z",
            "participant": [{"actor": "Practitioner/x", "status": "needs-action"}]}
    r = await fhir.post("/Appointment/$book", json=parameters(("appointment-resource", appt)))
    assert r.status_code == 422, r.text
    assert names_parameter(r, "appointment-resource")


async def test_patient_resource_of_another_type_is_a_400(fhir: httpx.AsyncClient) -> None:
    r = await fhir.post("/Appointment/$book", json=parameters(
        ("appointment-reference", {"reference": "Appointment/none"}),
        ("patient-resource", {"resourceType": "Practitioner"})))
    assert r.status_code == 400, r.text
    assert names_parameter(r, "patient-resource")
