"""An acknowledged write survives a crash: SIGKILL the server, restart it on the same store.

SIGKILL gives the process no chance to flush or close anything, so whatever the client saw
acknowledged must already have been committed to the store before the response was sent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from tests.support.client import fhir_client
from tests.support.fhir_assets import SchemaValidator
from tests.support.server import ServerProcess, cleanup_dir
from tests.support.server import store_url as fresh_store_url


@pytest.fixture
def store_url(store_kind: str, mongo_uri: str | None) -> Iterator[str]:
    url = fresh_store_url(store_kind, mongo_uri, f"fhir_sched_crash_{uuid.uuid4().hex[:8]}")
    yield url
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


async def test_acknowledged_writes_survive_sigkill_and_restart(
        store_url: str, fhir_schema: SchemaValidator) -> None:
    first = ServerProcess(store_url).start()
    try:
        async with fhir_client(first.base, fhir_schema) as c:
            created = await asyncio.gather(*[
                c.post("/Patient", json={"resourceType": "Patient",
                                         "name": [{"family": f"Crash{n}"}]})
                for n in range(20)])
            assert all(r.status_code == 201 for r in created)
            updated = await c.put(f"/Patient/{created[0].json()['id']}",
                                  json={**created[0].json(), "gender": "other"})
            assert updated.status_code == 200
            deleted = await c.delete(f"/Patient/{created[1].json()['id']}")
            assert deleted.status_code == 204
    finally:
        first.kill()
    assert first.proc is not None and first.proc.returncode == -9

    second = ServerProcess(store_url).start()
    try:
        async with fhir_client(second.base, fhir_schema) as c:
            for n, r in enumerate(created):
                pid = r.json()["id"]
                back = await c.get(f"/Patient/{pid}")
                if n == 1:
                    assert back.status_code == 410
                elif n == 0:
                    assert back.json() == updated.json()
                else:
                    assert back.json() == r.json()
            history = await c.get(f"/Patient/{created[0].json()['id']}/_history")
            assert [e["response"]["etag"] for e in history.json()["entry"]] == ['W/"2"',
                                                                              'W/"1"']
    finally:
        second.stop()
