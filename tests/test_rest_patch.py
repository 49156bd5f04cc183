"""PATCH with JSON Patch (``application/json-patch+json``).

A patch is an update computed from the current version: the result must pass the same
validation as a PUT, may not change the resource's identity, and is all-or-nothing (a failing
``test`` op leaves the resource untouched).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

PATCH = {"content-type": "application/json-patch+json"}


async def new_patient(fhir: httpx.AsyncClient) -> dict[str, Any]:
    r = await fhir.post("/Patient", json={
        "resourceType": "Patient", "gender": "female",
        "identifier": [{"system": "urn:fhir-sched:test:patch", "value": uuid.uuid4().hex}],
        "name": [{"family": "Lindqvist", "given": ["Maja"]}]})
    assert r.status_code == 201
    return r.json()


async def patch(fhir: httpx.AsyncClient, rid: str, ops: list[dict[str, Any]],
                **headers: str) -> httpx.Response:
    return await fhir.patch(f"/Patient/{rid}", json=ops, headers={**PATCH, **headers})


async def test_patch_applies_ops_and_makes_a_new_version(fhir: httpx.AsyncClient) -> None:
    p = await new_patient(fhir)
    r = await patch(fhir, p["id"], [
        {"op": "replace", "path": "/gender", "value": "other"},
        {"op": "add", "path": "/name/0/given/-", "value": "Elin"},
    ])
    assert r.status_code == 200
    body = r.json()
    assert body["gender"] == "other"
    assert body["name"][0]["given"] == ["Maja", "Elin"]
    assert body["meta"]["versionId"] == "2"
    assert r.headers["etag"] == 'W/"2"'
    assert (await fhir.get(f"/Patient/{p['id']}")).json() == body


async def test_patch_that_changes_the_id_is_422(fhir: httpx.AsyncClient) -> None:
    p = await new_patient(fhir)
    r = await patch(fhir, p["id"], [{"op": "replace", "path": "/id", "value": "hijacked"}])
    assert r.status_code == 422
    assert r.json()["resourceType"] == "OperationOutcome"
    assert (await fhir.get(f"/Patient/{p['id']}")).json()["meta"]["versionId"] == "1"
    assert (await fhir.get("/Patient/hijacked")).status_code == 404


async def test_patch_that_changes_the_resource_type_is_422(fhir: httpx.AsyncClient) -> None:
    p = await new_patient(fhir)
    r = await patch(fhir, p["id"], [{"op": "replace", "path": "/resourceType",
                                     "value": "Practitioner"}])
    assert r.status_code == 422


async def test_patch_with_a_failing_test_op_is_422_and_changes_nothing(
        fhir: httpx.AsyncClient) -> None:
    p = await new_patient(fhir)
    r = await patch(fhir, p["id"], [
        {"op": "replace", "path": "/gender", "value": "male"},
        {"op": "test", "path": "/name/0/family", "value": "Somebody Else"},
    ])
    assert r.status_code == 422
    current = (await fhir.get(f"/Patient/{p['id']}")).json()
    assert current == p


async def test_patch_with_a_passing_test_op_applies(fhir: httpx.AsyncClient) -> None:
    p = await new_patient(fhir)
    r = await patch(fhir, p["id"], [
        {"op": "test", "path": "/gender", "value": "female"},
        {"op": "remove", "path": "/gender"},
    ])
    assert r.status_code == 200
    assert "gender" not in r.json()


async def test_patch_whose_result_is_invalid_is_422_naming_the_element(
        fhir: httpx.AsyncClient) -> None:
    p = await new_patient(fhir)
    r = await patch(fhir, p["id"], [{"op": "replace", "path": "/gender", "value": "robot"}])
    assert r.status_code == 422
    assert "Patient.gender" in r.json()["issue"][0]["expression"]


async def test_patch_with_stale_if_match_is_412(fhir: httpx.AsyncClient) -> None:
    p = await new_patient(fhir)
    await patch(fhir, p["id"], [{"op": "replace", "path": "/gender", "value": "other"}])
    r = await patch(fhir, p["id"], [{"op": "replace", "path": "/gender", "value": "male"}],
                    **{"If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert (await fhir.get(f"/Patient/{p['id']}")).json()["gender"] == "other"


async def test_patch_of_an_unknown_resource_is_404(fhir: httpx.AsyncClient) -> None:
    r = await patch(fhir, uuid.uuid4().hex, [{"op": "remove", "path": "/gender"}])
    assert r.status_code == 404


async def test_patch_with_plain_json_content_type_is_415(fhir: httpx.AsyncClient) -> None:
    p = await new_patient(fhir)
    r = await fhir.patch(f"/Patient/{p['id']}", json=[{"op": "remove", "path": "/gender"}],
                         headers={"content-type": "application/fhir+json"})
    assert r.status_code == 415
    assert "application/json-patch+json" in r.json()["issue"][0]["diagnostics"]
