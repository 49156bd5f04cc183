"""Shutdown: SIGTERM ends the server, its background jobs finish their last round first, and
nothing they still held (queued audit entries) is lost."""

from __future__ import annotations

import asyncio
import signal

from fhir_sched.compose import stop_jobs
from tests.support import web
from tests.support.server import ServerProcess, cleanup_dir, opened_store, store_url


async def test_a_job_that_swallows_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    # What Python 3.11's wait_for does to a cancellation arriving as its inner call completes
    # (gh-86296): the job never sees it and goes back to sleep.
    rounds: list[str] = []

    async def job() -> None:
        while True:
            try:
                await asyncio.sleep(0.05)
                rounds.append("slept")
            except asyncio.CancelledError:
                if rounds.count("swallowed") == 2:
                    raise
                rounds.append("swallowed")

    task = asyncio.ensure_future(job())
    await asyncio.sleep(0.1)
    await stop_jobs([task], patience=10)
    assert task.cancelled()
    assert rounds.count("swallowed") == 2


async def test_a_job_that_ignores_shutdown_is_given_up_on_after_the_patience() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0.1)
    await stop_jobs([task], patience=0.6)
    assert not task.done()  # shutdown went on without it
    release.set()
    await task


def test_sigterm_right_after_reads_ends_the_server_and_keeps_their_audit_entries(
        store_kind: str, mongo_uri: str | None) -> None:
    url = store_url(store_kind, mongo_uri, "fhir_sched_shutdown")
    try:
        for round_ in range(2):  # the lost cancellation was a race: give it another chance
            proc = ServerProcess(url).start()
            created = web.post(f"{proc.base}/Patient", json={"resourceType": "Patient"})
            assert created.status_code == 201
            entity = f"Patient/{created.json()['id']}"
            for _ in range(5):
                assert web.get(f"{proc.base}/{entity}").status_code == 200
            proc.stop(signal.SIGTERM)
            assert proc.proc is not None
            # uvicorn exits by re-raising the SIGTERM it handled (-15); -9 would be the stop
            # helper's SIGKILL, sent when the server was still up 10 s later
            assert proc.proc.returncode == -signal.SIGTERM, (round_, proc.log()[-2000:])
            entries = asyncio.run(_audited(url, entity))
            assert entries.count("read") == 5, (round_, entries)
    finally:
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


async def _audited(url: str, entity: str) -> list[str]:
    async with opened_store(url) as store:
        return [e.subtype for e in await store.audit_list(entity=entity)]
