"""Patient compartment searches, ``Patient/[id]/[type]``, against hand-computed answers.

Membership follows the R4 CompartmentDefinition for Patient (Appointment.actor, Schedule.actor,
Coverage policy-holder/subscriber/beneficiary/payor, ServiceRequest subject/performer, Patient
itself and its links); further parameters narrow it like any search. The world is the one in
``tests/support/search_world.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.support.client import fhir_client
from tests.support.search_world import World, build_world, search_all
from tests.support.server import ServerProcess


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(server: ServerProcess, fhir_schema: object) -> AsyncIterator[World]:
    async with fhir_client(server.base, fhir_schema) as client:
        yield await build_world(client)


COMPARTMENT = [
    ("P1", "Appointment", [], {"A1", "A2", "A4"}),
    ("P1", "Appointment", [("status", "booked")], {"A1", "A2"}),
    ("P1", "Appointment", [("date", "ge2037-03-15")], {"A2"}),
    ("P2", "Appointment", [], {"A3", "A6"}),
    ("P1", "Coverage", [], {"C1"}),
    ("P2", "Coverage", [], set()),
    ("P1", "ServiceRequest", [], {"SR1"}),
    ("P2", "ServiceRequest", [("status", "active")], {"SR3"}),
    ("P1", "Patient", [], {"P1"}),
    ("P1", "Schedule", [], set()),
]


@pytest.mark.parametrize(("patient", "type_", "params", "expected"), COMPARTMENT,
                         ids=[f"{p}/{t}?{'&'.join(f'{k}={v}' for k, v in q)}"
                              for p, t, q, _ in COMPARTMENT])
async def test_patient_compartment_membership(fhir: httpx.AsyncClient, world: World,
                                              patient: str, type_: str,
                                              params: list[tuple[str, str]],
                                              expected: set[str]) -> None:
    found = await search_all(fhir, f"Patient/{world.id(patient)}/{type_}", params)
    assert world.names([r["id"] for r in found]) == expected
    assert all(r["resourceType"] == type_ for r in found)


async def test_compartment_self_link_and_include(fhir: httpx.AsyncClient, world: World) -> None:
    path = f"Patient/{world.id('P1')}/Coverage"
    r = await fhir.get(f"/{path}", params=[("_include", "Coverage:payor")])
    assert r.status_code == 200
    body = r.json()
    self_link = next(lk["url"] for lk in body["link"] if lk["relation"] == "self")
    assert self_link.startswith(f"{world.base}/{path}?")
    modes = {(e["search"]["mode"], e["resource"]["id"]) for e in body["entry"]}
    assert modes == {("match", world.id("C1")), ("include", world.id("ORG"))}


async def test_compartment_paging_stays_in_the_compartment(fhir: httpx.AsyncClient,
                                                           world: World) -> None:
    found = await search_all(fhir, f"Patient/{world.id('P1')}/Appointment", [("_count", "1")])
    assert sorted(world.ordered([r["id"] for r in found])) == ["A1", "A2", "A4"]


async def test_type_outside_the_compartment_is_refused(fhir: httpx.AsyncClient,
                                                       world: World) -> None:
    r = await fhir.get(f"/Patient/{world.id('P1')}/Slot")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_unknown_patient_has_an_empty_compartment(fhir: httpx.AsyncClient) -> None:
    r = await fhir.get("/Patient/no-such-patient/Appointment")
    assert r.status_code == 200
    assert "entry" not in r.json()
