"""Conditional create, update and delete: the outcome depends on how many resources match.

Each test mints its own identifier value so that "how many match" is under its control even on
the shared, never-empty session server.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

SYSTEM = "urn:fhir-sched:test:conditional"


def new_value() -> str:
    return uuid.uuid4().hex


def patient(value: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}],
            **extra}


def criteria(value: str) -> str:
    return f"identifier={SYSTEM}|{value}"


async def matching(fhir: httpx.AsyncClient, value: str) -> list[dict[str, Any]]:
    r = await fhir.get("/Patient", params={"identifier": f"{SYSTEM}|{value}"})
    assert r.status_code == 200
    return [e["resource"] for e in r.json().get("entry", [])]


# -- conditional create ----------------------------------------------------------------------
async def test_conditional_create_with_no_match_creates(fhir: httpx.AsyncClient) -> None:
    value = new_value()
    r = await fhir.post("/Patient", json=patient(value),
                        headers={"If-None-Exist": criteria(value)})
    assert r.status_code == 201
    assert [p["id"] for p in await matching(fhir, value)] == [r.json()["id"]]


async def test_conditional_create_with_one_match_returns_it_without_a_new_version(
        fhir: httpx.AsyncClient) -> None:
    value = new_value()
    first = (await fhir.post("/Patient", json=patient(value))).json()
    r = await fhir.post("/Patient", json=patient(value, gender="male"),
                        headers={"If-None-Exist": criteria(value)})
    assert r.status_code == 200
    assert r.json() == first
    assert r.headers["etag"] == 'W/"1"'
    assert len(await matching(fhir, value)) == 1
    history = (await fhir.get(f"/Patient/{first['id']}/_history")).json()
    assert len(history["entry"]) == 1


async def test_conditional_create_with_two_matches_is_412(fhir: httpx.AsyncClient) -> None:
    value = new_value()
    for _ in range(2):
        await fhir.post("/Patient", json=patient(value))
    r = await fhir.post("/Patient", json=patient(value),
                        headers={"If-None-Exist": criteria(value)})
    assert r.status_code == 412
    assert r.json()["resourceType"] == "OperationOutcome"
    assert len(await matching(fhir, value)) == 2


async def test_conditional_create_accepts_a_leading_question_mark(
        fhir: httpx.AsyncClient) -> None:
    value = new_value()
    await fhir.post("/Patient", json=patient(value))
    r = await fhir.post("/Patient", json=patient(value),
                        headers={"If-None-Exist": "?" + criteria(value)})
    assert r.status_code == 200


# -- conditional update ----------------------------------------------------------------------
async def test_conditional_update_with_no_match_creates(fhir: httpx.AsyncClient) -> None:
    value = new_value()
    r = await fhir.put(f"/Patient?{criteria(value)}", json=patient(value))
    assert r.status_code == 201
    assert r.json()["meta"]["versionId"] == "1"
    assert len(await matching(fhir, value)) == 1


async def test_conditional_update_with_one_match_updates_it(fhir: httpx.AsyncClient) -> None:
    value = new_value()
    first = (await fhir.post("/Patient", json=patient(value))).json()
    r = await fhir.put(f"/Patient?{criteria(value)}", json=patient(value, gender="female"))
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == first["id"]
    assert body["meta"]["versionId"] == "2"
    assert body["gender"] == "female"


async def test_conditional_update_with_two_matches_is_412(fhir: httpx.AsyncClient) -> None:
    value = new_value()
    for _ in range(2):
        await fhir.post("/Patient", json=patient(value))
    r = await fhir.put(f"/Patient?{criteria(value)}", json=patient(value, gender="other"))
    assert r.status_code == 412
    assert all("gender" not in p for p in await matching(fhir, value))


async def test_conditional_update_with_a_different_body_id_is_400(
        fhir: httpx.AsyncClient) -> None:
    value = new_value()
    await fhir.post("/Patient", json=patient(value))
    r = await fhir.put(f"/Patient?{criteria(value)}", json=patient(value, id="someone-else"))
    assert r.status_code == 400


# -- conditional delete ----------------------------------------------------------------------
async def test_conditional_delete_with_one_match_deletes_it(fhir: httpx.AsyncClient) -> None:
    value = new_value()
    first = (await fhir.post("/Patient", json=patient(value))).json()
    r = await fhir.delete(f"/Patient?{criteria(value)}")
    assert r.status_code == 204
    assert (await fhir.get(f"/Patient/{first['id']}")).status_code == 410
    assert await matching(fhir, value) == []


async def test_conditional_delete_with_no_match_is_204(fhir: httpx.AsyncClient) -> None:
    r = await fhir.delete(f"/Patient?{criteria(new_value())}")
    assert r.status_code == 204


async def test_conditional_delete_with_two_matches_is_412_and_deletes_nothing(
        fhir: httpx.AsyncClient) -> None:
    value = new_value()
    for _ in range(2):
        await fhir.post("/Patient", json=patient(value))
    r = await fhir.delete(f"/Patient?{criteria(value)}")
    assert r.status_code == 412
    assert len(await matching(fhir, value)) == 2
