"""Outbound SIU built from an Appointment: the trigger from the change, the structure from the
version (TQ1 from 2.5, SCH-11 before), hl7apy reads every version, and our inbound mapping
reads back the same status, times and identifiers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hl7apy.core import Message as HlMessage
from hl7apy.parser import parse_message

from fhir_sched.hl7v2 import er7, siu
from fhir_sched.hl7v2.build import Envelope, build, event_for
from fhir_sched.hl7v2.endpoints import VERSIONS, subscriber
from fhir_sched.hl7v2.senders import Senders

APPT: dict[str, Any] = {
    "resourceType": "Appointment", "id": "a1", "status": "booked",
    "start": "2037-03-02T09:00:00-05:00", "end": "2037-03-02T09:30:00-05:00",
    "serviceType": [{"coding": [{"code": "OFFICE", "display": "Office visit"}]}],
    "comment": "bring the letter | and ^ the card",
    "participant": [
        {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
        {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"},
        {"actor": {"reference": "Location/r1"}, "status": "accepted"},
    ],
}
RESOURCES = {
    "Patient/p1": {"resourceType": "Patient", "id": "p1", "identifier": [
        {"system": "urn:oid:1.2.3", "value": "MRN1"}], "name": [{"family": "Doe",
                                                               "given": ["Zoé"]}],
                   "birthDate": "1980-01-02", "gender": "female"},
    "Practitioner/d1": {"resourceType": "Practitioner", "id": "d1", "identifier": [
        {"value": "NPI9"}], "name": [{"family": "Smith", "given": ["Ann"]}]},
    "Location/r1": {"resourceType": "Location", "id": "r1", "name": "Room 1"},
}


def envelope(version: str) -> Envelope:
    return Envelope("FHIR-SCHED", "CLINIC", "EHR", "NORTH", "123-abcde", "20370101120000+0000",
                    version)


# hl7apy 1.3.5 ships no 2.7.1 tables, and its 2.7 TQ1 definition fails on any TQ1 with a start
# time (a TypeError inside its own structure table); 2.7 and 2.7.1 are read back by our parser.
HL7APY_VERSIONS = [v for v in VERSIONS if v not in ("2.7", "2.7.1")]


@pytest.mark.parametrize("version", HL7APY_VERSIONS)
def test_hl7apy_reads_the_message_in_every_version(version: str) -> None:
    raw = build(APPT, envelope(version), "S12", RESOURCES)
    parsed: HlMessage = parse_message(raw.decode().replace("\r", "\n").strip().replace("\n", "\r"),
                                      find_groups=False)
    assert parsed.msh.msh_9.to_er7().startswith("SIU^S12")
    assert parsed.msh.msh_12.to_er7() == version
    names = [seg.name for seg in parsed.children]
    assert names[:2] == ["MSH", "SCH"]
    assert ("TQ1" in names) == (tuple(int(p) for p in version.split(".")) >= (2, 5))


@pytest.mark.parametrize("version", VERSIONS)
def test_our_inbound_mapping_reads_back_what_was_sent(version: str) -> None:
    raw = build(APPT, envelope(version), "S12", RESOURCES)
    change = siu.map_message(er7.parse(raw), Senders().find("FHIR-SCHED", "CLINIC"))  # type: ignore[arg-type]
    appt = change.appointment
    assert appt["status"] == "booked"
    assert datetime.fromisoformat(appt["start"]) == datetime.fromisoformat(APPT["start"])
    assert datetime.fromisoformat(appt["end"]) == datetime.fromisoformat(APPT["end"])
    assert change.keys[0]["value"] == "a1"
    assert change.patient is not None and change.patient.value == "MRN1"
    assert change.patient.body["name"][0]["given"] == ["Zoé"]
    assert {r.value for r in change.resources} >= {"NPI9"}
    assert appt["comment"] == APPT["comment"]


def test_msa_2_control_id_and_receiver_come_from_the_envelope() -> None:
    header = er7.parse(build(APPT, envelope("2.5.1"), "S12", RESOURCES)).header
    assert header.control_id == "123-abcde"
    assert (header.receiving_application, header.receiving_facility) == ("EHR", "NORTH")


@pytest.mark.parametrize(("old", "new", "event"), [
    (None, APPT, "S12"),
    (APPT, {**APPT, "start": "2037-03-02T10:00:00-05:00"}, "S13"),
    (APPT, {**APPT, "comment": "x"}, "S14"),
    (APPT, {**APPT, "status": "cancelled"}, "S15"),
    (APPT, {**APPT, "status": "noshow"}, "S26"),
    (APPT, {**APPT, "status": "entered-in-error"}, "S17"),
    (APPT, None, "S17"),
])
def test_the_trigger_says_what_changed(old: Any, new: Any, event: str) -> None:
    assert event_for(old, new) == event


def test_a_cancelled_appointment_says_cancelled_in_sch_25() -> None:
    raw = build({**APPT, "status": "cancelled"}, envelope("2.5.1"), "S15", RESOURCES)
    sch = er7.parse(raw).segment("SCH")
    assert sch is not None and sch.get(25) == "Cancelled"


def test_an_endpoint_is_a_subscriber_only_when_active_and_mllp() -> None:
    endpoint = {"resourceType": "Endpoint", "id": "e1", "status": "active",
                "connectionType": {"code": "hl7v2-mllp"}, "address": "mllp://ehr:6661",
                "extension": [
                    {"url": "https://fhir-sched.org/fhir/StructureDefinition/hl7v2-version",
                     "valueCode": "2.3"},
                    {"url": "https://fhir-sched.org/fhir/StructureDefinition/hl7v2-peer",
                     "extension": [{"url": "application", "valueString": "EHR"}]}]}
    sub = subscriber(endpoint)
    assert sub is not None
    assert (sub.host, sub.port, sub.version, sub.application) == ("ehr", 6661, "2.3", "EHR")
    assert sub.sent_it("mllp", "hl7v2/EHR/ANY") and not sub.sent_it("rest", "hl7v2/EHR/ANY")
    assert subscriber({**endpoint, "status": "off"}) is None
    assert subscriber({**endpoint, "connectionType": {"code": "hl7-fhir-rest"}}) is None
