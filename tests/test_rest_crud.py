"""Read, vread, create, update, delete and the version headers, over a real server.

Each test makes its own resources (fresh identifiers) because the session server is shared and
never empty. What is checked is what a FHIR client relies on: status codes, ``ETag: W/"n"``,
``Last-Modified`` agreeing with ``meta.lastUpdated``, ``Location``/``Content-Location``, the
version history staying readable after a delete, and ``Prefer: return=``.
"""

from __future__ import annotations

import uuid
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from fhir_sched.timeutil import parse_instant

SYSTEM = "urn:fhir-sched:test:crud"


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM,
                                                       "value": uuid.uuid4().hex}],
            "name": [{"family": "Okafor", "given": ["Ada"]}], **extra}


async def create(fhir: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await fhir.post(f"/{body['resourceType']}", json=body)
    assert r.status_code == 201, r.text
    return r.json()


# -- create ----------------------------------------------------------------------------------
async def test_create_assigns_a_new_id_ignoring_the_client_id(fhir: httpx.AsyncClient) -> None:
    body = patient(id="client-chosen")
    created = await create(fhir, body)
    assert created["id"] != "client-chosen"
    assert created["meta"]["versionId"] == "1"


async def test_create_keeps_client_meta_tags_and_sets_version(fhir: httpx.AsyncClient) -> None:
    tag = {"system": "urn:test", "code": uuid.uuid4().hex}
    created = await create(fhir, patient(meta={"tag": [tag], "versionId": "99"}))
    assert created["meta"]["tag"] == [tag]
    assert created["meta"]["versionId"] == "1"


async def test_create_location_points_at_version_one(fhir: httpx.AsyncClient) -> None:
    r = await fhir.post("/Patient", json=patient())
    rid = r.json()["id"]
    base = str(fhir.base_url).rstrip("/")
    assert r.headers["location"] == f"{base}/Patient/{rid}/_history/1"
    assert r.headers["etag"] == 'W/"1"'


# -- read ------------------------------------------------------------------------------------
async def test_read_returns_etag_and_last_modified_matching_meta(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    r = await fhir.get(f"/Patient/{created['id']}")
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"1"'
    last_modified = parsedate_to_datetime(r.headers["last-modified"])
    updated = parse_instant(created["meta"]["lastUpdated"]).replace(microsecond=0)
    assert last_modified == updated


async def test_read_with_matching_if_none_match_is_304(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    r = await fhir.get(f"/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == 'W/"1"'


async def test_read_with_stale_if_none_match_is_200(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    await fhir.put(f"/Patient/{created['id']}", json={**created, "gender": "female"})
    r = await fhir.get(f"/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 200
    assert r.json()["gender"] == "female"


async def test_read_unknown_id_is_404_with_outcome(fhir: httpx.AsyncClient) -> None:
    r = await fhir.get(f"/Patient/{uuid.uuid4().hex}")
    assert r.status_code == 404
    assert r.json()["issue"][0]["code"] == "not-found"


async def test_read_accepts_format_json(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    r = await fhir.get(f"/Patient/{created['id']}", params={"_format": "json"})
    assert r.status_code == 200
    assert r.json()["id"] == created["id"]


# -- update ----------------------------------------------------------------------------------
async def test_update_increments_version_and_sets_content_location(
        fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    r = await fhir.put(f"/Patient/{created['id']}", json={**created, "gender": "male"})
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert r.headers["etag"] == 'W/"2"'
    assert r.headers["content-location"].endswith(f"/Patient/{created['id']}/_history/2")


async def test_update_as_create_with_client_id_is_201(fhir: httpx.AsyncClient) -> None:
    rid = f"client-{uuid.uuid4().hex[:12]}"
    r = await fhir.put(f"/Patient/{rid}", json=patient(id=rid))
    assert r.status_code == 201
    assert r.headers["location"].endswith(f"/Patient/{rid}/_history/1")
    assert (await fhir.get(f"/Patient/{rid}")).json()["id"] == rid


async def test_update_with_matching_if_match_succeeds(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    r = await fhir.put(f"/Patient/{created['id']}", json=created, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"2"'


async def test_update_with_stale_if_match_is_412_and_changes_nothing(
        fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    await fhir.put(f"/Patient/{created['id']}", json=created)
    r = await fhir.put(f"/Patient/{created['id']}", json={**created, "gender": "other"},
                       headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert r.json()["resourceType"] == "OperationOutcome"
    current = (await fhir.get(f"/Patient/{created['id']}")).json()
    assert current["meta"]["versionId"] == "2"
    assert "gender" not in current


async def test_if_match_on_a_resource_that_does_not_exist_is_412(fhir: httpx.AsyncClient) -> None:
    rid = uuid.uuid4().hex
    r = await fhir.put(f"/Patient/{rid}", json=patient(id=rid), headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert (await fhir.get(f"/Patient/{rid}")).status_code == 404


# -- vread -----------------------------------------------------------------------------------
async def test_vread_serves_each_version(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    await fhir.put(f"/Patient/{created['id']}", json={**created, "gender": "female"})
    v1 = await fhir.get(f"/Patient/{created['id']}/_history/1")
    v2 = await fhir.get(f"/Patient/{created['id']}/_history/2")
    assert v1.status_code == v2.status_code == 200
    assert v1.json() == created
    assert v2.json()["gender"] == "female"
    assert v1.headers["etag"] == 'W/"1"'
    assert v2.headers["etag"] == 'W/"2"'


async def test_vread_of_a_version_that_does_not_exist_is_404(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    assert (await fhir.get(f"/Patient/{created['id']}/_history/7")).status_code == 404
    assert (await fhir.get(f"/Patient/{created['id']}/_history/x")).status_code == 404


# -- delete ----------------------------------------------------------------------------------
async def test_delete_is_204_and_read_afterwards_is_410(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    r = await fhir.delete(f"/Patient/{created['id']}")
    assert r.status_code == 204
    assert r.headers["etag"] == 'W/"2"'
    gone = await fhir.get(f"/Patient/{created['id']}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"


async def test_vread_of_the_version_before_a_delete_is_still_200(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    await fhir.delete(f"/Patient/{created['id']}")
    r = await fhir.get(f"/Patient/{created['id']}/_history/1")
    assert r.status_code == 200
    assert r.json() == created
    assert (await fhir.get(f"/Patient/{created['id']}/_history/2")).status_code == 410


async def test_delete_of_a_deleted_resource_is_204_and_adds_no_version(
        fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    await fhir.delete(f"/Patient/{created['id']}")
    again = await fhir.delete(f"/Patient/{created['id']}")
    assert again.status_code == 204
    history = (await fhir.get(f"/Patient/{created['id']}/_history")).json()
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']


async def test_delete_with_stale_if_match_is_412(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    await fhir.put(f"/Patient/{created['id']}", json=created)
    r = await fhir.delete(f"/Patient/{created['id']}", headers={"If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert (await fhir.get(f"/Patient/{created['id']}")).status_code == 200


async def test_update_after_delete_recreates_with_next_version(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    await fhir.delete(f"/Patient/{created['id']}")
    r = await fhir.put(f"/Patient/{created['id']}", json=created)
    assert r.status_code == 201
    assert r.json()["meta"]["versionId"] == "3"
    assert (await fhir.get(f"/Patient/{created['id']}")).status_code == 200


# -- Prefer ----------------------------------------------------------------------------------
async def test_prefer_return_minimal_sends_headers_and_no_body(fhir: httpx.AsyncClient) -> None:
    r = await fhir.post("/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201
    assert r.content == b""
    assert "/_history/1" in r.headers["location"]
    assert r.headers["etag"] == 'W/"1"'


async def test_prefer_return_representation_sends_the_stored_resource(
        fhir: httpx.AsyncClient) -> None:
    r = await fhir.post("/Patient", json=patient(), headers={"Prefer": "return=representation"})
    body = r.json()
    assert body["resourceType"] == "Patient"
    assert body == (await fhir.get(f"/Patient/{body['id']}")).json()


async def test_prefer_return_operation_outcome_on_update(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir, patient())
    r = await fhir.put(f"/Patient/{created['id']}", json=created,
                       headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 200
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert oo["issue"][0]["severity"] == "information"
    assert r.headers["etag"] == 'W/"2"'
