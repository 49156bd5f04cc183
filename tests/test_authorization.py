"""Every path of the service asks the one authorization layer.

Two real servers share one SQLite file: an open one that seeds the data, and one composed with
a policy that refuses a list of (interaction, type) pairs. Each test drives one path through
the refusing server and checks that the refusal reaches the client (403, or the entry or
resource left out where the FHIR answer is a Bundle).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from fhir_sched.context import RequestContext
from fhir_sched.service.authorization import Interaction, OpenPolicy
from tests.support.client import fhir_client
from tests.support.scheduling import hours, outcome, parameters, schedule, template, uid
from tests.support.server import ServerProcess, cleanup_dir, sqlite_url

DENY = ",".join([
    "read:Patient", "vread:Patient", "search-type:Patient", "history:Patient", "create:Patient",
    "read:Practitioner", "read:PractitionerRole", "search-type:ServiceRequest",
    "create:Organization", "operation:Appointment:hold",
])


@dataclass
class World:
    open: httpx.AsyncClient
    denying: httpx.AsyncClient
    patient: str
    practitioner: str
    appointment: str


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    directory = tempfile.mkdtemp(prefix="fhir-sched-authz-")
    url = sqlite_url(directory)
    open_server = ServerProcess(url).start()
    denying = ServerProcess(url, factory="tests.support.denying_policy:app",
                            env={"FHIR_SCHED_TEST_DENY": DENY}).start()
    yield open_server, denying
    denying.stop()
    open_server.stop()
    cleanup_dir(directory)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(servers: tuple[ServerProcess, ServerProcess], fhir_schema: object
                ) -> AsyncIterator[World]:
    open_server, denying = servers
    async with fhir_client(open_server.base, fhir_schema) as o, \
            fhir_client(denying.base, fhir_schema) as d:
        pid, did = f"p-{uid()}", f"d-{uid()}"
        for res in (
            {"resourceType": "Patient", "id": pid, "name": [{"family": "Okoro"}]},
            {"resourceType": "Practitioner", "id": did, "name": [{"family": "Lind"}]},
            {"resourceType": "PractitionerRole", "id": f"r-{did}",
             "practitioner": {"reference": f"Practitioner/{did}"}},
            {"resourceType": "ServiceRequest", "id": f"sr-{did}", "status": "active",
             "intent": "order", "subject": {"reference": f"Patient/{pid}"},
             "performer": [{"reference": f"Practitioner/{did}"}]},
        ):
            r = await o.put(f"/{res['resourceType']}/{res['id']}", json=res)
            assert r.status_code in (200, 201), r.text
        sched = schedule(f"s-{did}", f"Practitioner/{did}", template("UTC", hours(
            ("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "00:00:00", "23:55:00")))
        r = await o.put(f"/Schedule/s-{did}", json=sched)
        assert r.status_code == 201, r.text
        appt = {"resourceType": "Appointment", "status": "booked",
                "start": "2031-03-03T10:00:00Z", "end": "2031-03-03T10:30:00Z",
                "participant": [
                    {"actor": {"reference": f"Patient/{pid}"}, "status": "accepted"},
                    {"actor": {"reference": f"Practitioner/{did}"}, "status": "accepted"}]}
        r = await o.post("/Appointment", json=appt)
        assert r.status_code == 201, r.text
        yield World(o, d, pid, did, r.json()["id"])


def refused(r: httpx.Response) -> bool:
    # outcome(): a $book refusal carries its OperationOutcome in a Bundle (ITI-117)
    return r.status_code == 403 and outcome(r)["issue"][0]["code"] == "forbidden"


def entry_ids(bundle: dict[str, Any], mode: str) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle.get("entry", []) if e["search"]["mode"] == mode}


async def test_read_asks_the_policy(world: World) -> None:
    assert refused(await world.denying.get(f"/Patient/{world.patient}"))


async def test_vread_asks_the_policy(world: World) -> None:
    assert refused(await world.denying.get(f"/Patient/{world.patient}/_history/1"))


async def test_search_asks_the_policy(world: World) -> None:
    assert refused(await world.denying.get("/Patient", params={"name": "okoro"}))


async def test_compartment_search_of_a_refused_type_asks_the_policy(world: World) -> None:
    assert refused(await world.denying.get(f"/Patient/{world.patient}/Patient"))


async def test_history_asks_the_policy(world: World) -> None:
    assert refused(await world.denying.get(f"/Patient/{world.patient}/_history"))


async def test_a_permitted_read_still_succeeds(world: World) -> None:
    r = await world.denying.get(f"/Appointment/{world.appointment}")
    assert r.status_code == 200


async def test_included_resources_the_caller_may_not_read_are_left_out(world: World) -> None:
    r = await world.denying.get("/Appointment", params=[
        ("_id", world.appointment), ("_include", "Appointment:actor")])
    assert r.status_code == 200
    assert entry_ids(r.json(), "match") == {f"Appointment/{world.appointment}"}
    assert entry_ids(r.json(), "include") == set()
    # the same search on the open server does include them: the data is there
    r = await world.open.get("/Appointment", params=[
        ("_id", world.appointment), ("_include", "Appointment:actor")])
    assert entry_ids(r.json(), "include") == {f"Patient/{world.patient}",
                                              f"Practitioner/{world.practitioner}"}


async def test_revincluded_resources_the_caller_may_not_read_are_left_out(world: World) -> None:
    params = [("_id", world.practitioner), ("_revinclude", "PractitionerRole:practitioner")]
    r = await world.denying.get("/Practitioner", params=params)
    assert r.status_code == 200
    assert entry_ids(r.json(), "include") == set()
    r = await world.open.get("/Practitioner", params=params)
    assert entry_ids(r.json(), "include") == {f"PractitionerRole/r-{world.practitioner}"}


async def test_a_chain_through_a_refused_type_asks_the_policy(world: World) -> None:
    assert refused(await world.denying.get("/Appointment",
                                           params={"actor:Patient.name": "okoro"}))


async def test_has_through_a_refused_type_asks_the_policy(world: World) -> None:
    assert refused(await world.denying.get(
        "/Practitioner", params={"_has:ServiceRequest:performer:status": "active"}))


async def test_batch_read_entry_asks_the_policy(world: World) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{world.patient}"}},
        {"request": {"method": "GET", "url": f"Appointment/{world.appointment}"}}]}
    r = await world.denying.post("", json=bundle)
    assert r.status_code == 200
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0].startswith("403") and statuses[1].startswith("200")


async def test_batch_search_entry_asks_the_policy(world: World) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?name=okoro"}}]}
    r = await world.denying.post("", json=bundle)
    assert r.json()["entry"][0]["response"]["status"].startswith("403")


async def test_batch_write_entry_asks_the_policy(world: World) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "POST", "url": "Organization"},
         "resource": {"resourceType": "Organization", "name": f"Org {uid()}"}}]}
    r = await world.denying.post("", json=bundle)
    assert r.json()["entry"][0]["response"]["status"].startswith("403")


async def test_a_refused_transaction_entry_refuses_the_whole_transaction(world: World) -> None:
    name = f"Org {uid()}"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Location"},
         "resource": {"resourceType": "Location", "name": name}},
        {"request": {"method": "POST", "url": "Organization"},
         "resource": {"resourceType": "Organization", "name": name}}]}
    assert refused(await world.denying.post("", json=bundle))
    r = await world.open.get("/Location", params={"name:exact": name})
    assert r.json()["total"] == 0  # the permitted entry was not committed either


async def test_a_transaction_read_entry_asks_the_policy(world: World) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{world.patient}"}}]}
    assert refused(await world.denying.post("", json=bundle))


async def test_create_asks_the_policy(world: World) -> None:
    assert refused(await world.denying.post(
        "/Organization", json={"resourceType": "Organization", "name": "x"}))


async def test_an_operation_asks_the_policy(world: World) -> None:
    appt = {"resourceType": "Appointment", "status": "proposed",
            "start": "2031-03-04T10:00:00Z", "end": "2031-03-04T10:30:00Z",
            "participant": [{"actor": {"reference": f"Practitioner/{world.practitioner}"},
                             "status": "needs-action"}]}
    r = await world.denying.post("/Appointment/$hold",
                                 json=parameters(("appointment-resource", appt)))
    assert refused(r)


async def test_writes_an_operation_makes_ask_the_policy(world: World) -> None:
    """$book with a patient-resource creates that Patient through the write pipeline, where
    the policy refuses it; nothing of the booking is committed."""
    start = "2031-03-05T10:00:00Z"
    appt = {"resourceType": "Appointment", "status": "proposed",
            "start": start, "end": "2031-03-05T10:30:00Z",
            "participant": [{"actor": {"reference": f"Practitioner/{world.practitioner}"},
                             "status": "needs-action"}]}
    pid = f"p-{uid()}"
    r = await world.denying.post("/Appointment/$book", json=parameters(
        ("appointment-resource", appt),
        ("patient-resource", {"resourceType": "Patient", "id": pid})))
    assert refused(r)
    r = await world.open.get("/Appointment", params={
        "actor": f"Practitioner/{world.practitioner}", "date": start})
    assert r.json()["total"] == 0


def test_a_patient_bound_context_sees_only_its_compartment() -> None:
    policy = OpenPolicy()
    ctx = RequestContext(patient="Patient/1")
    mine = {"resourceType": "Appointment", "id": "a",
            "participant": [{"actor": {"reference": "Patient/1"}}]}
    theirs = {"resourceType": "Appointment", "id": "b",
              "participant": [{"actor": {"reference": "Patient/2"}}]}
    assert policy.visible(ctx, "Appointment", mine)
    assert not policy.visible(ctx, "Appointment", theirs)
    with pytest.raises(Exception, match="outside the compartment"):
        policy.check(ctx, Interaction.READ, "Appointment", "b", resource=theirs)


def test_a_patient_bound_context_may_not_write_types_outside_the_compartment() -> None:
    ctx = RequestContext(patient="Patient/1")
    with pytest.raises(Exception, match="may not write Practitioner"):
        OpenPolicy().check(ctx, Interaction.UPDATE, "Practitioner", "d")
