"""``batch`` and ``transaction`` Bundles posted to the base.

A batch is a list of independent requests: one failing entry reports its own status in place and
the others still happen. A transaction is all-or-nothing: when any entry fails, including the
last, nothing of it may be visible afterwards, neither by search nor in history. Transactions
also resolve ``urn:uuid:`` and conditional (``Patient?identifier=..``) references.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

SYSTEM = "urn:fhir-sched:test:transactions"


def new_value() -> str:
    return uuid.uuid4().hex


def patient(value: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}],
            "name": [{"family": "Haddad"}]}


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict[str, Any], full_url: str | None = None,
         if_none_exist: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"resource": resource,
                         "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        e["fullUrl"] = full_url
    if if_none_exist:
        e["request"]["ifNoneExist"] = if_none_exist
    return e


def appointment(actor: str) -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": "proposed",
            "participant": [{"actor": {"reference": actor}, "status": "needs-action"}]}


async def patients_with(fhir: httpx.AsyncClient, value: str) -> list[dict[str, Any]]:
    r = await fhir.get("/Patient", params={"identifier": f"{SYSTEM}|{value}"})
    return [e["resource"] for e in r.json().get("entry", [])]


def resource_id(location: str) -> str:
    """``.../Type/id/_history/n`` -> id."""
    return location.split("/_history/")[0].rsplit("/", 1)[1]


# -- batch ------------------------------------------------------------------------------------
async def test_batch_reports_a_failing_entry_in_place_and_runs_the_others(
        fhir: httpx.AsyncClient) -> None:
    value = new_value()
    r = await fhir.post("/", json=bundle(
        "batch",
        post(patient(value)),
        {"request": {"method": "GET", "url": f"Patient/{uuid.uuid4().hex}"}},
        post({"resourceType": "Patient", "gender": "robot"}),
        {"request": {"method": "GET", "url": f"Patient?identifier={SYSTEM}|{value}"}},
    ))
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses[0].startswith("201")
    assert statuses[1].startswith("404")
    assert statuses[2].startswith("422")
    assert statuses[3].startswith("200")
    assert body["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert len(await patients_with(fhir, value)) == 1


async def test_batch_entries_do_not_see_each_others_urn_references(
        fhir: httpx.AsyncClient) -> None:
    """urn:uuid resolution is a transaction feature; in a batch the reference stays unresolved
    and that entry alone fails."""
    full_url = urn()
    r = await fhir.post("/", json=bundle("batch", post(patient(new_value()), full_url),
                                         post(appointment(full_url))))
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0].startswith("201")
    assert not statuses[1].startswith("2")


# -- transaction ------------------------------------------------------------------------------
async def test_transaction_whose_last_entry_fails_leaves_no_trace(
        fhir: httpx.AsyncClient) -> None:
    value = new_value()
    marker = await fhir.post("/Patient", json=patient(new_value()))
    since = marker.json()["meta"]["lastUpdated"]
    await asyncio.sleep(0.01)
    p_url = urn()
    r = await fhir.post("/", json=bundle(
        "transaction",
        post(patient(value), p_url),
        post(appointment(p_url)),
        {"resource": {**patient(value), "id": "tx-upd-" + value[:8]},
         "request": {"method": "PUT", "url": f"Patient/tx-upd-{value[:8]}"}},
        post({"resourceType": "Slot", "status": "free",
              "schedule": {"reference": f"Schedule/{uuid.uuid4().hex}"},
              "start": "2030-01-01T09:00:00Z", "end": "2030-01-01T09:15:00Z"}),
    ))
    assert r.status_code == 422, r.text
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[3]" in oo["issue"][0]["expression"]
    # nothing of it is visible: not by search, not by read, not in history
    assert await patients_with(fhir, value) == []
    assert (await fhir.get(f"/Patient/tx-upd-{value[:8]}")).status_code == 404
    history = await fhir.get("/_history", params={"_since": since})
    for e in history.json().get("entry", []):
        identifiers = e.get("resource", {}).get("identifier", [])
        assert {"system": SYSTEM, "value": value} not in identifiers
        assert e.get("resource", {}).get("resourceType") != "Appointment" or all(
            p["actor"]["reference"] != p_url for p in e["resource"]["participant"])


async def test_transaction_response_has_status_location_and_etag_per_entry(
        fhir: httpx.AsyncClient) -> None:
    existing = (await fhir.post("/Patient", json=patient(new_value()))).json()
    r = await fhir.post("/", json=bundle(
        "transaction",
        post(patient(new_value())),
        {"resource": {**existing, "gender": "female"},
         "request": {"method": "PUT", "url": f"Patient/{existing['id']}"}},
        {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
    ))
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "transaction-response"
    created, updated, read = (e["response"] for e in body["entry"])
    assert created["status"].startswith("201")
    assert created["etag"] == 'W/"1"'
    assert "/Patient/" in created["location"] and created["location"].endswith("/_history/1")
    assert updated["status"].startswith("200")
    assert updated["etag"] == 'W/"2"'
    assert updated["location"].endswith(f"/Patient/{existing['id']}/_history/2")
    assert read["status"].startswith("200")
    assert body["entry"][2]["resource"]["gender"] == "female"  # GETs run after the writes


async def test_transaction_resolves_urn_uuid_references(fhir: httpx.AsyncClient) -> None:
    p_url = urn()
    r = await fhir.post("/", json=bundle("transaction", post(appointment(p_url)),
                                         post(patient(new_value()), p_url)))
    assert r.status_code == 200, r.text
    appt_loc, patient_loc = (e["response"]["location"] for e in r.json()["entry"])
    appt = (await fhir.get(f"/Appointment/{resource_id(appt_loc)}")).json()
    assert appt["participant"][0]["actor"]["reference"] == f"Patient/{resource_id(patient_loc)}"


async def test_transaction_resolves_conditional_references(fhir: httpx.AsyncClient) -> None:
    value = new_value()
    target = (await fhir.post("/Patient", json=patient(value))).json()
    r = await fhir.post("/", json=bundle(
        "transaction", post(appointment(f"Patient?identifier={SYSTEM}|{value}"))))
    assert r.status_code == 200, r.text
    appt_id = resource_id(r.json()["entry"][0]["response"]["location"])
    appt = (await fhir.get(f"/Appointment/{appt_id}")).json()
    assert appt["participant"][0]["actor"]["reference"] == f"Patient/{target['id']}"


async def test_transaction_conditional_reference_matching_nothing_fails_whole(
        fhir: httpx.AsyncClient) -> None:
    value = new_value()
    r = await fhir.post("/", json=bundle(
        "transaction", post(patient(value)),
        post(appointment(f"Patient?identifier={SYSTEM}|{new_value()}"))))
    assert r.status_code == 404
    assert await patients_with(fhir, value) == []


async def test_transaction_if_none_exist_reuses_the_match(fhir: httpx.AsyncClient) -> None:
    value = new_value()
    existing = (await fhir.post("/Patient", json=patient(value))).json()
    p_url = urn()
    r = await fhir.post("/", json=bundle(
        "transaction",
        post(patient(value), p_url, if_none_exist=f"identifier={SYSTEM}|{value}"),
        post(appointment(p_url))))
    assert r.status_code == 200, r.text
    first, second = (e["response"] for e in r.json()["entry"])
    assert first["status"].startswith("200")
    assert resource_id(first["location"]) == existing["id"]
    appt = (await fhir.get(f"/Appointment/{resource_id(second['location'])}")).json()
    assert appt["participant"][0]["actor"]["reference"] == f"Patient/{existing['id']}"
    assert len(await patients_with(fhir, value)) == 1


async def test_transaction_if_none_exist_without_match_creates(fhir: httpx.AsyncClient) -> None:
    value = new_value()
    r = await fhir.post("/", json=bundle(
        "transaction", post(patient(value), if_none_exist=f"identifier={SYSTEM}|{value}")))
    assert r.json()["entry"][0]["response"]["status"].startswith("201")
    assert len(await patients_with(fhir, value)) == 1


async def test_transaction_with_stale_if_match_rolls_back(fhir: httpx.AsyncClient) -> None:
    value = new_value()
    existing = (await fhir.post("/Patient", json=patient(new_value()))).json()
    await fhir.put(f"/Patient/{existing['id']}", json=existing)
    r = await fhir.post("/", json=bundle(
        "transaction", post(patient(value)),
        {"resource": existing, "request": {"method": "PUT", "url": f"Patient/{existing['id']}",
                                           "ifMatch": 'W/"1"'}}))
    assert r.status_code == 412
    assert await patients_with(fhir, value) == []


async def test_transaction_deletes_run_and_are_reported(fhir: httpx.AsyncClient) -> None:
    existing = (await fhir.post("/Patient", json=patient(new_value()))).json()
    r = await fhir.post("/", json=bundle(
        "transaction", {"request": {"method": "DELETE", "url": f"Patient/{existing['id']}"}}))
    assert r.json()["entry"][0]["response"]["status"].startswith("204")
    assert (await fhir.get(f"/Patient/{existing['id']}")).status_code == 410


async def test_transaction_with_prefer_minimal_omits_resources(fhir: httpx.AsyncClient) -> None:
    r = await fhir.post("/", json=bundle("transaction", post(patient(new_value()))),
                        headers={"Prefer": "return=minimal"})
    entry = r.json()["entry"][0]
    assert "resource" not in entry
    assert entry["response"]["location"]


async def test_transaction_with_duplicate_full_urls_is_400(fhir: httpx.AsyncClient) -> None:
    p_url = urn()
    value = new_value()
    r = await fhir.post("/", json=bundle("transaction", post(patient(value), p_url),
                                         post(patient(value), p_url)))
    assert r.status_code == 400
    assert await patients_with(fhir, value) == []


# SQLite refuses a 1500-value OR as too complex; MongoDB runs it (its limit is on joins)
@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True, scope="session")
async def test_a_batch_search_the_database_refuses_fails_only_its_entry(
        fhir: httpx.AsyncClient) -> None:
    too_wide = "Patient?name=" + ",".join(f"v{n}" for n in range(1500))
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": too_wide}},
        {"request": {"method": "GET", "url": "Patient?_count=1"}}]}
    r = await fhir.post("", json=bundle)
    assert r.status_code == 200, r.text
    first, second = r.json()["entry"]
    assert first["response"]["status"].startswith("400")
    assert first["response"]["outcome"]["issue"][0]["code"] == "too-costly"
    assert second["response"]["status"].startswith("200")
