"""FHIR XML over a real server: negotiation, XML bodies, every kind of answer, and refusals.

Every XML answer is read back with our converter and its JSON form checked against the
official R4 JSON schema, and a resource read as XML is read by ``fhir.resources`` (its own
XML reader, on lxml) too, so "valid" is never only our own opinion.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.appointment import Appointment

from fhir_sched.rest.fhirxml import parse_xml, to_xml
from tests.support import web
from tests.support.fhir_assets import SchemaValidator
from tests.support.scheduling import parameters, practitioner_calendar
from tests.support.server import ServerProcess

Json = dict[str, Any]
FHIR_XML = "application/fhir+xml"
XML_ANSWER = "application/fhir+xml; charset=utf-8"
SEND_XML = {"content-type": FHIR_XML}
SYSTEM = "urn:fhir-sched:test:xml"
WINDOW = {"start": "2031-05-05T00:00:00Z", "end": "2031-05-12T00:00:00Z"}


@pytest.fixture
async def xml(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A client that asks for XML and sends nothing else by default."""
    async with web.async_client(base_url=server.base, headers={"accept": FHIR_XML},
                                timeout=30.0) as client:
        yield client


def read(response: httpx.Response, schema: SchemaValidator) -> Json:
    """An XML answer in its JSON form, which must be valid R4."""
    assert response.headers["content-type"] == XML_ANSWER, response.text[:300]
    assert response.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    doc = parse_xml(response.content)
    assert schema.errors(doc) == [], doc
    return doc


def ident() -> Json:
    return {"system": SYSTEM, "value": uuid.uuid4().hex}


async def created(fhir: httpx.AsyncClient, body: Json) -> str:
    r = await fhir.post(f"/{body['resourceType']}", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def without_server_fields(doc: Json) -> Json:
    return {k: v for k, v in doc.items() if k not in ("id", "meta")}


# -- one resource of each hosted type, exercising the XML rules ------------------------------
async def body_for(fhir: httpx.AsyncClient, type_: str) -> Json:
    if type_ == "Patient":
        return {"resourceType": "Patient", "identifier": [ident()],
                "text": {"status": "generated",
                         "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Ada '
                                "&amp; <b>Okafor</b></p></div>"},
                "contained": [{"resourceType": "Organization", "id": "org",
                               "name": "Contained Clinic"}],
                "extension": [{"url": "http://example.org/birth-weight",
                               "valueQuantity": {"value": 3.25, "unit": "kg"}}],
                "active": True,
                "name": [{"family": "Okafor", "given": ["Ada", "Nkem"],
                          "_given": [None, {"extension": [{
                              "url": "http://example.org/name-kind",
                              "valueCode": "middle"}]}]}],
                "gender": "female", "birthDate": "1970-01-01",
                "_birthDate": {"id": "bd"}, "multipleBirthInteger": 2,
                "managingOrganization": {"reference": "#org"}}
    if type_ == "Practitioner":
        return {"resourceType": "Practitioner", "identifier": [ident()], "active": False,
                "name": [{"family": "Osei", "prefix": ["Dr"]}], "gender": "male",
                "qualification": [{"code": {"text": "MD"},
                                   "period": {"start": "2001-06-01"}}]}
    if type_ == "Organization":
        return {"resourceType": "Organization", "identifier": [ident()], "active": True,
                "name": "North Clinic",
                "telecom": [{"system": "phone", "value": "555-0100", "rank": 1}]}
    if type_ == "Location":
        return {"resourceType": "Location", "identifier": [ident()], "status": "active",
                "name": "Room 7", "mode": "instance",
                "position": {"longitude": -83.6945691, "latitude": 42.25475478,
                             "altitude": 0},
                "hoursOfOperation": [{"daysOfWeek": ["mon", "tue"], "allDay": False,
                                      "openingTime": "08:00:00"}]}
    if type_ == "HealthcareService":
        org = await created(fhir, await body_for(fhir, "Organization"))
        return {"resourceType": "HealthcareService", "identifier": [ident()], "active": True,
                "providedBy": {"reference": f"Organization/{org}"}, "name": "Dermatology",
                "appointmentRequired": True}
    if type_ == "PractitionerRole":
        pr = await created(fhir, await body_for(fhir, "Practitioner"))
        return {"resourceType": "PractitionerRole", "identifier": [ident()], "active": True,
                "practitioner": {"reference": f"Practitioner/{pr}"},
                "code": [{"coding": [{"system": "http://example.org/roles",
                                      "code": "doc"}]}]}
    if type_ == "Schedule":
        return {"resourceType": "Schedule", "identifier": [ident()], "active": True,
                "actor": [{"display": "Room 9"}],
                "planningHorizon": {"start": "2031-01-01T00:00:00Z"}}
    if type_ == "Slot":
        sched = await created(fhir, await body_for(fhir, "Schedule"))
        return {"resourceType": "Slot", "identifier": [ident()],
                "schedule": {"reference": f"Schedule/{sched}"}, "status": "free",
                "start": "2031-05-05T09:00:00Z", "end": "2031-05-05T09:30:00Z",
                "overbooked": False}
    if type_ == "Appointment":
        pat = await created(fhir, {"resourceType": "Patient", "identifier": [ident()]})
        return {"resourceType": "Appointment", "identifier": [ident()], "status": "proposed",
                "priority": 5, "description": "Check-up",
                "participant": [{"actor": {"reference": f"Patient/{pat}"},
                                 "required": "required", "status": "needs-action"}],
                "requestedPeriod": [{"start": "2031-05-05T09:00:00Z",
                                     "end": "2031-05-09T17:00:00Z"}]}
    if type_ == "Coverage":
        pat = await created(fhir, {"resourceType": "Patient", "identifier": [ident()]})
        org = await created(fhir, await body_for(fhir, "Organization"))
        return {"resourceType": "Coverage", "identifier": [ident()], "status": "active",
                "beneficiary": {"reference": f"Patient/{pat}"},
                "payor": [{"reference": f"Organization/{org}"}], "order": 1,
                "costToBeneficiary": [{"valueMoney": {"value": 20.50, "currency": "USD"}}]}
    if type_ == "ServiceRequest":
        pat = await created(fhir, {"resourceType": "Patient", "identifier": [ident()]})
        return {"resourceType": "ServiceRequest", "identifier": [ident()], "status": "active",
                "intent": "order", "subject": {"reference": f"Patient/{pat}"},
                "doNotPerform": False, "quantityQuantity": {"value": 2},
                "occurrencePeriod": {"start": "2031-05-05T09:00:00Z"}}
    raise AssertionError(type_)


HOSTED = ("Patient", "Practitioner", "PractitionerRole", "Location", "HealthcareService",
          "Organization", "Schedule", "Slot", "Appointment", "Coverage", "ServiceRequest")


@pytest.mark.parametrize("type_", HOSTED)
async def test_xml_in_json_out_equals_json_in_xml_out(
        type_: str, fhir: httpx.AsyncClient, xml: httpx.AsyncClient,
        fhir_schema: SchemaValidator) -> None:
    body = await body_for(fhir, type_)
    json_in = await created(fhir, body)
    json_in_xml_out = read(await xml.get(f"/{type_}/{json_in}"), fhir_schema)

    body["identifier"] = [ident()]
    r = await fhir.post(f"/{type_}", content=to_xml(body), headers=SEND_XML)
    assert r.status_code == 201, r.text
    xml_in_json_out = (await fhir.get(f"/{type_}/{r.json()['id']}")).json()

    expected = without_server_fields(body)
    assert without_server_fields(xml_in_json_out) == expected
    assert without_server_fields(json_in_xml_out) == {**expected,
                                                      "identifier": json_in_xml_out["identifier"]}


# -- negotiation -----------------------------------------------------------------------------
XML_ASKS = [
    ("_format=xml", {}),
    ("_format=application/fhir%2Bxml", {}),
    ("_format=application/fhir+xml", {}),  # an unencoded + reads as a space
    ("_format=text/xml", {}),
    ("", {"accept": "application/fhir+xml"}),
    ("", {"accept": "application/xml"}),
    ("", {"accept": "text/xml"}),
    ("", {"accept": "application/xml+fhir"}),
    ("", {"accept": "application/fhir+json;q=0.5, application/fhir+xml"}),
    ("", {"accept": "*/*;q=0.1, application/fhir+xml;fhirVersion=4.0"}),
    ("_format=xml", {"accept": "application/fhir+json"}),
]


@pytest.mark.parametrize(("query", "headers"), XML_ASKS, ids=[f"{q}|{h}" for q, h in XML_ASKS])
async def test_asking_for_xml_answers_xml(query: str, headers: dict[str, str],
                                          fhir: httpx.AsyncClient, server: ServerProcess,
                                          fhir_schema: SchemaValidator) -> None:
    pid = await created(fhir, {"resourceType": "Patient", "identifier": [ident()]})
    async with web.async_client(base_url=server.base, timeout=30.0) as plain:
        r = await plain.get(f"/Patient/{pid}" + (f"?{query}" if query else ""),
                            headers=headers)
    assert r.status_code == 200
    assert read(r, fhir_schema)["id"] == pid


JSON_ASKS = [
    ("", {}),
    ("", {"accept": "*/*"}),
    ("", {"accept": "application/json"}),
    ("", {"accept": "application/fhir+xml;q=0.2, application/fhir+json"}),
    ("_format=json", {"accept": "application/fhir+xml"}),
]


@pytest.mark.parametrize(("query", "headers"), JSON_ASKS,
                         ids=[f"{q}|{h}" for q, h in JSON_ASKS])
async def test_json_stays_the_answer_unless_xml_is_preferred(
        query: str, headers: dict[str, str], fhir: httpx.AsyncClient,
        server: ServerProcess) -> None:
    pid = await created(fhir, {"resourceType": "Patient", "identifier": [ident()]})
    async with web.async_client(base_url=server.base, timeout=30.0) as plain:
        r = await plain.get(f"/Patient/{pid}" + (f"?{query}" if query else ""),
                            headers=headers)
    assert r.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert r.json()["id"] == pid


async def test_an_xml_body_with_no_stated_preference_is_answered_in_xml(
        server: ServerProcess, fhir_schema: SchemaValidator) -> None:
    body = to_xml({"resourceType": "Patient", "identifier": [ident()]})
    async with web.async_client(base_url=server.base, timeout=30.0) as plain:
        r = await plain.post("/Patient", content=body, headers=SEND_XML)
    assert r.status_code == 201
    assert read(r, fhir_schema)["resourceType"] == "Patient"


# -- reads and searches ----------------------------------------------------------------------
async def test_vread_answers_xml_with_the_version_headers(
        fhir: httpx.AsyncClient, xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    pid = await created(fhir, {"resourceType": "Patient", "identifier": [ident()]})
    r = await xml.get(f"/Patient/{pid}/_history/1")
    assert r.headers["etag"] == 'W/"1"'
    assert read(r, fhir_schema)["meta"]["versionId"] == "1"


async def test_history_answers_an_xml_history_bundle(
        fhir: httpx.AsyncClient, xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    pid = await created(fhir, {"resourceType": "Patient", "identifier": [ident()]})
    assert (await fhir.put(f"/Patient/{pid}", json={
        "resourceType": "Patient", "id": pid, "active": True})).status_code == 200
    doc = read(await xml.get(f"/Patient/{pid}/_history"), fhir_schema)
    assert doc["type"] == "history"
    assert [e["request"]["method"] for e in doc["entry"]] == ["PUT", "POST"]
    assert doc["entry"][0]["resource"]["active"] is True


async def test_search_answers_an_xml_searchset_with_includes(
        fhir: httpx.AsyncClient, xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    org = await created(fhir, {"resourceType": "Organization", "name": "Inc"})
    key = ident()
    pid = await created(fhir, {"resourceType": "Patient", "identifier": [key],
                               "managingOrganization": {"reference": f"Organization/{org}"}})
    r = await xml.get("/Patient", params={"identifier": f"{key['system']}|{key['value']}",
                                          "_include": "Patient:organization"})
    doc = read(r, fhir_schema)
    assert doc["type"] == "searchset" and doc["total"] == 1
    assert [(e["resource"]["resourceType"], e["resource"]["id"], e["search"]["mode"])
            for e in doc["entry"]] == [("Patient", pid, "match"),
                                       ("Organization", org, "include")]
    assert doc["link"][0]["relation"] == "self"


async def test_post_search_answers_xml(fhir: httpx.AsyncClient, xml: httpx.AsyncClient,
                                       fhir_schema: SchemaValidator) -> None:
    key = ident()
    pid = await created(fhir, {"resourceType": "Patient", "identifier": [key]})
    r = await xml.post("/Patient/_search",
                       data={"identifier": f"{key['system']}|{key['value']}"})
    assert [e["resource"]["id"] for e in read(r, fhir_schema)["entry"]] == [pid]


async def test_metadata_in_xml_lists_both_formats(xml: httpx.AsyncClient,
                                                  fhir_schema: SchemaValidator) -> None:
    doc = read(await xml.get("/metadata"), fhir_schema)
    assert doc["resourceType"] == "CapabilityStatement"
    assert {"xml", "application/fhir+xml", "json", "application/fhir+json"} <= set(
        doc["format"])


async def test_fhir_resources_reads_our_xml_as_it_reads_our_json(
        fhir: httpx.AsyncClient, xml: httpx.AsyncClient) -> None:
    body = await body_for(fhir, "Appointment")
    aid = await created(fhir, body)
    as_json = Appointment.model_validate_json((await fhir.get(f"/Appointment/{aid}")).content)
    as_xml = Appointment.model_validate_xml((await xml.get(f"/Appointment/{aid}")).content)
    assert as_xml == as_json


# -- writes with XML bodies ------------------------------------------------------------------
async def test_create_from_xml_answers_the_representation_in_xml(
        xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    r = await xml.post("/Patient", content=to_xml({"resourceType": "Patient",
                                                   "identifier": [ident()], "active": True}),
                       headers={**SEND_XML, "prefer": "return=representation"})
    assert r.status_code == 201
    doc = read(r, fhir_schema)
    assert doc["active"] is True
    assert r.headers["location"].endswith(f"/Patient/{doc['id']}/_history/1")


async def test_update_from_xml_answers_an_outcome_in_xml_when_asked(
        fhir: httpx.AsyncClient, xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    pid = await created(fhir, {"resourceType": "Patient", "identifier": [ident()]})
    r = await xml.put(f"/Patient/{pid}", content=to_xml({"resourceType": "Patient", "id": pid,
                                                        "gender": "other"}),
                      headers={**SEND_XML, "prefer": "return=OperationOutcome"})
    assert r.status_code == 200
    assert "version 2" in read(r, fhir_schema)["issue"][0]["diagnostics"]
    assert (await fhir.get(f"/Patient/{pid}")).json()["gender"] == "other"


async def test_conditional_create_from_xml_finds_the_existing_match(
        fhir: httpx.AsyncClient, xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    key = ident()
    body = to_xml({"resourceType": "Patient", "identifier": [key]})
    headers = {**SEND_XML, "if-none-exist": f"identifier={key['system']}|{key['value']}"}
    first = await xml.post("/Patient", content=body, headers=headers)
    again = await xml.post("/Patient", content=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert read(again, fhir_schema)["id"] == read(first, fhir_schema)["id"]


async def test_conditional_update_from_xml_updates_the_match(
        fhir: httpx.AsyncClient, xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    key = ident()
    pid = await created(fhir, {"resourceType": "Patient", "identifier": [key]})
    r = await xml.put("/Patient", params={"identifier": f"{key['system']}|{key['value']}"},
                      content=to_xml({"resourceType": "Patient", "identifier": [key],
                                      "birthDate": "1980-02-29"}), headers=SEND_XML)
    assert r.status_code == 200
    doc = read(r, fhir_schema)
    assert (doc["id"], doc["birthDate"], doc["meta"]["versionId"]) == (pid, "1980-02-29", "2")


async def test_xml_bodies_get_the_json_paths_validation(
        xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    r = await xml.post("/Patient", content=to_xml({"resourceType": "Patient",
                                                   "gender": "robot"}), headers=SEND_XML)
    assert r.status_code == 422
    assert read(r, fhir_schema)["issue"][0]["expression"] == ["Patient.gender"]


async def test_a_body_of_another_type_than_the_url_is_refused_in_xml(
        xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    r = await xml.post("/Patient", content=to_xml({"resourceType": "Slot", "status": "free"}),
                       headers=SEND_XML)
    assert r.status_code in (400, 422)
    assert read(r, fhir_schema)["resourceType"] == "OperationOutcome"


# -- refusals --------------------------------------------------------------------------------
async def test_malformed_xml_is_a_400_outcome_in_xml(xml: httpx.AsyncClient,
                                                     fhir_schema: SchemaValidator) -> None:
    r = await xml.post("/Patient", content=b'<Patient xmlns="http://hl7.org/fhir"><name>',
                       headers=SEND_XML)
    assert r.status_code == 400
    issue = read(r, fhir_schema)["issue"][0]
    assert (issue["code"], "malformed XML" in issue["diagnostics"]) == ("structure", True)


async def test_an_unknown_element_is_a_400_naming_it(xml: httpx.AsyncClient,
                                                     fhir_schema: SchemaValidator) -> None:
    r = await xml.post("/Patient", content=b'<Patient xmlns="http://hl7.org/fhir">'
                       b'<name><nick value="x"/></name></Patient>', headers=SEND_XML)
    assert r.status_code == 400
    assert read(r, fhir_schema)["issue"][0]["expression"] == ["Patient.name[0].nick"]


async def test_entity_expansion_is_refused_quickly_and_the_server_keeps_serving(
        xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    entities = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 10))
    bomb = (f'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e0 "ha">{entities}]>'
            '<Patient xmlns="http://hl7.org/fhir"><name><family value="&e9;"/></name>'
            "</Patient>").encode()
    began = time.monotonic()
    r = await xml.post("/Patient", content=bomb, headers=SEND_XML)
    assert time.monotonic() - began < 5
    assert r.status_code == 400
    assert "DTDs and entity declarations" in read(r, fhir_schema)["issue"][0]["diagnostics"]
    assert (await xml.get("/metadata")).status_code == 200


async def test_errors_answer_in_the_format_asked_for(xml: httpx.AsyncClient,
                                                     fhir_schema: SchemaValidator) -> None:
    unknown_type = await xml.get("/Widget/1")
    missing = await xml.get(f"/Patient/{uuid.uuid4().hex}")
    wrong_method = await xml.delete("/metadata")
    assert [r.status_code for r in (unknown_type, missing, wrong_method)] == [404, 404, 405]
    for r in (unknown_type, missing, wrong_method):
        assert read(r, fhir_schema)["resourceType"] == "OperationOutcome"


# -- Bundles and operations ------------------------------------------------------------------
async def test_transaction_in_xml_answers_an_xml_transaction_response(
        fhir: httpx.AsyncClient, xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": patient_url,
         "resource": {"resourceType": "Patient", "identifier": [ident()]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                      "subject": {"reference": patient_url}},
         "request": {"method": "POST", "url": "ServiceRequest"}}]}
    r = await xml.post("/", content=to_xml(tx), headers=SEND_XML)
    assert r.status_code == 200, r.text
    doc = read(r, fhir_schema)
    assert doc["type"] == "transaction-response"
    assert [e["response"]["status"] for e in doc["entry"]] == ["201 Created"] * 2
    patient_loc, request_loc = (e["response"]["location"] for e in doc["entry"])
    sr = (await fhir.get("/" + request_loc.split("/fhir/", 1)[-1].rsplit("/_history", 1)[0]))
    assert sr.json()["subject"]["reference"] in patient_loc


async def test_batch_in_xml_carries_a_failed_entrys_outcome_as_a_wrapped_resource(
        xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [ident()]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "robot"},
         "request": {"method": "POST", "url": "Patient"}}]}
    r = await xml.post("/", content=to_xml(batch), headers=SEND_XML)
    assert r.status_code == 200
    assert b"<outcome><OperationOutcome>" in r.content
    doc = read(r, fhir_schema)
    assert doc["type"] == "batch-response"
    assert doc["entry"][0]["response"]["status"].startswith("201")
    assert doc["entry"][1]["response"]["status"].startswith("422")
    assert doc["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"


async def test_find_hold_and_book_in_xml(fhir: httpx.AsyncClient, xml: httpx.AsyncClient,
                                         fhir_schema: SchemaValidator) -> None:
    cal = await practitioner_calendar(fhir)
    found = read(await xml.get("/Appointment/$find", params={
        **WINDOW, "specialty": cal.specialty, "_count": "2"}), fhir_schema)
    assert found["type"] == "searchset"
    option = found["entry"][0]["resource"]
    assert option["resourceType"] == "Appointment"

    held = await xml.post("/Appointment/$hold", headers=SEND_XML,
                          content=to_xml(parameters(("appt-resource", option))))
    assert held.status_code == 200, held.text
    hold = read(held, fhir_schema)["entry"][0]["resource"]
    assert hold["start"] == option["start"]
    assert "expires" in held.headers

    booked = await xml.post(f"/Appointment/{hold['id']}/$book", headers=SEND_XML,
                            content=to_xml({"resourceType": "Parameters"}))
    assert booked.status_code == 200, booked.text
    appointment = read(booked, fhir_schema)["entry"][0]["resource"]
    assert (appointment["status"], appointment["start"]) == ("booked", option["start"])
    stored = (await fhir.get(f"/Appointment/{appointment['id']}")).json()
    assert stored["status"] == "booked"


async def test_an_operation_with_a_malformed_xml_parameters_body_is_a_400(
        xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    r = await xml.post("/Appointment/$find", headers=SEND_XML,
                       content=b'<Parameters xmlns="http://hl7.org/fhir"><parameter>'
                       b'<name value="start"/><valueDateTime value="2031-05-05"/>'
                       b'<valueDateTime value="2031-05-06"/></parameter></Parameters>')
    assert r.status_code == 400
    assert "only once" in read(r, fhir_schema)["issue"][0]["diagnostics"]


async def test_a_narrative_the_json_door_took_is_still_answered_in_xml(
        fhir: httpx.AsyncClient, xml: httpx.AsyncClient, fhir_schema: SchemaValidator) -> None:
    pid = await created(fhir, {"resourceType": "Patient", "identifier": [ident()],
                               "text": {"status": "generated", "div": (
                                   '<div xmlns="http://www.w3.org/1999/xhtml">a&#160;b</div>')}})
    r = await xml.get(f"/Patient/{pid}")
    assert r.status_code == 200
    assert read(r, fhir_schema)["text"]["div"] == (
        '<div xmlns="http://www.w3.org/1999/xhtml">a\u00a0b</div>')
