"""MongoDB faults: the database going away and coming back, and a deployment we must refuse.

These tests need a database they may stop, so each starts its own SecantusDB (even when
``MONGODB_URI`` points the rest of the suite at a real replica set) and a real server on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhir_sched.storage.base import Record, Unit
from fhir_sched.storage.errors import StoreUnavailable
from fhir_sched.storage.mongo import MongoStore
from tests.support.client import fhir_client
from tests.support.mongo_fixture import SecantusServer
from tests.support.server import ServerProcess, free_port
from tests.test_hl7v2_serve import RawPeer, msa, s12

PATIENT = {"resourceType": "Patient", "name": [{"family": "Okafor", "given": ["Ada"]}]}
# A dead database must turn into an answer this fast: server selection gives up after 3 s.
ANSWER_WITHIN = 8.0


@pytest.fixture
def database() -> Iterator[SecantusServer]:
    db = SecantusServer().start()
    yield db
    db.cleanup()


@pytest.fixture
def server_on(database: SecantusServer) -> Iterator[ServerProcess]:
    proc = ServerProcess(f"{database.uri}/faults").start()
    yield proc
    proc.stop()


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    assert r.headers["retry-after"].isdigit()
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"


async def test_outage_answers_503_and_the_same_process_recovers(
        database: SecantusServer, server_on: ServerProcess, fhir_schema: object) -> None:
    async with fhir_client(server_on.base, fhir_schema) as fhir:
        created = await fhir.post("/Patient", json=PATIENT)
        assert created.status_code == 201
        patient = created.json()
        pid = patient["id"]
        pid_before = server_on.proc.pid if server_on.proc else None

        database.stop()
        calls: list[tuple[str, str, Any]] = [
            ("GET", f"/Patient/{pid}", None),
            ("POST", "/Patient", PATIENT),
            ("PUT", f"/Patient/{pid}", {**patient, "gender": "female"}),
            ("GET", "/Patient?name=okafor&_total=accurate", None),
            ("GET", f"/Patient/{pid}/_history", None),
            ("DELETE", f"/Patient/{pid}", None),
            ("POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}}]}),
        ]
        first = await fhir.get(f"/Patient/{pid}")  # alone: the first to find it gone
        assert_unavailable(first)
        # every kind of interaction at once, plus a crowd of reads: none piles up into a hang
        calls += [("GET", f"/Patient/{pid}", None)] * 10
        started = time.monotonic()
        answers = await asyncio.gather(*(fhir.request(m, u, json=b) for m, u, b in calls))
        assert time.monotonic() - started < ANSWER_WITHIN
        for r in answers:
            assert_unavailable(r)

        database.start()
        deadline = time.monotonic() + 30
        while True:
            r = await fhir.get(f"/Patient/{pid}")
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            assert_unavailable(r)
            await asyncio.sleep(0.25)
        assert r.status_code == 200, r.text
        assert r.json() == patient  # nothing was half-written during the outage
        again = await fhir.post("/Patient", json=PATIENT)
        assert again.status_code == 201
        updated = await fhir.put(f"/Patient/{pid}", json={**patient, "gender": "female"},
                                 headers={"If-Match": 'W/"1"'})
        assert updated.status_code == 200
        assert updated.json()["meta"]["versionId"] == "2"
    assert server_on.proc is not None and server_on.proc.poll() is None
    assert server_on.proc.pid == pid_before  # recovered without a restart


async def test_database_stopping_mid_flight_never_gives_500_or_hangs(
        database: SecantusServer, server_on: ServerProcess, fhir_schema: object) -> None:
    async with fhir_client(server_on.base, fhir_schema) as fhir:
        created = (await fhir.post("/Patient", json=PATIENT)).json()

        async def client(n: int) -> list[int]:
            statuses = []
            for k in range(30):
                started = time.monotonic()
                if k % 2:
                    r = await fhir.post("/Patient", json=PATIENT)
                else:
                    r = await fhir.get(f"/Patient/{created['id']}")
                assert time.monotonic() - started < ANSWER_WITHIN + 5
                statuses.append(r.status_code)
                if r.status_code == 503:
                    assert_unavailable(r)
                    break
            return statuses

        async def stop_soon() -> None:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(database.stop)

        results = await asyncio.gather(*(client(n) for n in range(6)), stop_soon())
        seen = {s for statuses in results[:-1] if statuses for s in statuses}
        assert seen <= {200, 201, 503}, seen
        assert 503 in seen


async def test_the_change_feed_answers_unavailable_in_an_outage_and_resumes_where_it_was(
        database: SecantusServer) -> None:
    store = MongoStore(f"{database.uri}/feed_faults")
    await store.start()
    try:
        async def create(unit: Unit) -> Record:
            rec = Record("Patient", "f1", 1, "2026-03-01T00:00:00.000Z", False, b"{}", "POST")
            await unit.write(rec, [], 0)
            return rec

        written = await store.atomic(create)
        database.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.changes_since(0, 10)
        with pytest.raises(StoreUnavailable):
            await store.last_position()
        assert time.monotonic() - started < 2 * ANSWER_WITHIN
        database.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                feed = await store.changes_since(0, 10)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the feed did not come back"
                await asyncio.sleep(0.25)
        assert [(r.seq, r.id) for r in feed] == [(written.seq, "f1")]
        assert await store.last_position() == written.seq
    finally:
        await store.close()


def test_standalone_server_is_refused_with_a_fix(tmp_path: Any) -> None:
    standalone = SecantusServer(extra_args=("--standalone",)).start()
    try:
        proc = ServerProcess(f"{standalone.uri}/refused")
        with pytest.raises(RuntimeError, match="exited early") as exc:
            proc.start(timeout=20)
        message = str(exc.value)
        assert "standalone" in message
        assert "--replSet" in message and "rs.initiate()" in message
    finally:
        standalone.cleanup()


async def test_book_during_an_outage_is_a_503_in_the_iti_117_refusal_shape(
        database: SecantusServer, server_on: ServerProcess, fhir_schema: object) -> None:
    async with fhir_client(server_on.base, fhir_schema) as fhir:
        database.stop()
        r = await fhir.post("/Appointment/$book", json={"resourceType": "Parameters",
                                                        "parameter": [{
            "name": "appointment-reference", "valueReference": {"reference": "Appointment/x"}}]})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"].isdigit()
        body = r.json()
        assert body["resourceType"] == "Bundle"
        [only] = body["entry"]
        assert only["resource"]["resourceType"] == "OperationOutcome"
        assert only["resource"]["issue"][0]["code"] == "transient"


def test_an_siu_message_in_an_outage_is_refused_ar_207_and_its_resend_applied(
        database: SecantusServer) -> None:
    # AR, not AE: the message is fine and the sender should resend it (v2 table 0008, and the
    # house table in hl7v2-siu.md); the resend after the database is back is applied.
    mllp = free_port()
    proc = ServerProcess(f"{database.uri}/faults_mllp",
                         env={"FHIR_SCHED_MLLP_PORT": str(mllp)}).start()
    try:
        peer = RawPeer(mllp)
        peer.sock.settimeout(60)
        try:
            assert msa(peer.send(s12(1)))[1] == "AA"
            database.stop()
            refused = peer.send(s12(2))
            assert msa(refused)[1:3] == ["AR", "MSG2"]
            assert b"ERR|" in refused and b"|207" in refused
            database.start()
            deadline = time.monotonic() + 30
            while msa(ack := peer.send(s12(2)))[1] == "AR" and time.monotonic() < deadline:
                time.sleep(0.5)
            assert msa(ack)[1:3] == ["AA", "MSG2"]
        finally:
            peer.close()
        found = httpx.get(f"{proc.base}/Appointment", params={"_summary": "count"}).json()
        assert found["total"] == 2
    finally:
        proc.stop()
