"""Availability templates and visit types are refused on write when they make no sense, with a
422 OperationOutcome naming the element, on every door (plain PUT, POST, transaction entry).
Before, such a Schedule was stored with 201 and $find silently offered nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.scheduling import (
    Json,
    hours,
    need,
    schedule,
    template,
    uid,
    visit_type,
)


def sub(tmpl: Json, name: str) -> Json:
    return next(e for e in tmpl["extension"] if e["url"] == name)


def a_schedule(*templates: Json) -> Json:
    key = uid()
    return schedule(f"sc-{key}", f"Practitioner/pr-{key}", *templates)


async def refused_with(client: httpx.AsyncClient, body: Json, element: str) -> Json:
    """PUT ``body`` (its actor need not exist: the content rule comes first) and check the
    422 names ``element``; the OperationOutcome is returned for further checks."""
    r = await client.put(f"/{body['resourceType']}/{body['id']}", json=body)
    assert r.status_code == 422, r.text
    issues = r.json()["issue"]
    assert any(element in (i.get("expression") or []) for i in issues), issues
    return r.json()


def weekday_template(**kwargs: Any) -> Json:
    return template("America/Chicago", hours(("mon", "tue"), "09:00:00", "12:00:00"), **kwargs)


async def test_unknown_time_zone_is_refused(fhir: httpx.AsyncClient) -> None:
    t = weekday_template()
    sub(t, "timezone")["valueCode"] = "Mars/Olympus"
    oo = await refused_with(fhir, a_schedule(t), "Schedule.extension[0].extension[0].valueCode")
    assert "Mars/Olympus" in oo["issue"][0]["diagnostics"]


async def test_negative_slot_length_is_refused(fhir: httpx.AsyncClient) -> None:
    t = weekday_template()
    sub(t, "slotMinutes")["valuePositiveInt"] = -15
    body = a_schedule(t)
    index = t["extension"].index(sub(t, "slotMinutes"))
    await refused_with(fhir, body, f"Schedule.extension[0].extension[{index}].valuePositiveInt")


async def test_capacity_below_one_is_refused(fhir: httpx.AsyncClient) -> None:
    t = weekday_template(capacity=1)
    sub(t, "capacity")["valuePositiveInt"] = 0
    index = t["extension"].index(sub(t, "capacity"))
    await refused_with(fhir, a_schedule(t),
                       f"Schedule.extension[0].extension[{index}].valuePositiveInt")


async def test_unknown_day_code_is_refused(fhir: httpx.AsyncClient) -> None:
    t = template("UTC", hours(("mon", "someday"), "09:00:00", "12:00:00"))
    await refused_with(fhir, a_schedule(t),
                       "Schedule.extension[0].extension[1].extension[1].valueCode")


async def test_exception_ending_before_it_starts_is_refused(fhir: httpx.AsyncClient) -> None:
    t = weekday_template()
    t["extension"].append({"url": "notAvailable", "extension": [{
        "url": "during", "valuePeriod": {"start": "2031-05-02T00:00:00Z",
                                         "end": "2031-05-01T00:00:00Z"}}]})
    n = len(t["extension"]) - 1
    await refused_with(fhir, a_schedule(t),
                       f"Schedule.extension[0].extension[{n}].extension[0].valuePeriod")


async def test_planning_horizon_ending_before_it_starts_is_refused(
        fhir: httpx.AsyncClient) -> None:
    body = a_schedule(weekday_template())
    body["planningHorizon"] = {"start": "2031-06-01", "end": "2031-05-01"}
    await refused_with(fhir, body, "Schedule.planningHorizon")


async def test_overlapping_hours_in_one_template_are_refused(fhir: httpx.AsyncClient) -> None:
    t = template("UTC", hours(("mon",), "09:00:00", "12:00:00"),
                 hours(("mon", "wed"), "11:00:00", "13:00:00"))
    oo = await refused_with(fhir, a_schedule(t), "Schedule.extension[0]")
    assert "overlap" in oo["issue"][0]["diagnostics"]


async def test_templates_disagreeing_on_capacity_are_refused(fhir: httpx.AsyncClient) -> None:
    first = template("UTC", hours(("mon",), "09:00:00", "12:00:00"), capacity=2)
    second = template("UTC", hours(("tue",), "09:00:00", "12:00:00"), capacity=3)
    oo = await refused_with(fhir, a_schedule(first, second), "Schedule.extension[1]")
    assert "capacity" in oo["issue"][0]["diagnostics"]


async def test_templates_with_overlapping_hours_are_refused(fhir: httpx.AsyncClient) -> None:
    first = template("UTC", hours(("mon",), "09:00:00", "12:00:00"))
    second = template("UTC", hours(("mon",), "11:30:00", "14:00:00"))
    await refused_with(fhir, a_schedule(first, second), "Schedule.extension[1]")


async def test_a_sound_template_is_stored(fhir: httpx.AsyncClient) -> None:
    first = template("UTC", hours(("mon",), "09:00:00", "12:00:00"), capacity=2)
    second = template("UTC", hours(("mon",), "13:00:00", "17:00:00"), capacity=2)
    body = a_schedule(first, second)
    await fhir.put(f"/Practitioner/{body['actor'][0]['reference'].split('/')[1]}",
                   json={"resourceType": "Practitioner",
                         "id": body["actor"][0]["reference"].split("/")[1]})
    r = await fhir.put(f"/Schedule/{body['id']}", json=body)
    assert r.status_code == 201, r.text


async def test_invalid_template_is_refused_on_create(fhir: httpx.AsyncClient) -> None:
    t = weekday_template()
    sub(t, "timezone")["valueCode"] = "Mars/Olympus"
    body = a_schedule(t)
    del body["id"]
    r = await fhir.post("/Schedule", json=body)
    assert r.status_code == 422
    assert "Schedule.extension[0].extension[0].valueCode" in r.json()["issue"][0]["expression"]


async def test_invalid_template_is_refused_in_a_transaction(fhir: httpx.AsyncClient) -> None:
    key = uid()
    t = weekday_template()
    sub(t, "timezone")["valueCode"] = "Mars/Olympus"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}",
         "request": {"method": "POST", "url": "Practitioner"},
         "resource": {"resourceType": "Practitioner", "name": [{"family": key}]}},
        {"request": {"method": "POST", "url": "Schedule"},
         "resource": {"resourceType": "Schedule", "actor": [{"reference": "Practitioner/x"}],
                      "extension": [t]}}]}
    r = await fhir.post("", json=bundle)
    assert r.status_code == 422, r.text
    expression = r.json()["issue"][0]["expression"]
    assert expression[0] == "Bundle.entry[1]"
    assert "Schedule.extension[0].extension[0].valueCode" in expression
    r = await fhir.get("/Practitioner", params={"family": key})
    assert r.json()["total"] == 0


def a_service(*extensions: Json) -> Json:
    return {"resourceType": "HealthcareService", "id": f"hs-{uid()}", "extension": list(
        extensions)}


async def test_visit_type_without_length_is_refused(fhir: httpx.AsyncClient) -> None:
    vt = visit_type("http://example.org/vt", f"v-{uid()}", 30, need("Practitioner"))
    vt["extension"][1]["valuePositiveInt"] = 0
    await refused_with(fhir, a_service(vt),
                       "HealthcareService.extension[0].extension[1].valuePositiveInt")


async def test_visit_type_needing_an_unknown_actor_type_is_refused(
        fhir: httpx.AsyncClient) -> None:
    vt = visit_type("http://example.org/vt", f"v-{uid()}", 30, need("Spaceship"))
    await refused_with(fhir, a_service(vt),
                       "HealthcareService.extension[0].extension[2].extension[0].valueCode")


async def test_a_sound_visit_type_is_stored(fhir: httpx.AsyncClient) -> None:
    vt = visit_type("http://example.org/vt", f"v-{uid()}", 30, need("Practitioner"),
                    need("Location"))
    body = a_service(vt)
    r = await fhir.put(f"/HealthcareService/{body['id']}", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["extension"] == body["extension"]


async def test_a_schedule_with_too_many_actors_is_refused(fhir: httpx.AsyncClient) -> None:
    body = a_schedule(weekday_template())
    body["actor"] = [{"reference": f"Location/l{n}"} for n in range(51)]
    oo = await refused_with(fhir, body, "Schedule.actor")
    assert "at most 50" in oo["issue"][0]["diagnostics"]
