"""The searches scheduling clients actually send, against hand-computed answers.

IHE ITI-118 (Find Existing Appointments) is ``Appointment?patient=&date=ge..&date=lt..`` narrowed
by practitioner, location, status or service-type; the Argonaut patient flow adds status and
practitioner; slot finders ask ``Slot?schedule=&start=ge..&status=free`` and schedule pickers
``Schedule?actor=&active=true``. The world is the one in ``tests/support/search_world.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.support.client import fhir_client
from tests.support.search_world import SNOMED, World, build_world, found
from tests.support.server import ServerProcess


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(server: ServerProcess, fhir_schema: object) -> AsyncIterator[World]:
    async with fhir_client(server.base, fhir_schema) as client:
        yield await build_world(client)


async def appointments(fhir: httpx.AsyncClient, w: World, **extra: str) -> set[str]:
    """ITI-118's core: P1's appointments on 2037-03-14 and 03-15 (UTC), plus ``extra``."""
    params = [("patient", w.ref("P1")), ("date", "ge2037-03-14"), ("date", "lt2037-03-16")]
    params += [(k.replace("_", "-"), v) for k, v in extra.items()]
    return await found(fhir, w, "Appointment", params)


async def test_iti118_patient_and_date_window(fhir: httpx.AsyncClient, world: World) -> None:
    # A4 (proposed, no start) has no date and cannot be in a window
    assert await appointments(fhir, world) == {"A1", "A2"}


async def test_iti118_window_edges_follow_the_offset(fhir: httpx.AsyncClient,
                                                     world: World) -> None:
    # A2 is 23:30 on the 14th in New York, 04:30Z on the 15th: the window is in UTC instants
    params = [("patient", world.ref("P1")), ("date", "ge2037-03-14T00:00:00-05:00"),
              ("date", "lt2037-03-15T00:00:00-05:00")]
    assert await found(fhir, world, "Appointment", params) == {"A1", "A2"}
    params = [("patient", world.ref("P1")), ("date", "ge2037-03-14T00:00:00Z"),
              ("date", "lt2037-03-15T00:00:00Z")]
    assert await found(fhir, world, "Appointment", params) == {"A1"}


async def test_iti118_with_practitioner(fhir: httpx.AsyncClient, world: World) -> None:
    assert await appointments(fhir, world, practitioner=world.ref("DR1")) == {"A1"}
    assert await appointments(fhir, world, practitioner=world.ref("DR2")) == {"A2"}


async def test_iti118_with_location(fhir: httpx.AsyncClient, world: World) -> None:
    assert await appointments(fhir, world, location=world.ref("L2")) == {"A2"}
    assert await appointments(fhir, world, location=world.id("L1")) == {"A1"}


async def test_iti118_with_status(fhir: httpx.AsyncClient, world: World) -> None:
    assert await appointments(fhir, world, status="booked") == {"A1", "A2"}
    assert await appointments(fhir, world, status="cancelled,proposed") == set()


async def test_iti118_with_service_type(fhir: httpx.AsyncClient, world: World) -> None:
    assert await appointments(fhir, world, service_type=f"{SNOMED}|394814009") == {"A2"}
    assert await appointments(fhir, world, service_type="11429006") == {"A1"}


async def test_argonaut_patient_status_date_practitioner(fhir: httpx.AsyncClient,
                                                         world: World) -> None:
    params = [("patient", world.ref("P1")), ("status", "booked"), ("date", "ge2037-03-14"),
              ("practitioner", world.ref("DR2"))]
    assert await found(fhir, world, "Appointment", params) == {"A2"}
    params[1] = ("status", "proposed")
    assert await found(fhir, world, "Appointment", params) == set()


async def test_slots_free_from_a_start(fhir: httpx.AsyncClient, world: World) -> None:
    # S1: SL1 free 14th 09:00Z, SL2 free 15th 04:30Z, SL3 busy, SL4 free 13th 23:59:59.999Z,
    # SL5 busy (taken by A1)
    params = [("schedule", world.ref("S1")), ("start", "ge2037-03-14"), ("status", "free")]
    assert await found(fhir, world, "Slot", params) == {"SL1", "SL2"}


async def test_slots_free_in_a_day(fhir: httpx.AsyncClient, world: World) -> None:
    params = [("schedule", world.ref("S1")), ("start", "ge2037-03-14"),
              ("start", "lt2037-03-15"), ("status", "free")]
    assert await found(fhir, world, "Slot", params) == {"SL1"}


async def test_slots_millisecond_boundary(fhir: httpx.AsyncClient, world: World) -> None:
    params = [("schedule", world.ref("S1")), ("start", "lt2037-03-14T00:00:00Z")]
    assert await found(fhir, world, "Slot", params) == {"SL4"}
    params = [("schedule", world.ref("S1")), ("start", "eq2037-03-13T23:59:59Z")]
    assert await found(fhir, world, "Slot", params) == {"SL4"}  # .999 lies inside that second


async def test_slots_any_status_of_a_schedule(fhir: httpx.AsyncClient, world: World) -> None:
    params = [("schedule", world.ref("S1")), ("status", "busy,busy-tentative")]
    assert await found(fhir, world, "Slot", params) == {"SL3", "SL5"}
    params = [("schedule", world.ref("S2")), ("start", "ge2037-03-14"), ("status", "free")]
    assert await found(fhir, world, "Slot", params) == {"SL6"}


@pytest.mark.parametrize(
    ("actor", "expected"),
    [("DR1", {"S1"}), ("L1", {"S1"}), ("DR2", set()), ("L2", set())],
    ids=["practitioner", "location", "inactive-schedule", "active-absent"],
)
async def test_schedule_of_an_actor_that_is_active(fhir: httpx.AsyncClient, world: World,
                                                   actor: str, expected: set[str]) -> None:
    params = [("actor", world.ref(actor)), ("active", "true")]
    assert await found(fhir, world, "Schedule", params) == expected


async def test_schedule_by_actor_without_active(fhir: httpx.AsyncClient, world: World) -> None:
    assert await found(fhir, world, "Schedule", [("actor", world.ref("DR2"))]) == {"S2"}
    assert await found(fhir, world, "Schedule", [("actor", world.ref("L2"))]) == {"S3"}


async def test_schedule_planning_horizon_as_a_date(fhir: httpx.AsyncClient,
                                                   world: World) -> None:
    params = [("identifier", f"{world.sys}|"), ("date", "ge2037-03-15")]
    assert await found(fhir, world, "Schedule", params) == {"S1"}  # ends after the 15th
