"""Read, create, versioning headers and the CapabilityStatement over a real server."""

from __future__ import annotations

import httpx

PATIENT = {"resourceType": "Patient", "name": [{"family": "Nakamura", "given": ["Yui"]}],
           "gender": "female"}


async def test_create_returns_201_with_location_etag_and_body(fhir: httpx.AsyncClient) -> None:
    r = await fhir.post("/Patient", json=PATIENT)
    assert r.status_code == 201
    body = r.json()
    assert body["meta"]["versionId"] == "1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/Patient/{body['id']}/_history/1")
    assert "last-modified" in r.headers


async def test_read_serves_what_create_stored(fhir: httpx.AsyncClient) -> None:
    created = (await fhir.post("/Patient", json=PATIENT)).json()
    r = await fhir.get(f"/Patient/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created
    assert r.headers["content-type"].startswith("application/fhir+json")


async def test_metadata_is_an_r4_capability_statement(fhir: httpx.AsyncClient) -> None:
    r = await fhir.get("/metadata")
    cs = r.json()
    assert cs["fhirVersion"] == "4.0.1"
    types = {res["type"] for res in cs["rest"][0]["resource"]}
    assert {"Appointment", "Slot", "Schedule", "Coverage", "ServiceRequest"} <= types
