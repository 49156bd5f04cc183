"""An unexpected exception becomes a 500 OperationOutcome whose request id is also in the log.

The fault is real, not a test-only route: the store file is corrupted behind the server's back
(``resources.updated`` of one row overwritten with text that is no instant), so the read path's
``Last-Modified`` computation fails the way a damaged database or a bad migration would. This
needs direct access to the store, so the module runs its own SQLite server whatever the suite's
store kind; the 500 rendering it checks belongs to the REST layer, not to the adapter.
"""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.client import fhir_client
from tests.support.fhir_assets import SchemaValidator
from tests.support.server import ServerProcess, cleanup_dir, sqlite_url


@pytest.fixture(scope="module")
def sqlite_server() -> Iterator[ServerProcess]:
    directory = tempfile.mkdtemp(prefix="fhir-sched-500-")
    proc = ServerProcess(sqlite_url(directory)).start()
    yield proc
    proc.stop()
    cleanup_dir(directory)


@pytest.fixture
async def client(sqlite_server: ServerProcess, fhir_schema: SchemaValidator
                 ) -> AsyncIterator[httpx.AsyncClient]:
    async with fhir_client(sqlite_server.base, fhir_schema) as c:
        yield c


async def corrupted_patient(client: httpx.AsyncClient, server: ServerProcess) -> str:
    r = await client.post("/Patient", json={"resourceType": "Patient"})
    assert r.status_code == 201
    pid = r.json()["id"]
    path = server.store.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        changed = db.execute("UPDATE resources SET updated = 'not an instant' "
                             "WHERE type = 'Patient' AND id = ?", (pid,)).rowcount
    assert changed == 1
    return pid


async def test_internal_error_is_500_outcome_with_the_request_id_that_is_logged(
        client: httpx.AsyncClient, sqlite_server: ServerProcess) -> None:
    pid = await corrupted_patient(client, sqlite_server)
    rid = f"trace-{uuid.uuid4().hex}"
    r = await client.get(f"/Patient/{pid}", headers={"X-Request-Id": rid})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == rid
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert oo["issue"][0]["code"] == "exception"
    assert rid in oo["issue"][0]["diagnostics"]
    assert rid in sqlite_server.log_with(rid)


async def test_internal_error_without_client_request_id_logs_the_generated_one(
        client: httpx.AsyncClient, sqlite_server: ServerProcess) -> None:
    pid = await corrupted_patient(client, sqlite_server)
    r = await client.get(f"/Patient/{pid}")
    assert r.status_code == 500
    rid = r.headers["x-request-id"]
    assert len(rid) >= 16
    assert rid in r.json()["issue"][0]["diagnostics"]
    assert rid in sqlite_server.log_with(rid)


async def test_internal_error_is_handled_once_and_keeps_the_connection_usable(
        client: httpx.AsyncClient, sqlite_server: ServerProcess) -> None:
    """Re-raised into uvicorn, the error would be logged twice and the keep-alive connection
    closed under the client, failing its next request."""
    pid = await corrupted_patient(client, sqlite_server)
    rid = f"once-{uuid.uuid4().hex}"
    assert (await client.get(f"/Patient/{pid}", headers={"X-Request-Id": rid})).status_code == 500
    assert (await client.get("/metadata")).status_code == 200
    log = sqlite_server.log_with(rid)
    assert log.count(f"unexpected error in request {rid}") == 1
    assert "Exception in ASGI application" not in log


async def test_the_logged_error_names_its_type_and_frames_but_not_the_value_that_failed(
        client: httpx.AsyncClient, sqlite_server: ServerProcess) -> None:
    r = await client.post("/Patient", json={"resourceType": "Patient"})
    pid = r.json()["id"]
    secret = f"Jane Doe born 1980-01-01 {uuid.uuid4().hex[:8]}"
    with sqlite3.connect(sqlite_server.store.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE resources SET updated = ? WHERE type = 'Patient' AND id = ?",
                   (secret, pid))
    rid = f"trace-{uuid.uuid4().hex}"
    assert (await client.get(f"/Patient/{pid}", headers={"X-Request-Id": rid})).status_code \
        == 500
    line = next(line for line in sqlite_server.log_with(rid).splitlines() if rid in line)
    assert "Error" in line and ".py:" in line  # the exception type and where it was raised
    assert secret not in sqlite_server.log() and "Jane Doe" not in sqlite_server.log()
