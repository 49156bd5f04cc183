"""Backup, export and import as an operator runs them: the real ``fhir-sched`` commands against
real stores (both adapters), some beside a running server.

Export writes one NDJSON file per type; import loads NDJSON or Bundles through the write
pipeline and is idempotent (a rerun creates and versions nothing); an import killed with
``kill -9`` half-way and run again leaves each resource exactly once; a backup taken while a
server writes is a consistent, checked SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from fhir_sched.query import Query
from tests.support import web
from tests.support.server import ServerProcess, cleanup_dir, opened_store, store_url

FHIR_JSON = {"content-type": "application/fhir+json"}


def cli(*args: str, store: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fhir_sched.cli", *args, "--store", store],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "FHIR_SCHED_LOG_LEVEL": "warning"})


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="fhir-sched-bulk-"))
    yield d
    cleanup_dir(str(d))


@pytest.fixture
def make_store(store_kind: str, mongo_uri: str | None) -> Iterator[Callable[[str], str]]:
    made: list[str] = []

    def make(name: str) -> str:
        url = store_url(store_kind, mongo_uri, name)
        made.append(url)
        return url

    yield make
    for url in made:
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


async def current(url: str, type_: str) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    async with opened_store(url) as store:
        query = Query(type_, count=1000)
        while True:
            page = await store.search(query)
            for id_, body in page.rows:
                assert id_ not in out, f"{type_}/{id_} listed twice"
                out[id_] = orjson.loads(body)
            if page.next_after is None:
                return out
            query = Query(type_, count=1000, after=page.next_after)


def slots_ndjson(path: Path, n: int, with_ids: bool) -> None:
    lines = []
    for i in range(n):
        slot: dict[str, object] = {
            "resourceType": "Slot", "schedule": {"display": "imported"}, "status": "free",
            "start": f"2032-01-01T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
            "end": f"2032-01-01T{i // 60 % 24:02d}:{i % 60:02d}:30Z", "comment": f"slot {i}"}
        if with_ids:
            slot["id"] = f"imp-{i}"
        lines.append(json.dumps(slot))
    path.write_text("\n".join(lines) + "\n")


async def test_export_then_import_into_an_empty_store_gives_the_same_resources(
        make_store: Callable[[str], str], workdir: Path) -> None:
    source, target = make_store("bulk_src"), make_store("bulk_dst")
    assert cli("demo", store=source).returncode == 0
    exported = cli("export", "--to", str(workdir / "out"), store=source)
    assert exported.returncode == 0, exported.stderr
    files = sorted(p.name for p in (workdir / "out").iterdir())
    assert "Slot.ndjson" in files and "Practitioner.ndjson" in files
    assert not [f for f in files if f.startswith(".")]  # no partial file left
    imported = cli("import", str(workdir / "out"), store=target)
    assert imported.returncode == 0, imported.stderr
    assert " 0 refused" in imported.stdout
    for type_ in ("Slot", "Schedule", "PractitionerRole"):
        before, after = await current(source, type_), await current(target, type_)
        assert before.keys() == after.keys()
        for id_, body in before.items():
            assert {k: v for k, v in body.items() if k != "meta"} == {
                k: v for k, v in after[id_].items() if k != "meta"}


async def test_a_second_import_of_the_same_files_changes_nothing(
        make_store: Callable[[str], str], workdir: Path) -> None:
    url = make_store("bulk_again")
    slots_ndjson(workdir / "Slot.ndjson", 50, with_ids=False)
    first = cli("import", str(workdir / "Slot.ndjson"), store=url)
    assert "50 created" in first.stdout, first.stdout + first.stderr
    versions = {i: b["meta"]["versionId"] for i, b in (await current(url, "Slot")).items()}
    second = cli("import", str(workdir / "Slot.ndjson"), store=url)
    assert "0 created, 0 updated, 50 unchanged" in second.stdout, second.stdout
    again = {i: b["meta"]["versionId"] for i, b in (await current(url, "Slot")).items()}
    assert again == versions and len(again) == 50


async def test_an_import_killed_half_way_and_run_again_leaves_each_resource_once(
        make_store: Callable[[str], str], workdir: Path) -> None:
    url = make_store("bulk_kill")
    # SecantusDB takes a few dozen sequential writes a second: a smaller file there
    n = 10_000 if url.startswith("sqlite") else 300
    slots_ndjson(workdir / "Slot.ndjson", n, with_ids=False)
    count = Query("Slot", total=True, count_only=True)
    async with opened_store(url) as store:
        proc = subprocess.Popen([sys.executable, "-m", "fhir_sched.cli", "import",
                                 str(workdir / "Slot.ndjson"), "--store", url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if ((await store.search(count)).total or 0) >= n // 20:
                break
            await asyncio.sleep(0.01 if url.startswith("sqlite") else 0.25)
        killed_before_end = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        partial = (await store.search(count)).total or 0
    assert killed_before_end and 0 < partial < n, (
        f"{partial} of {n} written when killed: the kill must land half-way")
    rerun = cli("import", str(workdir / "Slot.ndjson"), store=url)
    assert rerun.returncode == 0, rerun.stderr
    slots = await current(url, "Slot")
    assert len(slots) == n
    comments = sorted(str(s["comment"]) for s in slots.values())
    assert comments == sorted(f"slot {i}" for i in range(n))  # each exactly once


async def test_an_import_reports_each_bad_line_with_its_file_and_line(
        make_store: Callable[[str], str], workdir: Path) -> None:
    url = make_store("bulk_bad")
    (workdir / "Patient.ndjson").write_text(
        '{"resourceType":"Patient","id":"p1","name":[{"family":"Ok"}]}\n'
        '{"resourceType":"Patient","id":"p2","birthDate":"not-a-date"}\n'
        '{not json\n'
        '{"resourceType":"Spaceship","id":"x"}\n')
    result = cli("import", str(workdir / "Patient.ndjson"), store=url)
    assert result.returncode == 1
    assert "1 created" in result.stdout and "3 refused" in result.stdout
    assert "Patient.ndjson:2:" in result.stderr and "birthDate" in result.stderr
    assert "Patient.ndjson:3: not JSON" in result.stderr
    assert "Patient.ndjson:4: Spaceship is not a type" in result.stderr
    assert set(await current(url, "Patient")) == {"p1"}


async def test_a_transaction_bundle_imports_by_the_ids_its_put_urls_name(
        make_store: Callable[[str], str], workdir: Path) -> None:
    url = make_store("bulk_bundle")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Practitioner", "name": [{"family": "Bundled"}]},
         "request": {"method": "PUT", "url": "Practitioner/from-url"}},
        {"resource": {"resourceType": "Schedule", "id": "s1",
                      "actor": [{"reference": "Practitioner/from-url"}]},
         "request": {"method": "PUT", "url": "Schedule/s1"}}]}
    (workdir / "bundle.json").write_text(json.dumps(bundle))
    result = cli("import", str(workdir / "bundle.json"), store=url)
    assert result.returncode == 0, result.stderr
    assert set(await current(url, "Practitioner")) == {"from-url"}
    assert set(await current(url, "Schedule")) == {"s1"}


def test_a_backup_taken_while_the_server_writes_is_consistent_and_checked(
        workdir: Path) -> None:
    store = f"sqlite:///{workdir}/live.db"
    server = ServerProcess(store, env={"FHIR_SCHED_AUTH": "none"}).start()
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        while not stop.is_set():
            r = web.post(f"{server.base}/Patient", headers=FHIR_JSON,
                         json={"resourceType": "Patient", "name": [{"family": "Live"}]})
            if r.status_code == 201:
                written.append(r.json()["id"])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(1.0)
        before = len(written)
        result = cli("backup", "--to", str(workdir / "copy.db"), store=store)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(30)
        server.stop()
    assert result.returncode == 0, result.stderr
    assert "integrity ok" in result.stdout
    with sqlite3.connect(workdir / "copy.db") as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {r[0] for r in copy.execute("SELECT id FROM resources WHERE type = 'Patient'")}
    assert len(ids) >= before > 0  # everything acknowledged before the backup began is in it
    assert set(written[:before]) <= ids
    refused = cli("backup", "--to", str(workdir / "copy.db"), store=store)
    assert refused.returncode == 1 and "exists" in refused.stderr


def test_backup_of_a_mongodb_store_says_how_without_the_credentials() -> None:
    result = cli("backup", "--to", "x", store="mongodb://admin:hunter2@db.example:27017/fs")
    assert result.returncode == 2
    assert "mongodump" in result.stderr and "--oplog" in result.stderr
    assert "hunter2" not in result.stderr and "db.example:27017/fs" in result.stderr


def test_a_json_file_too_big_to_read_whole_is_refused_with_the_way_out(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fhir_sched.service import bulk

    monkeypatch.setattr(bulk, "MAX_JSON_FILE_BYTES", 100)
    (workdir / "big.json").write_text(json.dumps({"resourceType": "Bundle", "type": "batch",
                                                  "entry": [{"resource": {}}] * 50}))
    refused = list(bulk.read_items([workdir / "big.json"]))
    assert refused == [("big.json", refused[0][1])] and "NDJSON" in refused[0][1]
