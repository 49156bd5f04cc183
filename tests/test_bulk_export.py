"""Bulk Data ``$export`` as a SMART Backend Services client runs it (Bulk Data Access 2.0):
kick-off with ``Prefer: respond-async``, poll the status URL, download the NDJSON files the
manifest lists, delete the job; against a real server process on both adapters, auth on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from tests.support import web
from tests.support.server import ServerProcess, cleanup_dir, store_url
from tests.support.smart import BackendClient, get_token, register_backend

EXPORTER = BackendClient.new("bulk-exporter", "ES384")
OTHER = BackendClient.new("bulk-other", "ES384")
SCOPE = "system/*.cruds"
ASYNC = {"prefer": "respond-async", "accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def server(store_kind: str, mongo_uri: str | None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_bulk_export")
    keys = tmp_path_factory.mktemp("bulk-export")
    register_backend(url, EXPORTER, SCOPE, keys)
    register_backend(url, OTHER, SCOPE, keys)
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart",
                                   "FHIR_SCHED_EXPORT_DIR": str(keys / "exports")}).start()
    yield proc
    proc.stop()
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@pytest.fixture(scope="module")
def token(server: ServerProcess) -> str:
    return get_token(server.base, EXPORTER, SCOPE)


def auth(token: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **(extra or {})}


def create(server: ServerProcess, token: str, body: dict[str, Any]) -> dict[str, Any]:
    r = web.post(f"{server.base}/{body['resourceType']}", json=body,
                 headers=auth(token, {"content-type": "application/fhir+json"}))
    assert r.status_code == 201, r.text
    return dict(r.json())


def finished(server: ServerProcess, token: str, status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = web.get(status_url, headers=auth(token))
        if r.status_code == 200:
            return dict(r.json())
        assert r.status_code == 202, r.text
        assert r.headers["x-progress"]
        time.sleep(0.2)
    raise AssertionError("the export did not finish in 60 s")


def kick_off(server: ServerProcess, token: str, path: str = "$export", **params: str) -> str:
    r = web.get(f"{server.base}/{path}", params=params, headers=auth(token, ASYNC))
    assert r.status_code == 202, r.text
    return r.headers["content-location"]


def lines(server: ServerProcess, token: str, url: str) -> list[dict[str, Any]]:
    r = web.get(url, headers=auth(token))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+ndjson")
    return [orjson.loads(line) for line in r.content.splitlines() if line]


def test_a_system_export_lists_one_ndjson_file_per_type_with_every_resource(
        server: ServerProcess, token: str) -> None:
    made = {create(server, token, {"resourceType": "Practitioner",
                                   "name": [{"family": f"Bulk{n}"}]})["id"] for n in range(3)}
    status = kick_off(server, token, _type="Practitioner,Patient")
    manifest = finished(server, token, status)
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["transactionTime"] and "$export?_type=" in manifest["request"]
    files = {o["type"]: o for o in manifest["output"]}
    assert "Practitioner" in files
    got = lines(server, token, files["Practitioner"]["url"])
    assert made <= {p["id"] for p in got}
    assert files["Practitioner"]["count"] == len(got)
    assert all(p["resourceType"] == "Practitioner" for p in got)


def test_since_exports_only_what_changed_after_it(server: ServerProcess, token: str) -> None:
    create(server, token, {"resourceType": "Location", "name": "Before"})
    time.sleep(0.05)
    cut = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    time.sleep(0.05)
    after = create(server, token, {"resourceType": "Location", "name": "After"})
    manifest = finished(server, token, kick_off(server, token, _type="Location", _since=cut))
    got = lines(server, token, manifest["output"][0]["url"])
    assert [loc["id"] for loc in got] == [after["id"]]


def test_a_patient_export_holds_the_compartments_and_not_the_rest(
        server: ServerProcess, token: str) -> None:
    patient = create(server, token, {"resourceType": "Patient", "name": [{"family": "Bulk"}]})
    theirs = create(server, token, {
        "resourceType": "Appointment", "status": "proposed",
        "participant": [{"actor": {"reference": f"Patient/{patient['id']}"},
                         "status": "needs-action"}]})
    nobodys = create(server, token, {
        "resourceType": "Appointment", "status": "proposed",
        "participant": [{"actor": {"display": "a room"}, "status": "needs-action"}]})
    manifest = finished(server, token, kick_off(server, token, "Patient/$export",
                                                _type="Patient,Appointment"))
    files = {o["type"]: o["url"] for o in manifest["output"]}
    appointments = {a["id"] for a in lines(server, token, files["Appointment"])}
    assert theirs["id"] in appointments and nobodys["id"] not in appointments
    assert patient["id"] in {p["id"] for p in lines(server, token, files["Patient"])}


def test_a_kick_off_without_respond_async_is_refused(server: ServerProcess,
                                                    token: str) -> None:
    r = web.get(f"{server.base}/$export", headers=auth(token))
    assert r.status_code == 400 and "respond-async" in r.text


@pytest.mark.parametrize("params", [{"_typeFilter": "Patient?active=true"},
                                    {"_type": "Spaceship"}, {"_outputFormat": "text/csv"},
                                    {"_since": "yesterday"}])
def test_what_the_export_cannot_honour_is_a_400_naming_it(
        server: ServerProcess, token: str, params: dict[str, str]) -> None:
    r = web.get(f"{server.base}/$export", params=params, headers=auth(token, ASYNC))
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert next(iter(params)) in r.text


def test_a_patient_export_refuses_types_outside_the_compartment(
        server: ServerProcess, token: str) -> None:
    r = web.get(f"{server.base}/Patient/$export", params={"_type": "Practitioner"},
                headers=auth(token, ASYNC))
    assert r.status_code == 400 and "compartment" in r.text


def test_only_the_caller_who_kicked_it_off_sees_the_job_and_its_files(
        server: ServerProcess, token: str) -> None:
    create(server, token, {"resourceType": "Practitioner", "name": [{"family": "Mine"}]})
    status = kick_off(server, token, _type="Practitioner")
    manifest = finished(server, token, status)
    other = get_token(server.base, OTHER, SCOPE)
    assert web.get(status, headers=auth(other)).status_code == 404
    assert web.get(manifest["output"][0]["url"], headers=auth(other)).status_code == 404
    assert web.get(manifest["output"][0]["url"]).status_code == 401  # requiresAccessToken


def test_a_deleted_job_is_gone_with_its_files(server: ServerProcess, token: str) -> None:
    create(server, token, {"resourceType": "Practitioner", "name": [{"family": "Gone"}]})
    status = kick_off(server, token, _type="Practitioner")
    manifest = finished(server, token, status)
    assert web.delete(status, headers=auth(token)).status_code == 202
    assert web.get(status, headers=auth(token)).status_code == 404
    assert web.get(manifest["output"][0]["url"], headers=auth(token)).status_code == 404


def test_the_capability_statement_lists_both_export_operations(
        server: ServerProcess) -> None:
    rest = web.get(f"{server.base}/metadata").json()["rest"][0]
    system = {o["name"]: o["definition"] for o in rest.get("operation", [])}
    assert system["export"].startswith("http://hl7.org/fhir/uv/bulkdata/OperationDefinition/")
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert any(o["name"] == "export" for o in patient.get("operation", []))
