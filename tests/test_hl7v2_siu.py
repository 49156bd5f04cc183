"""SIU -> FHIR: status per trigger (the trigger beats SCH-25), instants with offsets from TQ1,
then SCH-11, then the resource segments, identifiers in the sender's namespace, participants by
identifier, orders, participant deltas and blocked/opened time. Real fixtures are checked
against FHIR-Converter's output (instants as instants; its ids are its own); vendor-style ones
written here against the values the specs give."""

from __future__ import annotations

import json
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fhir_sched.hl7v2 import er7, siu, siu_tables
from fhir_sched.hl7v2.senders import Sender, Senders, load

FIXTURES = Path(__file__).parent / "fixtures" / "siu"
VENDOR = Path(__file__).parent / "fixtures" / "siu-vendor"
REAL = sorted(FIXTURES.glob("*.hl7"))

CONFIG = load(
    """
[[sender]]
application = "EPIC"
timezone = "America/Chicago"
[sender.systems]
patient = "urn:oid:1.2.840.114350.1"
filler = "https://north.example.org/appointment"
[[sender]]
application = "CERNER"
timezone = "America/Chicago"
[[sender]]
application = "ATHENA"
timezone = "America/New_York"
[sender.status]
ARRIVED = "checked-in"
[[sender]]
application = "MEDITECH"
timezone = "Europe/London"
""",
    environ={},
)


def expected_for(path: Path) -> Path:
    """FHIR-Converter_S12_1.hl7 -> expected/FHIR-Converter_SIU-S12-01-expected.json"""
    trig, n = path.stem.split("_")[1:]
    return FIXTURES / "expected" / f"FHIR-Converter_SIU-{trig}-{int(n):02d}-expected.json"


CONVERTED = [p for p in REAL if p.name.startswith("FHIR-Converter") and expected_for(p).exists()]


def change(path: Path, senders: Senders = CONFIG) -> siu.SiuChange:
    msg = er7.parse(path.read_bytes())
    sender = senders.find(msg.header.sending_application, msg.header.sending_facility)
    assert sender is not None
    return siu.map_message(msg, sender)


def vendor(name: str) -> siu.SiuChange:
    return change(VENDOR / name)


def same_instant(a: str, b: str) -> bool:
    return datetime.fromisoformat(a) == datetime.fromisoformat(b)


def converted(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    bundle = json.loads(expected_for(path).read_text(encoding="utf-8"))
    by_ref = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle["entry"]
    }
    appt = next(r for r in by_ref.values() if r["resourceType"] == "Appointment")
    return appt, by_ref


def ident(appt: dict[str, Any], code: str) -> str | None:
    return next(
        (i["value"] for i in appt.get("identifier", []) if i["type"]["coding"][0]["code"] == code),
        None,
    )


# --- real fixtures ----------------------------------------------------------------------------

TRIGGER_WINS = {
    "S12": "booked",
    "S13": "booked",
    "S14": "booked",
    "S15": "cancelled",
    "S16": "cancelled",
    "S17": "entered-in-error",
    "S26": "noshow",
}


@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_every_real_fixture_maps_with_the_status_its_trigger_decides(path: Path) -> None:
    c = change(path)
    assert c.kind == "appointment"
    assert c.appointment["status"] == TRIGGER_WINS[c.trigger]
    assert c.appointment["start"] and c.appointment["end"]
    assert c.warnings == []


@pytest.mark.parametrize("trigger", ["S15", "S17", "S26"])
def test_french_cancel_delete_noshow_ignore_sch25_booked(trigger: str) -> None:
    path = FIXTURES / f"hl7-object-parser_{trigger}_1.hl7"
    assert er7.parse(path.read_bytes()).segment("SCH").get(25) == "Booked"  # type: ignore[union-attr]
    assert change(path).appointment["status"] == TRIGGER_WINS[trigger]


def test_french_times_without_offset_are_read_in_the_senders_zone() -> None:
    paris = load('[[sender]]\napplication = "mllp_http_proxy"\ntimezone = "Europe/Paris"\n', {})
    c = change(FIXTURES / "hl7-object-parser_S12_1.hl7", paris)
    assert c.appointment["start"] == "2016-12-31T11:00:00+01:00"
    assert c.appointment["end"] == "2016-12-31T11:30:00+01:00"  # SCH-11.3 duration 30
    utc = change(FIXTURES / "hl7-object-parser_S12_1.hl7", Senders())
    assert utc.appointment["start"] == "2016-12-31T11:00:00+00:00"


def test_french_fixture_has_only_a_filler_id_and_an_accented_patient() -> None:
    c = change(FIXTURES / "hl7-object-parser_S12_1.hl7")
    assert ident(c.appointment, "FILL") == "49849903800" and ident(c.appointment, "PLAC") is None
    assert c.keys[0]["value"] == "49849903800"
    assert c.patient is not None and c.patient.value == "123456"
    assert c.patient.body["name"][0]["family"] == "DO BAIRRO"


@pytest.mark.parametrize("path", CONVERTED, ids=[p.name for p in CONVERTED])
def test_status_and_instants_match_fhir_converter(path: Path) -> None:
    theirs, _ = converted(path)
    ours = change(path).appointment
    assert ours["status"] == theirs["status"]
    assert same_instant(ours["start"], theirs["start"])
    assert same_instant(ours["end"], theirs["end"])


@pytest.mark.parametrize("path", CONVERTED, ids=[p.name for p in CONVERTED])
def test_identifiers_match_fhir_converter(path: Path) -> None:
    theirs, _ = converted(path)
    c = change(path)
    for code in ("PLAC", "FILL"):
        assert ident(c.appointment, code) == ident(theirs, code)
    assert c.keys[0]["type"]["coding"][0]["code"] == "FILL"  # upsert by filler id first
    for i in c.appointment["identifier"]:
        assert i["type"]["coding"][0]["system"] == siu_tables.V2_0203


@pytest.mark.parametrize("path", CONVERTED, ids=[p.name for p in CONVERTED])
def test_participants_match_fhir_converter(path: Path) -> None:
    theirs, by_ref = converted(path)
    c = change(path)
    ours = c.appointment["participant"]
    for part in theirs["participant"]:
        target = by_ref[part["actor"]["reference"]]
        kind = target["resourceType"]
        if kind == "Location":
            values = [target["name"]]
        else:
            values = [i["value"] for i in target.get("identifier", [])]
        match = [
            p
            for p in ours
            if p["actor"]["type"] == kind
            and p["actor"].get("identifier", {}).get("value") in values
        ]
        assert match, (kind, values)
        assert match[0]["status"] == part["status"], (kind, values)


def test_converter_s12_creates_practitioner_location_device_when_unknown() -> None:
    c = change(FIXTURES / "FHIR-Converter_S12_1.hl7")
    bodies = {(r.resource_type, r.value): r.body for r in c.resources}
    assert bodies[("Practitioner", "1210")]["name"][0]["family"] == "GE"
    assert bodies[("Location", "055")]["name"] == "Room01 GH Clinic"
    assert bodies[("Device", "5001")]["deviceName"][0]["name"] == "EVIS X12 Video Colonoscope"
    assert bodies[("Patient", "PATID1234")]["birthDate"] == "1988-08-18"


def test_converter_s12_keeps_the_codes_it_was_sent() -> None:
    a = change(FIXTURES / "FHIR-Converter_S12_1.hl7").appointment
    source = {e["url"]: e["valueString"] for e in a["extension"][0]["extension"]}
    assert a["extension"][0]["url"] == siu_tables.HL7V2_SOURCE
    assert source["trigger"] == "S12" and source["fillerStatus"] == "Booked"
    assert source["timingSource"] == "TQ1" and source["start"] == "20210924093000+0215"
    assert a["serviceType"][0]["coding"][0] == {
        "code": "76164006",
        "system": "http://snomed.info/sct",
        "display": "Biopsy of colon (procedure)",
    }
    assert a["reasonCode"][0]["coding"][0]["code"] == "EMERGENCY"
    assert a["appointmentType"]["coding"][0]["code"] == "Normal"  # SCH-8, not SCH-7
    assert a["priority"] == 2
    assert a["comment"] == "Appointment booked for emergency procedure"


# --- vendor-style fixtures --------------------------------------------------------------------


def test_v23_sch11_only_local_times_take_the_senders_zone_across_dst() -> None:
    a = vendor("epic-cadence_S12_v23.hl7").appointment
    assert a["start"] == "2026-03-10T14:30:00-05:00"  # CDT: DST began 2026-03-08
    assert a["end"] == "2026-03-10T15:00:00-05:00"
    assert a["minutesDuration"] == 30


def test_epic_z_segment_does_not_steal_the_sch_note_and_escapes_are_read() -> None:
    c = vendor("epic-cadence_S12_v23.hl7")
    assert c.appointment["comment"] == "Bring your medication list\nand insurance card"
    assert c.patient is not None and c.patient.body["name"][0]["family"] == "Smith^Jones"


def test_identifiers_use_the_senders_namespaces() -> None:
    c = vendor("epic-cadence_S12_v23.hl7")
    fill = next(i for i in c.appointment["identifier"] if i["value"] == "FL2001")
    assert fill["system"] == "https://north.example.org/appointment"
    plac = next(i for i in c.appointment["identifier"] if i["value"] == "PL1001")
    assert plac["system"] == "urn:fhir-sched:hl7v2:EPIC:any:placer"
    assert c.patient is not None and c.patient.system == "urn:oid:1.2.840.114350.1"
    assert c.patient.value == "E12345"  # the MR, not the SSN repetition


def test_pv1_attending_and_aip_are_one_practitioner_participant() -> None:
    parts = vendor("epic-cadence_S12_v23.hl7").appointment["participant"]
    docs = [p for p in parts if p["actor"]["type"] == "Practitioner"]
    assert len(docs) == 1 and docs[0]["actor"]["identifier"]["value"] == "1234"
    assert docs[0]["type"][0]["coding"][0]["code"] == "ATND"


def test_tq1_beats_a_stale_sch11_and_keeps_its_offset() -> None:
    c = vendor("cerner_S13_v251_tq1.hl7")
    assert c.appointment["start"] == "2026-04-02T10:00:00-05:00"
    assert c.appointment["end"] == "2026-04-02T10:45:00-05:00"
    assert c.appointment["priority"] == 3


def test_latin1_declared_names_and_npi_oid() -> None:
    c = vendor("cerner_S13_v251_tq1.hl7")
    assert c.patient is not None and c.patient.display == "Hélène Dupré"
    doc = next(r for r in c.resources if r.resource_type == "Practitioner")
    assert doc.system == "urn:oid:2.16.840.1.113883.4.6" and doc.value == "NPI77"


def test_aig_provider_username_is_a_practitioner_and_equipment_a_device() -> None:
    c = vendor("athena_S14_v231_aig.hl7")
    by_type = {r.resource_type: r for r in c.resources}
    assert by_type["Practitioner"].value == "jdoe"
    assert by_type["Device"].value == "US-2"
    assert c.appointment["start"] == "2026-05-06T08:30:00-04:00"  # AIG-8, New York EDT
    assert c.appointment["end"] == "2026-05-06T09:15:00-04:00"  # + AIG-11 45 MINUTES


def test_the_senders_status_map_decides_sch25_on_s14() -> None:
    assert vendor("athena_S14_v231_aig.hl7").appointment["status"] == "checked-in"
    plain = change(VENDOR / "athena_S14_v231_aig.hl7", Senders())
    assert plain.appointment["status"] == "arrived"  # the default table


def test_filler_only_cancel_is_keyed_by_the_filler_id() -> None:
    c = vendor("meditech_S15_v24_filler_only.hl7")
    assert c.appointment["status"] == "cancelled"  # SCH-25 says Booked
    assert [k["value"] for k in c.keys] == ["MT77"]
    assert c.appointment["cancelationReason"]["coding"][0]["code"] == "PTREQ"
    assert c.appointment["start"] == "2026-06-15T09:15:00+01:00"  # BST


def test_orders_become_service_requests_and_based_on() -> None:
    c = vendor("meditech_S15_v24_filler_only.hl7")
    assert [i["value"] for i in c.service_requests[0]["identifier"]] == ["ORD555", "F-ORD555"]
    assert c.service_requests[0]["subject"]["identifier"]["value"] == "M00991"
    assert c.appointment["basedOn"][0]["identifier"]["value"] == "F-ORD555"


def test_windows_1252_note_reads_its_apostrophe() -> None:
    assert vendor("meditech_S15_v24_filler_only.hl7").appointment["comment"] == (
        "Patient\u2019s daughter called to cancel"
    )


def test_s16_discontinue_is_cancelled_with_its_reason() -> None:
    a = vendor("epic_S16_v251_discontinue.hl7").appointment
    assert a["status"] == "cancelled"
    assert a["cancelationReason"]["text"] == "Series discontinued"


@pytest.mark.parametrize(
    ("trigger", "action", "segment", "value"),
    [
        ("S18", "add", "AIP", "NPI88"),
        ("S19", "modify", "AIL", "CARD2"),
        ("S20", "cancel", "AIP", "NPI88"),
        ("S21", "discontinue", "AIG", "ECHO-1"),
        ("S22", "delete", "AIS", None),
    ],
)
def test_s18_to_s22_are_participant_deltas(
    trigger: str, action: str, segment: str, value: str | None
) -> None:
    c = vendor(f"cerner_{trigger}_v251_delta.hl7")
    assert c.kind == "participants"
    assert set(c.appointment) == {"resourceType", "identifier"}  # the key, not a whole appointment
    assert [k["value"] for k in c.keys] == ["CFL88", "CPL77"]
    [delta] = c.deltas
    assert (delta.action, delta.segment) == (action, segment)
    if value is None:
        assert delta.resource is None and delta.service_type is not None
        assert delta.service_type["coding"][0]["code"] == "93306"
    else:
        assert delta.resource is not None and delta.resource.value == value
        assert delta.participant is not None
        assert delta.participant["actor"]["identifier"]["value"] == value


def test_s20_cancelled_participant_is_declined() -> None:
    [delta] = vendor("cerner_S20_v251_delta.hl7").deltas
    assert delta.segment_action == "delete"
    assert delta.participant is not None and delta.participant["status"] == "declined"


def test_s23_blocks_a_practitioners_time_in_the_senders_zone() -> None:
    c = vendor("meditech_S23_v25_block.hl7")
    assert c.kind == "block"
    [block] = c.blocks
    assert block.kind == "blocked" and block.reason == "Lunch break"
    assert block.resource is not None and block.resource.value == "D4455"
    assert (block.start, block.end) == ("2026-08-03T12:00:00+01:00", "2026-08-03T13:00:00+01:00")
    assert block.schedule is not None and block.schedule["coding"][0]["code"] == "DRSMITH-SCHED"


def test_s24_opens_a_rooms_time_from_its_own_start_and_duration() -> None:
    [block] = vendor("meditech_S24_v25_open.hl7").blocks
    assert block.kind == "opened" and block.resource is not None
    assert block.resource.resource_type == "Location" and block.resource.value == "RAD"
    assert (block.start, block.end) == ("2026-08-04T17:00:00+01:00", "2026-08-04T19:00:00+01:00")


# --- refusals ---------------------------------------------------------------------------------

MSH = r"MSH|^~\&|APP|FAC|RCV|RFAC|20260101120000||{type}|C1|P|2.5.1"


def sch(**fields: str) -> str:
    """An SCH segment from numbered fields: sch(f1="P1", f11="^^^2026...")."""
    values = {int(k[1:]): v for k, v in fields.items()}
    return "SCH|" + "|".join(values.get(i, "") for i in range(1, max(values) + 1))


def mapped(msg_type: str, *segments: str, sender: Sender | None = None) -> siu.SiuChange:
    raw = "\r".join([MSH.format(type=msg_type), *segments]) + "\r"
    return siu.map_message(er7.parse(raw.encode()), sender or Sender("APP", "FAC"))


@pytest.mark.parametrize("trigger", ["S25", "S27", "S01", "A01"])
def test_unsupported_triggers_raise_201(trigger: str) -> None:
    with pytest.raises(er7.Er7Error) as caught:
        mapped(f"SIU^{trigger}", "SCH|P1|F1")
    assert caught.value.code == 201 and caught.value.field == 9


def test_a_non_siu_message_raises_200() -> None:
    with pytest.raises(er7.Er7Error) as caught:
        mapped("ADT^A01", "PID|1||1")
    assert caught.value.code == 200


def test_an_event_the_sender_may_not_send_raises_201() -> None:
    only_new = Sender("APP", "FAC", events=frozenset({"S12"}))
    with pytest.raises(er7.Er7Error, match="not allowed") as caught:
        mapped("SIU^S15", "SCH|P1|F1", sender=only_new)
    assert caught.value.code == 201


def test_no_sch_or_no_id_raises_101() -> None:
    with pytest.raises(er7.Er7Error) as no_sch:
        mapped("SIU^S12", "PID|1||1")
    assert (no_sch.value.code, no_sch.value.segment) == (101, "SCH")
    with pytest.raises(er7.Er7Error) as no_id:
        mapped("SIU^S14", sch(f11="^^^20260101100000"))
    assert (no_id.value.code, no_id.value.field) == (101, 1)


def test_an_unknown_filler_status_warns_and_books() -> None:
    c = mapped("SIU^S12", sch(f1="P1", f2="F1", f11="^^^20260101100000+0000", f25="Wobbly"))
    assert c.appointment["status"] == "booked"
    assert c.appointment["start"] == "2026-01-01T10:00:00+00:00"
    assert [w for w in c.warnings if "Wobbly" in w] == c.warnings


def test_resource_start_plus_offset_and_duration_when_no_tq1_or_sch11() -> None:
    c = mapped("SIU^S12", "SCH|P1|F1", "AIS|1||X^Visit|20260101100000+0100|15|MIN|30|MIN")
    assert c.appointment["start"] == "2026-01-01T10:15:00+01:00"
    assert c.appointment["end"] == "2026-01-01T10:45:00+01:00"


@pytest.mark.parametrize(
    ("segment", "where"),
    [
        ("TQ1|1||||||tomorrow", ("TQ1", 7)),
        ("TQ1|1||||||20260101100000|20261301", ("TQ1", 8)),
        ("AIL|1||R1|||20260230100000", ("AIL", 6)),
        ("TQ1|1||||||20260101100000+2500", ("TQ1", 7)),
    ],
)
def test_an_unreadable_time_raises_102_naming_the_field(
    segment: str, where: tuple[str, int]
) -> None:
    with pytest.raises(er7.Er7Error) as caught:
        mapped("SIU^S12", "SCH|P1|F1", segment)
    assert caught.value.code == 102
    assert (caught.value.segment, caught.value.field) == where


def test_sch11_unreadable_start_names_its_component() -> None:
    with pytest.raises(er7.Er7Error, match=r"SCH-11\.4") as caught:
        mapped("SIU^S12", sch(f1="P1", f2="F1", f11="^^^notatime"))
    assert (caught.value.code, caught.value.field) == (102, 11)


def test_absurd_durations_are_ignored_not_overflowed() -> None:
    c = mapped("SIU^S12", sch(f1="P1", f2="F1", f11="^^H99999999^99991231230000+0000"))
    assert c.appointment["start"] == "9999-12-31T23:00:00+00:00" and "end" not in c.appointment


def test_mangled_fixtures_raise_only_er7error() -> None:
    """Seeded byte mutations of every fixture: each either maps or raises Er7Error (an ACK
    with ERR), never anything else."""
    rng = random.Random(11)
    files = [p.read_bytes() for p in (*REAL, *sorted(VENDOR.glob("*.hl7")))]
    alphabet = b'|^~\\&\r\n"0123456789+-.MSHSCTQ1AIGLP xX\xc3\xa9\x92'
    outcomes = {"mapped": 0, "refused": 0}
    for _ in range(1500):
        data = bytearray(rng.choice(files))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data))
            op = rng.random()
            if op < 0.4:
                data[pos] = rng.choice(alphabet)
            elif op < 0.7:
                del data[pos : pos + rng.randint(1, 10)]
            else:
                data[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        try:
            msg = er7.parse(bytes(data))
            siu.map_message(msg, Sender("A", "F", timezone="America/New_York"))
            outcomes["mapped"] += 1
        except er7.Er7Error as e:
            assert 100 <= e.code <= 207
            outcomes["refused"] += 1
    assert outcomes["mapped"] > 100 and outcomes["refused"] > 10


def test_free_text_reason_is_text_not_a_code() -> None:
    a = vendor("athena_S14_v231_aig.hl7").appointment
    assert a["reasonCode"] == [{"text": "Annual physical"}]
