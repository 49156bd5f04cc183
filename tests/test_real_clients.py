"""Two FHIR client libraries nobody here wrote, against the real uvicorn process.

``fhirpy`` (async, aiohttp) and ``fhirclient`` (the SMART Python client, synchronous, run in a
thread) each create, read, update and search. They parse our responses with their own models and
conventions (fhirclient reads the CapabilityStatement with its generated 4.0.1 models), so they
catch wire-level mistakes our own client would forgive. ``fhirclient``'s ``create`` refuses a
resource that already has an id, so it creates without one and updates after reading the id back.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from fhirclient import client as smart_client
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.fhirsearch import FHIRSearch
from fhirclient.models.patient import Patient as SmartPatient
from fhirclient.models.schedule import Schedule as SmartSchedule
from fhirclient.models.slot import Slot as SmartSlot
from fhirpy import AsyncFHIRClient

from tests.support.fhir_assets import assert_valid
from tests.support.server import ServerProcess

SYSTEM = "urn:fhir-sched:test:real-clients"


def identifier() -> dict[str, str]:
    return {"system": SYSTEM, "value": uuid.uuid4().hex}


@pytest.fixture
def fhirpy_client(server: ServerProcess) -> AsyncFHIRClient:
    return AsyncFHIRClient(server.base, extra_headers={"Accept": "application/fhir+json"})


@pytest.fixture
def smart(server: ServerProcess) -> smart_client.FHIRClient:
    return smart_client.FHIRClient(settings={"app_id": "fhir-sched-tests",
                                             "api_base": server.base})


# -- fhirpy ----------------------------------------------------------------------------------
async def test_fhirpy_creates_reads_updates_and_searches_a_patient(
        fhirpy_client: AsyncFHIRClient) -> None:
    ident = identifier()
    patient = fhirpy_client.resource("Patient", identifier=[ident],
                                     name=[{"family": "Ferreira", "given": ["Ana"]}])
    await patient.save()
    assert patient.id
    assert patient["meta"]["versionId"] == "1"

    read = await fhirpy_client.reference("Patient", patient.id).to_resource()
    assert read["name"][0]["family"] == "Ferreira"

    read["gender"] = "female"
    await read.save()
    assert read["meta"]["versionId"] == "2"

    found = await fhirpy_client.resources("Patient").search(
        identifier=f"{SYSTEM}|{ident['value']}").fetch_all()
    assert [p.id for p in found] == [patient.id]
    assert found[0]["gender"] == "female"
    assert_valid(found[0].serialize())


async def test_fhirpy_books_a_slot_on_a_schedule_and_finds_it(
        fhirpy_client: AsyncFHIRClient) -> None:
    schedule = fhirpy_client.resource("Schedule", identifier=[identifier()],
                                      actor=[{"display": "Dr. Ito, room 4"}])
    await schedule.save()
    slot = fhirpy_client.resource(
        "Slot", schedule=schedule.to_reference(), status="free",
        start="2032-03-01T09:00:00Z", end="2032-03-01T09:20:00Z")
    await slot.save()
    assert slot["schedule"]["reference"] == f"Schedule/{schedule.id}"

    slot["status"] = "busy"
    await slot.save()
    free = await fhirpy_client.resources("Slot").search(
        schedule=f"Schedule/{schedule.id}", status="free").fetch_all()
    busy = await fhirpy_client.resources("Slot").search(
        schedule=f"Schedule/{schedule.id}", status="busy").fetch_all()
    assert free == []
    assert [s.id for s in busy] == [slot.id]


async def test_fhirpy_sees_validation_errors_as_operation_outcomes(
        fhirpy_client: AsyncFHIRClient) -> None:
    from fhirpy.base.exceptions import OperationOutcome

    bad = fhirpy_client.resource("Slot", status="free", start="2032-03-01T09:00:00Z",
                                 end="2032-03-01T09:20:00Z",
                                 schedule={"reference": f"Schedule/{uuid.uuid4().hex}"})
    with pytest.raises(OperationOutcome) as caught:
        await bad.save()
    assert "Slot.schedule.reference" in str(caught.value)


# -- fhirclient (SMART) ------------------------------------------------------------------------
def smart_round_trip(smart: smart_client.FHIRClient) -> dict[str, Any]:
    server = smart.server
    ident = identifier()
    created = SmartPatient({"identifier": [ident], "name": [{"family": "Kowalski"}]})
    response = created.create(server)
    assert response is not None
    pid = response["id"]

    read = SmartPatient.read(pid, server)
    assert read.name[0].family == "Kowalski"

    read.gender = "male"
    read.update(server)
    again = SmartPatient.read(pid, server)

    search = SmartPatient.where(struct={"identifier": f"{SYSTEM}|{ident['value']}"})
    found = list(search.perform_resources_iter(server))
    return {"id": pid, "again": again.as_json(), "found": [p.as_json() for p in found]}


async def test_fhirclient_creates_reads_updates_and_searches_a_patient(
        smart: smart_client.FHIRClient) -> None:
    out = await asyncio.to_thread(smart_round_trip, smart)
    assert out["again"]["gender"] == "male"
    assert out["again"]["meta"]["versionId"] == "2"
    assert [p["id"] for p in out["found"]] == [out["id"]]
    assert_valid(out["again"])


def smart_schedule_and_slots(smart: smart_client.FHIRClient) -> list[str]:
    server = smart.server
    sched = SmartSchedule({"actor": [{"display": "Ultrasound 2"}],
                           "identifier": [identifier()]})
    sid = sched.create(server)["id"]
    for hour in (9, 10):
        SmartSlot({"schedule": {"reference": f"Schedule/{sid}"}, "status": "free",
                   "start": f"2032-04-02T{hour:02d}:00:00Z",
                   "end": f"2032-04-02T{hour:02d}:30:00Z"}).create(server)
    found = FHIRSearch(SmartSlot, {"schedule": f"Schedule/{sid}"}).perform_resources_iter(
        server)
    return sorted(s.as_json()["start"] for s in found)


async def test_fhirclient_creates_and_searches_slots(smart: smart_client.FHIRClient) -> None:
    starts = await asyncio.to_thread(smart_schedule_and_slots, smart)
    assert starts == ["2032-04-02T09:00:00Z", "2032-04-02T10:00:00Z"]


def smart_capability(smart: smart_client.FHIRClient) -> CapabilityStatement:
    return CapabilityStatement.read_from("metadata", smart.server)


async def test_fhirclient_parses_the_capability_statement(
        smart: smart_client.FHIRClient) -> None:
    cs = await asyncio.to_thread(smart_capability, smart)
    assert cs.fhirVersion == "4.0.1"
    assert {r.type for r in cs.rest[0].resource} >= {"Appointment", "Slot", "Schedule"}
