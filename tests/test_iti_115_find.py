"""IHE ITI-115 Find Potential Appointments: the IG's own request, answered as the IG says.

The request is the example of 2:3.115.4.1.2.1 (``tests/fixtures/ig/``), which names the
practitioner by identifier only; the answer must be a searchset Bundle of proposed Appointments
that conform to ihe-sched-appt (2:3.115.4.2.2), with ``total`` (2:3.115.4.2.3). Also here: the
other IHE parameter names and types, unknown parameters under ``Prefer: handling``, devices kept
out of ``participant`` as the profile requires, and the CapabilityStatement and definitions an
IHE client reads (2:3.115.5).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.ihe import (
    IHE_APPT,
    IHE_SERVER,
    fixture,
    issue_codes,
    matches,
    outcome_entries,
    profile_problems,
)
from tests.support.scheduling import (
    EXT,
    Json,
    actors,
    book_option,
    booked_appointment,
    bundle_resource,
    concept,
    hours,
    names_parameter,
    patient,
    put_all,
    schedule,
    template,
    uid,
    visit_type,
)

TZ = "America/Los_Angeles"
OID = "urn:oid:1.3.6.1.4.1.19376.1.2.999"  # the example's identifier system
START, END = "2034-07-15T20:00:00Z", "2034-07-17T20:00:00Z"  # the example's window, in 2034
MONDAY = "2034-07-17"


def local(hhmm: str) -> str:
    return f"{MONDAY}T{hhmm}:00-07:00"


async def identified_practitioner(fhir: httpx.AsyncClient, value: str, *,
                                  specialty: str | None = None) -> str:
    """A practitioner carrying identifier ``OID|value``, free Mondays 09:00-17:00 in Napa time."""
    pid = f"pr-{uid()}"
    spec = ("http://example.org/specialty", specialty) if specialty else None
    await put_all(fhir,
                  {"resourceType": "Practitioner", "id": pid, "name": [{"family": "Vider"}],
                   "identifier": [{"system": OID, "value": value}]},
                  schedule(f"sc-{pid}", f"Practitioner/{pid}",
                           template(TZ, hours(["mon"], "09:00:00", "17:00:00")), specialty=spec))
    return f"Practitioner/{pid}"


def example_request(value: str) -> Json:
    body: Json = fixture("ihe-iti-115-find-parameters.json", {"PR23143": value})
    return body


# --------------------------------------------------------------------------- the IG example


async def test_example_request_proposes_the_practitioner_named_by_identifier(
        fhir: httpx.AsyncClient) -> None:
    value = f"PR23143-{uid()}"
    doctor = await identified_practitioner(fhir, value)
    r = await fhir.post("/Appointment/$find", json=example_request(value))
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    options = matches(r)
    assert [o["start"] for o in options] == [local(f"{h:02d}:{m}") for h in range(9, 13)
                                             for m in ("00", "30")]
    assert bundle["total"] == len(options)
    for option in options:
        assert option["status"] == "proposed"
        assert actors(option) == [doctor]
        assert option["requestedPeriod"] == [{"start": "2034-07-15T13:00:00-07:00",
                                              "end": "2034-07-17T13:00:00-07:00"}]
        assert profile_problems(option) == []


async def test_identifier_nobody_has_proposes_nothing_rather_than_everyone(
        fhir: httpx.AsyncClient) -> None:
    await identified_practitioner(fhir, f"PR-other-{uid()}")
    r = await fhir.post("/Appointment/$find", json=example_request(f"PR-none-{uid()}"))
    assert r.status_code == 200, r.text
    assert matches(r) == [] and r.json()["total"] == 0


async def test_identifier_two_practitioners_share_proposes_both(
        fhir: httpx.AsyncClient) -> None:
    value = f"PR-shared-{uid()}"
    first = await identified_practitioner(fhir, value)
    second = await identified_practitioner(fhir, value)
    body = example_request(value)
    body["parameter"].append({"name": "_count", "valueInteger": 20})
    r = await fhir.post("/Appointment/$find", json=body)
    assert r.status_code == 200, r.text
    assert {actors(o)[0] for o in matches(r)} == {first, second}


@pytest.mark.parametrize("identifier", [{"system": OID}, {"system": "", "value": "x"}, "PR1"])
async def test_malformed_logical_reference_is_a_400_naming_the_parameter(
        fhir: httpx.AsyncClient, identifier: Any) -> None:
    body = example_request("x")
    body["parameter"][2]["valueReference"]["identifier"] = identifier
    r = await fhir.post("/Appointment/$find", json=body)
    assert r.status_code == 400, r.text
    assert names_parameter(r, "practitioner")


# --------------------------------------------------------------------------- IHE names, GET


async def test_get_with_the_ihe_parameter_names(fhir: httpx.AsyncClient) -> None:
    """location-reference and patient-reference are the IHE names (the OperationDefinition's),
    specialty a system|code token, _count the upper limit (2:3.115.4.2.3)."""
    key = uid()
    spec = f"spec-{key}"
    doctor = await identified_practitioner(fhir, f"PR-{key}", specialty=spec)
    site = f"Location/site-{key}"
    await put_all(fhir, {"resourceType": "Location", "id": f"site-{key}", "name": "Site"})
    sched = (await fhir.get(f"/Schedule/sc-{doctor.split('/')[1]}")).json()
    sched["actor"].append({"reference": site})
    await put_all(fhir, {k: v for k, v in sched.items() if k != "meta"})
    who = await patient(fhir)
    r = await fhir.get("/Appointment/$find", params={
        "start": START, "end": END, "specialty": f"http://example.org/specialty|{spec}",
        "location-reference": site, "patient-reference": who, "_count": "2"})
    assert r.status_code == 200, r.text
    options = matches(r)
    assert [o["start"] for o in options] == [local("09:00"), local("09:30")]
    assert all(actors(o) == [who, doctor] and profile_problems(o) == [] for o in options)


# --------------------------------------------------------------------------- unknown inputs


async def test_unknown_parameter_is_ignored_and_reported_in_the_bundle(
        fhir: httpx.AsyncClient) -> None:
    value = f"PR-{uid()}"
    await identified_practitioner(fhir, value)
    body = example_request(value)
    body["parameter"].append({"name": "x-vendor-flag", "valueString": "on"})
    r = await fhir.post("/Appointment/$find", json=body)
    assert r.status_code == 200, r.text
    assert len(matches(r)) == 8 and r.json()["total"] == 8
    [oo] = outcome_entries(r)
    assert issue_codes(oo) == [("warning", "not-supported")]
    assert oo["issue"][0]["expression"] == ["x-vendor-flag"]


async def test_unknown_parameter_under_strict_handling_is_a_400_naming_it(
        fhir: httpx.AsyncClient) -> None:
    r = await fhir.get("/Appointment/$find", params={"start": START, "end": END, "x-flag": "1"},
                       headers={"prefer": "handling=strict"})
    assert r.status_code == 400, r.text
    assert names_parameter(r, "x-flag")


# --------------------------------------------------------------------------- devices


async def device_clinic(fhir: httpx.AsyncClient) -> tuple[str, str, str]:
    """(visit token, practitioner, device): a visit that needs a doctor and an ultrasound."""
    key = uid()
    base = f"http://example.org/{key}"
    kind = (f"{base}/kind", "ultrasound")
    specialty = (f"{base}/specialty", "sonography")
    open_hours = template(TZ, hours(["mon"], "09:00:00", "11:00:00"))
    doctor, device = f"Practitioner/pr-{key}", f"Device/us-{key}"
    await put_all(
        fhir,
        {"resourceType": "Practitioner", "id": f"pr-{key}"},
        schedule(f"sc-pr-{key}", doctor, open_hours, specialty=specialty),
        schedule(f"sc-us-{key}", device, open_hours, kind=kind),
        {"resourceType": "HealthcareService", "id": f"hs-{key}", "name": "Ultrasound",
         "extension": [visit_type(
            f"{base}/visit", "us", 30,
            {"url": "need", "extension": [{"url": "actorType", "valueCode": "Practitioner"},
                                          {"url": "specialty",
                                           "valueCodeableConcept": concept(*specialty)}]},
            {"url": "need", "extension": [{"url": "actorType", "valueCode": "Device"},
                                          {"url": "kind",
                                           "valueCodeableConcept": concept(*kind)}]})]})
    return f"{base}/visit|us", doctor, device


async def test_a_device_the_visit_needs_travels_outside_participant(
        fhir: httpx.AsyncClient) -> None:
    visit, doctor, device = await device_clinic(fhir)
    r = await fhir.get("/Appointment/$find", params={"start": START, "end": END,
                                                     "visit-type": visit, "_count": "1"})
    assert r.status_code == 200, r.text
    [option] = matches(r)
    assert profile_problems(option) == []
    assert [p["actor"]["reference"] for p in option["participant"]] == [doctor]
    [ext] = [e for e in option["extension"] if e["url"] == EXT + "device-participant"]
    assert {"url": "actor", "valueReference": {"reference": device}} in ext["extension"]


async def test_booking_a_proposal_claims_its_device(fhir: httpx.AsyncClient) -> None:
    visit, _doctor, device = await device_clinic(fhir)
    r = await fhir.get("/Appointment/$find", params={"start": START, "end": END,
                                                     "visit-type": visit, "_count": "1"})
    [option] = matches(r)
    booked = bundle_resource(await book_option(fhir, option))
    assert booked["status"] == "booked" and profile_problems(booked) == []
    clash = await booked_appointment(fhir, device, option["start"], option["end"])
    assert clash.status_code == 409, clash.text
    again = await fhir.get("/Appointment/$find", params={"start": START, "end": END,
                                                         "visit-type": visit, "_count": "1"})
    assert [o["start"] for o in matches(again)] == [local("09:30")]


# --------------------------------------------------------------------------- what clients read


async def test_capability_statement_instantiates_the_ihe_scheduling_server(
        fhir: httpx.AsyncClient) -> None:
    cs = (await fhir.get("/metadata")).json()
    assert IHE_SERVER in cs["instantiates"]
    [appointment] = [r for r in cs["rest"][0]["resource"] if r["type"] == "Appointment"]
    assert IHE_APPT in appointment["supportedProfile"]
    assert {"find", "hold", "book"} <= {o["name"] for o in appointment["operation"]}


@pytest.mark.parametrize("op", ["find", "hold", "book"])
async def test_operation_definitions_are_readable_and_declare_the_ihe_ones(
        fhir: httpx.AsyncClient, op: str) -> None:
    cs = (await fhir.get("/metadata")).json()
    [appointment] = [r for r in cs["rest"][0]["resource"] if r["type"] == "Appointment"]
    url = {o["name"]: o["definition"] for o in appointment["operation"]}[op]
    found = await fhir.get("/OperationDefinition", params={"url": url})
    assert found.status_code == 200, found.text
    [definition] = matches(found)
    assert definition["code"] == op
    assert definition["base"] == ("https://profiles.ihe.net/ITI/Scheduling/OperationDefinition/"
                                  f"appointment-{op}")
    read = await fhir.get(f"/OperationDefinition/{definition['id']}")
    assert read.status_code == 200 and read.json() == definition


async def test_every_extension_the_server_writes_is_readable(fhir: httpx.AsyncClient) -> None:
    r = await fhir.get("/StructureDefinition", params={"url": EXT + "device-participant"})
    [definition] = matches(r)
    assert definition["type"] == "Extension"
    assert (await fhir.get("/StructureDefinition/hold-expires")).status_code == 200
    assert len(matches(await fhir.get("/SearchParameter"))) >= 2


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/OperationDefinition/appointment-find"),
    ("DELETE", "/StructureDefinition/hold-expires"),
    ("POST", "/SearchParameter"),
    ("PATCH", "/OperationDefinition/appointment-book"),
])
async def test_definitions_are_read_only(fhir: httpx.AsyncClient, method: str,
                                         path: str) -> None:
    r = await fhir.request(method, path, json={"resourceType": path.split("/")[1]})
    assert r.status_code == 405, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["allow"] == "GET"


async def test_unknown_definition_is_a_404(fhir: httpx.AsyncClient) -> None:
    r = await fhir.get("/OperationDefinition/nope")
    assert r.status_code == 404
    assert r.json()["issue"][0]["code"] == "not-found"



async def test_absolute_reference_to_this_server_is_the_same_practitioner(
        fhir: httpx.AsyncClient) -> None:
    """ITI-115: "References can be to an absolute URL"; ours name our own resources."""
    doctor = await identified_practitioner(fhir, f"PR-{uid()}")
    relative = await fhir.get("/Appointment/$find", params={
        "start": START, "end": END, "practitioner": doctor, "_count": "2"})
    absolute = await fhir.get("/Appointment/$find", params={
        "start": START, "end": END, "practitioner": f"{fhir.base_url}{doctor}", "_count": "2"})
    assert matches(relative) and matches(absolute) == matches(relative)


async def test_formatting_parameters_are_not_unknown_inputs(fhir: httpx.AsyncClient) -> None:
    r = await fhir.get("/Appointment/$find", params={
        "start": START, "end": END, "_format": "json", "_pretty": "true"},
        headers={"prefer": "handling=strict"})
    assert r.status_code == 200, r.text
    assert outcome_entries(r) == []
