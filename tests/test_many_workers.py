"""Two server processes on one database lose nothing, for every storage adapter.

Correctness is promised by the database, not by process memory, so the proof needs processes that
share nothing but the database: two real ``fhir-sched serve`` processes (an SQLite file, or one
MongoDB database), hammered concurrently through both.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from tests.support.client import fhir_client
from tests.support.server import ServerProcess, store_url

CONCURRENCY = 8
ROUNDS = 4


@pytest.fixture(scope="module")
def workers(store_kind: str, mongo_uri: str | None) -> Iterator[list[ServerProcess]]:
    db_name = f"many_{uuid.uuid4().hex[:10]}"
    url = store_url(store_kind, mongo_uri, db_name)
    first = ServerProcess(url).start()
    try:
        second = ServerProcess(url).start()
    except BaseException:
        first.stop()
        raise
    yield [first, second]
    for proc in (first, second):
        proc.stop()
    if url.startswith("sqlite"):
        shutil.rmtree(url.removeprefix("sqlite:///").rsplit("/", 1)[0], ignore_errors=True)
    else:
        assert mongo_uri is not None
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
        client.drop_database(db_name)
        client.close()


@asynccontextmanager
async def clients(workers: list[ServerProcess],
                  schema: object) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with fhir_client(workers[0].base, schema) as a, fhir_client(workers[1].base,
                                                                        schema) as b:
        yield [a, b]


def version_of(response: httpx.Response) -> int:
    return int(response.headers["etag"].removeprefix("W/").strip('"'))


async def test_if_match_updates_exactly_one_success_per_version(
        workers: list[ServerProcess], fhir_schema: object) -> None:
    async with clients(workers, fhir_schema) as both:
        created = await both[0].post("/Patient", json={"resourceType": "Patient",
                                                       "gender": "unknown"})
        assert created.status_code == 201
        pid = created.json()["id"]
        body = created.json()

        # everyone races for version 1 at once
        burst = await asyncio.gather(*(
            both[n % 2].put(f"/Patient/{pid}", json={**body, "gender": "other"},
                            headers={"If-Match": 'W/"1"'}) for n in range(2 * CONCURRENCY)))
        assert sorted(r.status_code for r in burst) == [200] + [412] * (2 * CONCURRENCY - 1)
        assert all(r.json()["resourceType"] == "OperationOutcome"
                   for r in burst if r.status_code == 412)

        async def worker(n: int) -> list[tuple[int, int, int | None]]:
            client = both[n % 2]
            seen = []
            for k in range(ROUNDS):
                current = await client.get(f"/Patient/{pid}")
                version = version_of(current)
                new = {**current.json(), "birthDate": f"19{n:02d}-01-{k + 1:02d}"}
                r = await client.put(f"/Patient/{pid}", json=new,
                                     headers={"If-Match": f'W/"{version}"'})
                assert r.status_code in (200, 412), r.text
                seen.append((version, r.status_code,
                             version_of(r) if r.status_code == 200 else None))
            return seen

        results = [x for xs in await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
                   for x in xs]
        wins = [(sent, got) for sent, status, got in results if status == 200]
        assert all(got == sent + 1 for sent, got in wins)
        # every version from 2 on was won by exactly one request
        assert sorted(sent for sent, _ in wins) == list(range(2, 2 + len(wins)))
        successes = len(wins) + 1  # plus the burst winner
        final = await both[1].get(f"/Patient/{pid}")
        assert version_of(final) == successes + 1
        history = await both[0].get(f"/Patient/{pid}/_history", params={"_count": "500"})
        versions = [int(e["resource"]["meta"]["versionId"]) for e in history.json()["entry"]]
        assert versions == list(range(successes + 1, 0, -1))


async def test_conditional_creates_make_exactly_one_resource(
        workers: list[ServerProcess], fhir_schema: object) -> None:
    value = uuid.uuid4().hex
    patient = {"resourceType": "Patient",
               "identifier": [{"system": "urn:many-workers", "value": value}]}
    async with clients(workers, fhir_schema) as both:
        responses = await asyncio.gather(*(
            both[n % 2].post("/Patient", json=patient,
                             headers={"If-None-Exist": f"identifier=urn:many-workers|{value}"})
            for n in range(3 * CONCURRENCY)))
        statuses = Counter(r.status_code for r in responses)
        assert set(statuses) <= {200, 201}, [r.text for r in responses]
        assert statuses[201] == 1
        assert len({r.json()["id"] for r in responses}) == 1
        for client in both:
            found = await client.get("/Patient", params={
                "identifier": f"urn:many-workers|{value}", "_summary": "count"})
            assert found.json()["total"] == 1


async def test_concurrent_transactions_lose_no_update(
        workers: list[ServerProcess], fhir_schema: object) -> None:
    run = uuid.uuid4().hex[:8]
    async with clients(workers, fhir_schema) as both:
        created = await both[0].post("/Patient", json={"resourceType": "Patient",
                                                       "multipleBirthInteger": 0})
        pid = created.json()["id"]

        async def worker(n: int) -> tuple[int, int]:
            client = both[n % 2]
            refused = 0
            for k in range(ROUNDS):
                for _attempt in range(500):
                    current = await client.get(f"/Patient/{pid}")
                    patient = current.json()
                    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                        {"resource": {**patient,
                                      "multipleBirthInteger": patient["multipleBirthInteger"]
                                      + 1},
                         "request": {"method": "PUT", "url": f"Patient/{pid}",
                                     "ifMatch": f'W/"{version_of(current)}"'}},
                        {"fullUrl": f"urn:uuid:{uuid.uuid4()}",
                         "resource": {"resourceType": "Practitioner", "identifier": [
                             {"system": f"urn:tx:{run}", "value": f"{n}-{k}"}]},
                         "request": {"method": "POST", "url": "Practitioner"}},
                    ]}
                    r = await client.post("", json=bundle)
                    if r.status_code == 200:
                        assert r.json()["type"] == "transaction-response"
                        break
                    assert r.status_code in (409, 412), r.text
                    refused += 1
                else:
                    raise AssertionError(f"worker {n} never got its transaction through")
            return ROUNDS, refused

        done = await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
        committed = sum(d for d, _ in done)
        final = await both[1].get(f"/Patient/{pid}")
        assert final.json()["multipleBirthInteger"] == committed
        assert version_of(final) == committed + 1
        made = await both[0].get("/Practitioner", params={
            "identifier": f"urn:tx:{run}|", "_count": "500"})
        values = sorted(e["resource"]["identifier"][0]["value"] for e in made.json()["entry"])
        assert values == sorted(f"{n}-{k}" for n in range(CONCURRENCY) for k in range(ROUNDS))
