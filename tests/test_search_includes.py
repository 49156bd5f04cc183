"""``_include``, ``_revinclude`` (with ``*`` and ``:iterate``), chaining and ``_has``, by id.

Included resources must come back with ``search.mode = include``, matches with ``match``, each
resource once. The world is the one in ``tests/support/search_world.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.support.client import fhir_client
from tests.support.search_world import World, build_world, found
from tests.support.server import ServerProcess


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(server: ServerProcess, fhir_schema: object) -> AsyncIterator[World]:
    async with fhir_client(server.base, fhir_schema) as client:
        yield await build_world(client)


async def bundle(fhir: httpx.AsyncClient, type_: str, params: list[tuple[str, str]],
                 ) -> dict[str, Any]:
    r = await fhir.get(f"/{type_}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def by_mode(w: World, b: dict[str, Any]) -> tuple[set[str], set[str]]:
    entries = b.get("entry", [])
    keys = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in entries]
    assert len(keys) == len(set(keys)), "a resource appears twice in the Bundle"
    for e in entries:
        assert e["fullUrl"].endswith(f"/{e['resource']['resourceType']}/{e['resource']['id']}")
    match = [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"]
    include = [e["resource"]["id"] for e in entries if e["search"]["mode"] == "include"]
    return w.names(match), w.names(include)


async def test_include_patient_of_appointments(fhir: httpx.AsyncClient, world: World) -> None:
    b = await bundle(fhir, "Appointment", [("identifier", f"{world.sys}|A1,{world.sys}|A3"),
                                           ("_include", "Appointment:patient")])
    assert by_mode(world, b) == ({"A1", "A3"}, {"P1", "P2"})


async def test_include_with_target_type(fhir: httpx.AsyncClient, world: World) -> None:
    b = await bundle(fhir, "Appointment", [("_id", world.id("A2")),
                                           ("_include", "Appointment:actor:Location")])
    assert by_mode(world, b) == ({"A2"}, {"L2"})


async def test_include_star_follows_every_reference(fhir: httpx.AsyncClient,
                                                    world: World) -> None:
    b = await bundle(fhir, "Appointment", [("_id", world.id("A1")), ("_include", "*")])
    assert by_mode(world, b) == ({"A1"}, {"P1", "DR1", "L1", "SL5", "SR1"})


async def test_include_iterate_reaches_one_level_further(fhir: httpx.AsyncClient,
                                                         world: World) -> None:
    b = await bundle(fhir, "Appointment", [("_id", world.id("A1")),
                                           ("_include", "Appointment:slot"),
                                           ("_include:iterate", "Slot:schedule")])
    assert by_mode(world, b) == ({"A1"}, {"SL5", "S1"})


async def test_include_from_another_type_needs_iterate(fhir: httpx.AsyncClient,
                                                       world: World) -> None:
    # Without :iterate, Slot:schedule could never apply to an Appointment search: refused
    # (naming the parameter) rather than silently doing nothing.
    r = await fhir.get("/Appointment", params=[("_id", world.id("A1")),
                                               ("_include", "Appointment:slot"),
                                               ("_include", "Slot:schedule")])
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["_include"]


async def test_include_of_a_shared_target_appears_once(fhir: httpx.AsyncClient,
                                                       world: World) -> None:
    b = await bundle(fhir, "Appointment", [("patient", world.ref("P1")),
                                           ("_include", "Appointment:patient"),
                                           ("_include", "Appointment:actor:Patient")])
    assert by_mode(world, b) == ({"A1", "A2", "A4"}, {"P1"})


async def test_revinclude_appointments_of_a_patient(fhir: httpx.AsyncClient,
                                                    world: World) -> None:
    b = await bundle(fhir, "Patient", [("identifier", f"{world.sys}|A1"),
                                       ("_revinclude", "Appointment:patient")])
    assert by_mode(world, b) == ({"P1"}, {"A1", "A2", "A4"})


async def test_revinclude_star_brings_every_referrer(fhir: httpx.AsyncClient,
                                                     world: World) -> None:
    b = await bundle(fhir, "Patient", [("identifier", f"{world.sys}|A1"), ("_revinclude", "*")])
    # appointments (patient/actor), the ServiceRequest (subject), the Coverage (beneficiary)
    assert by_mode(world, b) == ({"P1"}, {"A1", "A2", "A4", "SR1", "C1"})


async def test_revinclude_iterate_from_schedule_to_slots_to_appointments(
        fhir: httpx.AsyncClient, world: World) -> None:
    b = await bundle(fhir, "Schedule", [("_id", world.id("S1")),
                                        ("_revinclude", "Slot:schedule"),
                                        ("_revinclude:iterate", "Appointment:slot")])
    assert by_mode(world, b) == ({"S1"}, {"SL1", "SL2", "SL3", "SL4", "SL5", "A1"})


async def test_include_and_revinclude_together(fhir: httpx.AsyncClient, world: World) -> None:
    b = await bundle(fhir, "Slot", [("_id", world.id("SL5")), ("_include", "Slot:schedule"),
                                    ("_revinclude", "Appointment:slot")])
    assert by_mode(world, b) == ({"SL5"}, {"S1", "A1"})


CHAINS = [
    ("Appointment", "actor:Practitioner.identifier", "{sys}|D1", {"A1", "A3", "A4", "A5", "A7"}),
    ("Appointment", "practitioner.name", "nguyen", {"A2", "A6"}),
    ("Appointment", "patient.family", "muller", {"A1", "A2", "A3", "A4", "A6"}),
    ("Appointment", "patient.birthdate", "lt1980-05-03", {"A3", "A6", "A7"}),
    ("Appointment", "location.name:exact", "Room 2 {tag}", {"A2", "A5"}),
    ("Slot", "schedule.actor", "{DR1}", {"SL1", "SL2", "SL3", "SL4", "SL5"}),
    ("Slot", "schedule.actor:Practitioner", "{DR2_id}", {"SL6"}),
    ("Slot", "schedule.active", "false", {"SL6"}),
    ("Slot", "schedule.identifier", "{sys}|S2", {"SL6"}),
    ("Schedule", "actor:Practitioner.active", "true", {"S1"}),
]


@pytest.mark.parametrize(("type_", "name", "value", "expected"), CHAINS,
                         ids=[f"{t}?{n}" for t, n, _, _ in CHAINS])
async def test_chained_parameter_one_level(fhir: httpx.AsyncClient, world: World, type_: str,
                                           name: str, value: str, expected: set[str]) -> None:
    values = {"sys": world.sys, "tag": world.tag, "DR1": world.ref("DR1"),
              "DR2_id": world.id("DR2")}
    params = [(name, value.format(**values))]
    if type_ == "Schedule":
        params.append(("identifier", f"{world.sys}|"))
    assert await found(fhir, world, type_, params) == expected


HAS = [
    ("Patient", "_has:Appointment:patient:status", "cancelled", {"P2"}),
    ("Patient", "_has:Appointment:patient:date", "2037-03-14", {"P1"}),
    ("Patient", "_has:ServiceRequest:subject:status", "active", {"P1", "P2"}),
    ("Practitioner", "_has:Schedule:actor:active", "true", {"DR1"}),
    ("Practitioner", "_has:Appointment:practitioner:location", "{L2}", {"DR1", "DR2"}),
    ("Schedule", "_has:Slot:schedule:status", "free", {"S1", "S2"}),
]


@pytest.mark.parametrize(("type_", "name", "value", "expected"), HAS,
                         ids=[f"{t}?{n}" for t, n, _, _ in HAS])
async def test_has_reverse_chain_one_level(fhir: httpx.AsyncClient, world: World, type_: str,
                                           name: str, value: str, expected: set[str]) -> None:
    params = [(name, value.format(L2=world.ref("L2")))]
    assert await found(fhir, world, type_, params) == expected


async def test_chain_with_include(fhir: httpx.AsyncClient, world: World) -> None:
    b = await bundle(fhir, "Slot", [("schedule.identifier", f"{world.sys}|S2"),
                                    ("_include", "Slot:schedule")])
    assert by_mode(world, b) == ({"SL6"}, {"S2"})
