"""The change feed end to end: writes through real server processes, read back through the port.

The port's own guarantees are in ``test_store_contract``; here the writers are ``fhir-sched serve``
processes sharing one database, so what is proved is that every door's write reaches the feed
with the origin the service gave it, and that a reader resuming from its last position sees the
writes of several processes exactly once, in commit order.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest

from fhir_sched.storage.base import DocumentStore, Record
from tests.support.client import fhir_client
from tests.support.feed import follow
from tests.support.server import ServerProcess, opened_store, servers, store_url

PATIENT = {"resourceType": "Patient", "name": [{"family": "Feed", "given": ["Ada"]}]}


@pytest.fixture(scope="module")
def two_servers(store_kind: str, mongo_uri: str | None) -> Iterator[list[ServerProcess]]:
    with servers(store_url(store_kind, mongo_uri, "feed"), n=2) as procs:
        yield procs


async def read_all(store: DocumentStore, position: int, batch: int = 5) -> list[Record]:
    seen: list[Record] = []
    while changes := await store.changes_since(position, batch):
        seen += changes
        position = changes[-1].seq
    return seen


async def test_rest_writes_reach_the_feed_with_their_door_and_request_id(
        two_servers: list[ServerProcess], fhir_schema: object) -> None:
    tag = uuid.uuid4().hex[:8]
    async with opened_store(two_servers[0].store) as store, \
            fhir_client(two_servers[0].base, fhir_schema) as fhir:
        start = await store.last_position()
        created = await fhir.post("/Patient", json=PATIENT, headers={"X-Request-Id": f"{tag}-c"})
        assert created.status_code == 201
        pid = created.json()["id"]
        updated = await fhir.put(f"/Patient/{pid}", json={**created.json(), "gender": "female"},
                                 headers={"X-Request-Id": f"{tag}-u"})
        assert updated.status_code == 200
        deleted = await fhir.delete(f"/Patient/{pid}", headers={"X-Request-Id": f"{tag}-d"})
        assert deleted.status_code in (200, 204)
        feed = [r for r in await read_all(store, start) if r.id == pid]
    assert [(r.method, r.version, r.origin.door, r.origin.request_id) for r in feed] == [
        ("POST", 1, "rest", f"{tag}-c"), ("PUT", 2, "rest", f"{tag}-u"),
        ("DELETE", 3, "rest", f"{tag}-d")]
    assert all(r.origin.subject for r in feed)
    assert feed[0].body is not None and orjson.loads(feed[0].body)["id"] == pid


async def test_a_resuming_reader_sees_the_writes_of_two_servers_once_in_commit_order(
        two_servers: list[ServerProcess], fhir_schema: object) -> None:
    tag = uuid.uuid4().hex[:8]
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    async with opened_store(two_servers[0].store) as store, \
            fhir_client(two_servers[0].base, fhir_schema, limits=limits) as a, \
            fhir_client(two_servers[1].base, fhir_schema, limits=limits) as b:
        start = await store.last_position()
        done = asyncio.Event()

        async def client(n: int) -> dict[str, str]:
            sent = {}
            for k in range(25):
                rid = f"{tag}-{n}-{k}"
                r = await (a, b)[n % 2].post("/Patient", json=PATIENT,
                                             headers={"X-Request-Id": rid})
                assert r.status_code == 201, r.text
                sent[rid] = r.json()["id"]
            return sent

        reading = asyncio.create_task(follow(store, start, done, 5, 0.005))
        sent = await asyncio.gather(*(client(n) for n in range(4)))
        done.set()
        seen = await reading
    ours = [r for r in seen if (r.origin.request_id or "").startswith(tag)]
    assert all(x.seq < y.seq for x, y in itertools.pairwise(seen))
    expected = {rid: pid for s in sent for rid, pid in s.items()}
    assert len(ours) == len(expected) == 100
    assert {r.origin.request_id: r.id for r in ours} == expected
