"""Two FHIR client libraries nobody here wrote run the scheduling searches against the server.

``fhirpy`` (async) builds its own query strings (``date__ge``, ``include``, ``has``, ``limit``,
``sort``, ``count``) and follows our ``next`` links with ``fetch_all``; ``fhirclient`` (the SMART
Python client, synchronous, so run in a thread) builds ``$and``/``$or`` queries, pages with
``perform_resources_iter`` and parses every Bundle with its own 4.0.1 models. The world is the one
in ``tests/support/search_world.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from fhirclient import client as smart_client
from fhirclient.models.appointment import Appointment as SmartAppointment
from fhirclient.models.bundle import Bundle as SmartBundle
from fhirclient.models.fhirsearch import FHIRSearch
from fhirclient.models.schedule import Schedule as SmartSchedule
from fhirclient.models.slot import Slot as SmartSlot
from fhirpy import AsyncFHIRClient

from tests.support.client import fhir_client
from tests.support.search_world import World, build_world
from tests.support.server import ServerProcess


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(server: ServerProcess, fhir_schema: object) -> AsyncIterator[World]:
    async with fhir_client(server.base, fhir_schema) as client:
        yield await build_world(client)


@pytest.fixture
def fhirpy_client(server: ServerProcess) -> AsyncFHIRClient:
    return AsyncFHIRClient(server.base, extra_headers={"Accept": "application/fhir+json"})


@pytest.fixture
def smart(server: ServerProcess) -> smart_client.FHIRClient:
    return smart_client.FHIRClient(settings={"app_id": "fhir-sched-search-tests",
                                             "api_base": server.base})


# -- fhirpy ------------------------------------------------------------------------------------
async def test_fhirpy_iti118_patient_and_date_window(fhirpy_client: AsyncFHIRClient,
                                                     world: World) -> None:
    found = await fhirpy_client.resources("Appointment").search(
        patient=world.ref("P1"), date=["ge2037-03-14", "lt2037-03-16"]).fetch_all()
    assert world.names([a.id for a in found]) == {"A1", "A2"}


async def test_fhirpy_free_slots_paged_one_at_a_time(fhirpy_client: AsyncFHIRClient,
                                                     world: World) -> None:
    found = await fhirpy_client.resources("Slot").search(
        schedule=world.ref("S1"), start__ge="2037-03-14", status="free").limit(1).fetch_all()
    assert sorted(world.ordered([s.id for s in found])) == ["SL1", "SL2"]


async def test_fhirpy_sorted_pages_keep_the_order(fhirpy_client: AsyncFHIRClient,
                                                  world: World) -> None:
    found = await fhirpy_client.resources("Appointment").search(
        identifier=f"{world.sys}|").sort("-date").limit(2).fetch_all()
    # descending start; A4 has no start and sorts last
    assert world.ordered([a.id for a in found]) == ["A6", "A2", "A3", "A1", "A5", "A7", "A4"]


async def test_fhirpy_include_brings_the_patients(fhirpy_client: AsyncFHIRClient,
                                                  world: World) -> None:
    bundle = await fhirpy_client.resources("Appointment").search(
        practitioner=world.ref("DR2")).include("Appointment", "patient").fetch_raw()
    modes = {(e["search"]["mode"], e["resource"]["id"]) for e in bundle["entry"]}
    assert {(m, n) for m, i in modes for n in world.names([i])} == {
        ("match", "A2"), ("match", "A6"), ("include", "P1"), ("include", "P2")}


async def test_fhirpy_count_and_has(fhirpy_client: AsyncFHIRClient, world: World) -> None:
    total = await fhirpy_client.resources("Appointment").search(
        identifier=f"{world.sys}|", status="booked").count()
    assert total == 3
    patients = await fhirpy_client.resources("Patient").has(
        "Appointment", "patient", status="cancelled").fetch_all()
    assert world.names([p.id for p in patients]) == {"P2"}


# -- fhirclient (synchronous: in a thread) ----------------------------------------------------
async def test_fhirclient_iti118_with_practitioner(smart: smart_client.FHIRClient,
                                                   world: World) -> None:
    search = FHIRSearch(SmartAppointment, {
        "patient": world.ref("P1"), "practitioner": world.ref("DR2"),
        "date": {"$and": ["ge2037-03-14", "lt2037-03-16"]}})
    found = await asyncio.to_thread(lambda: list(search.perform_resources_iter(smart.server)))
    assert world.names([a.id for a in found]) == {"A2"}
    assert all(isinstance(a, SmartAppointment) for a in found)


async def test_fhirclient_slots_of_a_schedule_by_status(smart: smart_client.FHIRClient,
                                                        world: World) -> None:
    search = FHIRSearch(SmartSlot, {"schedule": world.ref("S1"),
                                    "status": {"$or": ["busy", "busy-tentative"]},
                                    "_count": "1"})
    found = await asyncio.to_thread(lambda: list(search.perform_resources_iter(smart.server)))
    assert world.names([s.id for s in found]) == {"SL3", "SL5"}


async def test_fhirclient_active_schedules_of_an_actor(smart: smart_client.FHIRClient,
                                                       world: World) -> None:
    search = SmartSchedule.where(struct={"actor": world.ref("L1"), "active": "true"})
    found = await asyncio.to_thread(lambda: list(search.perform_resources_iter(smart.server)))
    assert world.names([s.id for s in found]) == {"S1"}


async def test_fhirclient_include_parses_as_a_bundle(smart: smart_client.FHIRClient,
                                                     world: World) -> None:
    search = FHIRSearch(SmartAppointment, {"_id": world.id("A1")})
    search.include("slot")
    bundles = await asyncio.to_thread(lambda: list(search.perform_iter(smart.server)))
    assert len(bundles) == 1
    bundle = bundles[0]
    assert isinstance(bundle, SmartBundle)
    modes = {(e.search.mode, e.resource.resource_type, e.resource.id) for e in bundle.entry}
    assert modes == {("match", "Appointment", world.id("A1")),
                     ("include", "Slot", world.id("SL5"))}
