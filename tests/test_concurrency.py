"""Concurrent updates with the same ``If-Match``: exactly one wins, the rest get 412.

The guarantee must come from the store's version check, not from an in-process lock, so it is
also tried across two server processes sharing one store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx

from tests.support.client import fhir_client
from tests.support.fhir_assets import SchemaValidator
from tests.support.server import ServerProcess

RACERS = 20


async def new_patient(fhir: httpx.AsyncClient) -> dict[str, Any]:
    r = await fhir.post("/Patient", json={
        "resourceType": "Patient",
        "identifier": [{"system": "urn:fhir-sched:test:race", "value": uuid.uuid4().hex}]})
    assert r.status_code == 201
    return r.json()


async def race(clients: list[httpx.AsyncClient], p: dict[str, Any]) -> Counter[int]:
    """RACERS updates, all conditional on version 1, released together."""
    start = asyncio.Event()

    async def one(n: int) -> int:
        body = {**p, "name": [{"family": f"Racer{n}"}]}
        await start.wait()
        r = await clients[n % len(clients)].put(f"/Patient/{p['id']}", json=body,
                                                headers={"If-Match": 'W/"1"'})
        return r.status_code

    tasks = [asyncio.create_task(one(n)) for n in range(RACERS)]
    await asyncio.sleep(0.05)
    start.set()
    return Counter(await asyncio.gather(*tasks))


async def check_outcome(fhir: httpx.AsyncClient, p: dict[str, Any], codes: Counter[int]) -> None:
    assert codes == Counter({200: 1, 412: RACERS - 1})
    final = await fhir.get(f"/Patient/{p['id']}")
    assert final.json()["meta"]["versionId"] == "2"
    history = (await fhir.get(f"/Patient/{p['id']}/_history")).json()
    assert len(history["entry"]) == 2


async def test_concurrent_if_match_updates_have_exactly_one_winner(
        fhir: httpx.AsyncClient) -> None:
    p = await new_patient(fhir)
    await check_outcome(fhir, p, await race([fhir], p))


async def test_if_match_race_across_two_server_processes_has_one_winner(
        fhir: httpx.AsyncClient, server: ServerProcess, fhir_schema: SchemaValidator) -> None:
    second = ServerProcess(server.store).start()
    try:
        async with fhir_client(second.base, fhir_schema) as other:
            p = await new_patient(fhir)
            codes = await race([fhir, other], p)
            await check_outcome(other, p, codes)
    finally:
        second.stop()
