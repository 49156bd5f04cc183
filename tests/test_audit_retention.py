"""Audit retention: ``fhir-sched audit purge`` and ``FHIR_SCHED_AUDIT_RETENTION_DAYS`` delete
old entries, oldest first in short batches, beside a running server, and the purge itself is
audited; a cut-off in the future is refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_sched.settings import Settings
from fhir_sched.storage import open_store
from fhir_sched.storage.base import AuditEntry
from tests.support import web
from tests.support.server import ServerProcess, cleanup_dir, store_url
from tests.support.smart import BackendClient, get_token, register_backend

AUDITOR = BackendClient.new("retention-auditor", "ES384")


def old_entry(n: int, recorded: str) -> AuditEntry:
    return AuditEntry(id=f"seeded-{n}", recorded=recorded, door="rest", action="R",
                      subtype="read", outcome="0", who="seeded", client_id=None,
                      request_id=f"seeded-{n}", entity=f"Patient/seed{n}", patient=None,
                      detail="seeded")


def seed(url: str, entries: list[AuditEntry]) -> None:
    async def run() -> None:
        store = open_store(Settings(store=url))
        await store.start()
        try:
            await store.audit_append(entries)
        finally:
            await store.close()

    asyncio.run(run())


@pytest.fixture
def url(store_kind: str, mongo_uri: str | None, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[str]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_retention")
    register_backend(url, AUDITOR, "system/AuditEvent.rs system/Patient.rs",
                     tmp_path_factory.mktemp("retention"))
    yield url
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def audit_events(server: ServerProcess, **params: str) -> list[dict[str, Any]]:
    token = get_token(server.base, AUDITOR, "system/AuditEvent.rs")
    bundle = web.get(f"{server.base}/AuditEvent", params={"_count": "1000", **params},
                     headers={"authorization": f"Bearer {token}"}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def seeded(server: ServerProcess) -> set[str]:
    return {e["id"] for e in audit_events(server) if e["id"].startswith("seeded-")}


def purge_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fhir_sched.cli", "audit", "purge",
                           "--store", url, *args], capture_output=True, text=True, timeout=60)


def test_store_purges_the_oldest_entries_first_in_batches_of_the_limit(url: str) -> None:
    seed(url, [old_entry(n, f"2020-01-{n + 1:02d}T00:00:00.000Z") for n in range(12)])

    async def run() -> list[tuple[int, list[str]]]:
        store = open_store(Settings(store=url))
        await store.start()
        try:
            rounds = []
            for _ in range(4):
                deleted = await store.audit_purge("2020-01-11T00:00:00.000Z", 4)
                left = [e.id for e in await store.audit_list(who="seeded", limit=100)]
                rounds.append((deleted, sorted(left, key=lambda i: int(i.split("-")[1]))))
            return rounds
        finally:
            await store.close()

    rounds = asyncio.run(run())
    assert [d for d, _ in rounds] == [4, 4, 2, 0]
    assert rounds[0][1] == [f"seeded-{n}" for n in range(4, 12)]
    assert rounds[-1][1] == ["seeded-10", "seeded-11"]  # recorded on the cut-off day: kept


def test_audit_purge_beside_a_running_server_deletes_old_entries_and_audits_itself(
        url: str) -> None:
    seed(url, [old_entry(1, "2020-03-01T10:00:00.000Z"),
               old_entry(2, "2020-06-01T10:00:00.000Z"),
               old_entry(3, "2021-06-01T10:00:00.000Z")])
    server = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart"}).start()
    try:
        assert seeded(server) == {"seeded-1", "seeded-2", "seeded-3"}
        done = purge_cli(url, "--before", "2021-01-01")
        assert done.returncode == 0, done.stderr
        assert "2 audit entries recorded before 2021-01-01T00:00:00.000Z deleted" in done.stdout
        assert seeded(server) == {"seeded-3"}
        purges = audit_events(server, subtype="audit/purge")
        assert len(purges) == 1
        assert "2 entries recorded before 2021-01-01" in str(purges[0])
        assert purges[0]["action"] == "D"
        assert any("system/audit-purge" in str(a["who"]) for a in purges[0]["agent"])
    finally:
        server.stop()


def test_a_purge_cut_off_in_the_future_is_refused_and_nothing_is_deleted(url: str) -> None:
    seed(url, [old_entry(1, "2020-03-01T10:00:00.000Z")])
    done = purge_cli(url, "--before", "2999-01-01")
    assert done.returncode == 2 and "future" in done.stderr
    done = purge_cli(url)
    assert done.returncode == 2 and "--older-than-days" in done.stderr
    done = purge_cli(url, "--before", "2020-13-45")
    assert done.returncode == 2 and "not a FHIR date" in done.stderr
    server = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart"}).start()
    try:
        assert seeded(server) == {"seeded-1"}
    finally:
        server.stop()


def test_the_retention_setting_deletes_entries_older_than_its_days_at_start(url: str) -> None:
    recent = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 5 * 86400))
    seed(url, [old_entry(1, "2020-03-01T10:00:00.000Z"), old_entry(2, recent)])
    server = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart",
                                     "FHIR_SCHED_AUDIT_RETENTION_DAYS": "30"}).start()
    try:
        deadline = time.monotonic() + 10
        while seeded(server) != {"seeded-2"} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert seeded(server) == {"seeded-2"}
        assert len(audit_events(server, subtype="audit/purge")) == 1
    finally:
        server.stop()


def test_without_the_retention_setting_old_entries_are_kept(url: str) -> None:
    seed(url, [old_entry(1, "2000-03-01T10:00:00.000Z")])
    server = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart"}).start()
    try:
        time.sleep(1.0)  # the retention job, were it on, runs at start
        assert seeded(server) == {"seeded-1"}
    finally:
        server.stop()
