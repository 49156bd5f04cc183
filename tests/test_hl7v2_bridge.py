"""The inbound bridge against a real store (both adapters): every fixture applied as mapped,
idempotency with the ACK in the same commit, per-appointment order, participant deltas, blocked
time the booking guard honours, the calendar of record, refusals and the dead-letter list.

The sample files carry past dates (2016-2026), so their senders are configured as calendars
of record, as an EHR feeding its own calendar would be; bookings from them are recorded (with a
``past`` flag) instead of refused. Ordinary senders are tested with messages built here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_sched.compose import Core, build
from fhir_sched.context import RequestContext
from fhir_sched.errors import FhirError
from fhir_sched.hl7v2 import er7, inbox, siu
from fhir_sched.hl7v2.bridge import Bridge
from fhir_sched.hl7v2.senders import Senders, load
from fhir_sched.settings import Settings
from fhir_sched.storage.base import InboundEntry
from tests.support.scheduling import hours, schedule, template
from tests.support.server import cleanup_dir, store_url

FIXTURES = Path(__file__).parent / "fixtures" / "siu"
VENDOR = Path(__file__).parent / "fixtures" / "siu-vendor"
STANDALONE = [p for p in sorted(FIXTURES.glob("*.hl7")) + sorted(VENDOR.glob("*.hl7"))
              if "_delta" not in p.name]
DELTAS = sorted(VENDOR.glob("cerner_S*_delta.hl7"))
FLAG = "https://fhir-sched.org/fhir/StructureDefinition/booking-flag"

RECORD_SENDERS = load("""
[[sender]]
application = "EPIC"
timezone = "America/Chicago"
calendar_of_record = true
[[sender]]
application = "CERNER"
timezone = "America/Chicago"
calendar_of_record = true
[[sender]]
application = "ATHENA"
timezone = "America/New_York"
calendar_of_record = true
[sender.status]
ARRIVED = "checked-in"
[[sender]]
application = "MEDITECH"
timezone = "Europe/London"
calendar_of_record = true
[[sender]]
application = "SCHApp"
calendar_of_record = true
[[sender]]
application = "ADTApp"
calendar_of_record = true
[[sender]]
application = "mllp_http_proxy"
timezone = "Europe/Paris"
calendar_of_record = true
[[sender]]
application = "OWNER"
calendar_of_record = true
[[sender]]
application = "LIMITED"
events = ["S12"]
""", environ={})
REFUSING = load('refuse_unknown_senders = true\n[[sender]]\napplication = "CLINIC"\n', {})


@pytest.fixture
async def core(store_kind: str, mongo_uri: str | None) -> AsyncIterator[Core]:
    url = store_url(store_kind, mongo_uri, "hl7v2_bridge")
    c = build(Settings(store=url))
    await c.start()
    try:
        yield c
    finally:
        await c.close()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def bridge(core: Core, senders: Senders = RECORD_SENDERS) -> Bridge:
    return Bridge(core.services, senders)


def msa(ack: bytes) -> list[str]:
    line = next(s for s in ack.split(b"\r") if s.startswith(b"MSA"))
    return line.decode("latin-1").split(line.decode("latin-1")[3])


def err(ack: bytes) -> str:
    return next((s.decode("latin-1") for s in ack.split(b"\r") if s.startswith(b"ERR")), "")


def s12(n: int, *, app: str = "CLINIC", control: str | None = None, trigger: str = "S12",
        msh7: str = "20370101120000", start: str = "20370302090000+0000",
        end: str = "20370302093000+0000", placer: bool = True, doctor: str = "9001",
        extra_msh: str = "") -> bytes:
    sch1 = f"P{n}^{app}" if placer else ""
    segments = [
        f"MSH|^~\\&|{app}|NORTH|FHIRSCHED|HOSP|{msh7}||SIU^{trigger}^SIU_S12|"
        f"{control or f'{trigger}-{n}'}|P|2.5.1{extra_msh}",
        f"SCH|{sch1}|F{n}^{app}|||||ROUTINE^Routine||30|min|||||||||||||||Booked",
        f"TQ1|1||||||{start}|{end}",
        f"PID|1||MRN{n}^^^{app}^MR||Doe^Jane||19800101|F",
        "RGS|1",
        f"AIP|1||{doctor}^Smith^Ann^^^Dr|||{start}|||30|min",
    ]
    return ("\r".join(segments) + "\r").encode()


async def find(core: Core, type_: str, token: str) -> list[dict[str, Any]]:
    _, page = await core.services.search.search(
        RequestContext(), type_, [("identifier", token)], strict=True, base_url="")
    return [orjson.loads(body) for _id, body in page.rows]


async def appointment_by_filler(core: Core, system: str, value: str) -> dict[str, Any]:
    found = await find(core, "Appointment", f"{system}|{value}")
    assert len(found) == 1, found
    return found[0]


def same_instant(a: str, b: str) -> bool:
    return datetime.fromisoformat(a) == datetime.fromisoformat(b)


def mapped(raw: bytes) -> siu.SiuChange:
    message = er7.parse(raw)
    sender = RECORD_SENDERS.find(message.header.sending_application,
                                 message.header.sending_facility)
    assert sender is not None
    return siu.map_message(message, sender)


async def kept(core: Core, key_suffix: str) -> InboundEntry:
    entries = await inbox.messages(core.services.store, limit=1000)
    return next(e for e in entries if e.key.endswith(key_suffix))


# --- every fixture ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", STANDALONE, ids=[p.name for p in STANDALONE])
async def test_every_fixture_is_acked_aa_and_stored_as_mapped(core: Core, path: Path) -> None:
    raw = path.read_bytes()
    ack = await bridge(core).handle(raw, "test")
    change = mapped(raw)
    assert msa(ack)[1] in ("AA", "CA"), err(ack)
    assert msa(ack)[2] == er7.parse(raw).header.control_id
    if change.kind != "appointment":
        return  # blocks: see the block tests
    key = change.keys[0]
    stored = await appointment_by_filler(core, key["system"], key["value"])
    assert stored["status"] == change.appointment["status"]
    assert same_instant(stored["start"], change.appointment["start"])
    assert same_instant(stored["end"], change.appointment["end"])
    for ident in change.keys:
        assert ident in stored["identifier"]
    for want in change.appointment.get("participant", []):
        actor = want["actor"]
        ident = actor.get("identifier")
        if not ident or actor["type"] not in ("Patient", "Practitioner", "Location"):
            continue
        have = next(p["actor"] for p in stored["participant"]
                    if p["actor"].get("identifier") == ident)
        type_, id_ = have["reference"].split("/")
        assert type_ == actor["type"]
        rec = await core.store.get(type_, id_)
        assert rec is not None and rec.body is not None
        assert ident in orjson.loads(rec.body)["identifier"]


async def test_a_fixture_patient_is_created_once_and_reused(core: Core) -> None:
    b = bridge(core)
    raw = (FIXTURES / "FHIR-Converter_S12_1.hl7").read_bytes()
    await b.handle(raw, "test")
    await b.handle(raw.replace(b"MSG00012", b"MSG00099").replace(b"12345|36996",
                                                                  b"12346|36997"), "test")
    patient = mapped(raw).patient
    assert patient is not None
    assert len(await find(core, "Patient", f"{patient.system}|{patient.value}")) == 1


# --- idempotency --------------------------------------------------------------------------------


async def test_a_replay_gets_the_stored_ack_byte_for_byte_and_changes_nothing(core: Core) -> None:
    b = bridge(core)
    first = await b.handle(s12(1), "test")
    head = await core.store.last_position()
    again = await b.handle(s12(1), "test")
    assert again == first
    assert await core.store.last_position() == head


async def test_a_resend_with_a_new_msh7_is_still_the_same_message(core: Core) -> None:
    b = bridge(core)
    first = await b.handle(s12(1), "test")
    again = await b.handle(s12(1, msh7="20370101120500"), "test")
    assert again == first


async def test_concurrent_copies_of_one_message_apply_once(core: Core) -> None:
    b = bridge(core)
    acks = await asyncio.gather(*(b.handle(s12(2), f"peer{i}") for i in range(8)))
    assert {msa(a)[1] for a in acks} == {"AA"}
    assert len(set(acks)) == 1
    assert len(await find(core, "Appointment", "urn:fhir-sched:hl7v2:CLINIC:NORTH:filler|F2")) == 1


async def test_a_control_id_reused_for_another_message_is_ae_205_and_not_applied(
        core: Core) -> None:
    b = bridge(core)
    await b.handle(s12(3, control="SAME"), "test")
    other = await b.handle(s12(4, control="SAME"), "test")
    assert msa(other)[1] == "AE"
    assert "|205^" in err(other)
    assert await find(core, "Appointment", "urn:fhir-sched:hl7v2:CLINIC:NORTH:filler|F4") == []


# --- order --------------------------------------------------------------------------------------


async def test_a_stale_update_is_acked_recorded_and_not_applied(core: Core) -> None:
    b = bridge(core)
    await b.handle(s12(5), "test")
    newer = s12(5, trigger="S14", msh7="20370101130000", start="20370302100000+0000",
                end="20370302103000+0000")
    older = s12(5, trigger="S13", msh7="20370101125000", start="20370302110000+0000",
                end="20370302113000+0000")
    assert msa(await b.handle(newer, "test"))[1] == "AA"
    ack = await b.handle(older, "test")
    assert msa(ack)[1] == "AA"
    stored = await appointment_by_filler(core, "urn:fhir-sched:hl7v2:CLINIC:NORTH:filler", "F5")
    assert same_instant(stored["start"], "2037-03-02T10:00:00+00:00")
    assert (await kept(core, "/S13-5")).outcome == "stale"


async def test_an_update_without_sch1_finds_the_appointment_by_its_filler_id(
        core: Core) -> None:
    b = bridge(core)
    await b.handle(s12(6), "test")
    moved = s12(6, trigger="S14", msh7="20370101130000", placer=False,
                start="20370302100000+0000", end="20370302103000+0000")
    assert msa(await b.handle(moved, "test"))[1] == "AA"
    found = await find(core, "Appointment", "urn:fhir-sched:hl7v2:CLINIC:NORTH:filler|F6")
    assert len(found) == 1
    assert same_instant(found[0]["start"], "2037-03-02T10:00:00+00:00")
    placer = [i for i in found[0]["identifier"] if i["value"] == "P6"]
    assert placer, "the placer id learnt from the S12 is kept"


async def test_a_cancel_for_an_unknown_appointment_records_it_cancelled(core: Core) -> None:
    ack = await bridge(core).handle(s12(7, trigger="S15"), "test")
    assert msa(ack)[1] == "AA"
    stored = await appointment_by_filler(core, "urn:fhir-sched:hl7v2:CLINIC:NORTH:filler", "F7")
    assert stored["status"] == "cancelled"


# --- participant deltas ---------------------------------------------------------------------


async def test_s18_to_s22_change_one_resource_each_on_the_stored_appointment(
        core: Core) -> None:
    b = bridge(core)
    assert msa(await b.handle((VENDOR / "cerner_S13_v251_tq1.hl7").read_bytes(), "t"))[1] in (
        "AA", "CA")
    seen = []
    for path in DELTAS:
        ack = await b.handle(path.read_bytes(), "t")
        assert msa(ack)[1] == "AA", (path.name, err(ack))
        key = mapped(path.read_bytes()).keys[0]
        stored = await appointment_by_filler(core, key["system"], key["value"])
        seen.append({p["actor"].get("identifier", {}).get("value") for p in stored["participant"]})
    s18, s19, s20, s21, _s22 = seen
    assert "NPI88" in s18 and "NPI88" not in seen[-1]  # Dr House added by S18, gone by S20
    assert "CARD2" in s19  # S19 changed the room
    assert "NPI88" not in s20
    assert "ECHO-1" in s20 and "ECHO-1" not in s21  # S21 discontinued the echo machine


async def test_a_delta_for_an_unknown_appointment_is_ae_204(core: Core) -> None:
    ack = await bridge(core).handle((VENDOR / "cerner_S18_v251_delta.hl7").read_bytes(), "t")
    assert msa(ack)[1] == "AE"
    assert "|204^" in err(ack)


# --- blocked time -----------------------------------------------------------------------------


async def calendar_doctor(core: Core, npi: str) -> str:
    """A practitioner with identifier ``npi`` in CLINIC's namespace and Tuesday hours."""
    ctx = RequestContext()
    res = core.services.resources
    pid = f"dr-{npi}"
    await res.update(ctx, "Practitioner", pid, {
        "resourceType": "Practitioner", "id": pid, "identifier": [
            {"system": "urn:fhir-sched:hl7v2:CLINIC:any:practitioner", "value": npi}]})
    await res.update(ctx, "Schedule", f"s-{pid}", schedule(
        f"s-{pid}", f"Practitioner/{pid}", template("UTC", hours(("tue",), "09:00:00",
                                                                   "12:00:00"))))
    return f"Practitioner/{pid}"


def block(trigger: str, npi: str, control: str) -> bytes:
    segments = [
        f"MSH|^~\\&|CLINIC|NORTH|FHIRSCHED|HOSP|20370101120000||SIU^{trigger}|{control}|P|2.5",
        "SCH|BLK-1||||||LUNCH^Staff meeting",
        "TQ1|1||||||20370303100000+0000|20370303110000+0000",
        "RGS|1",
        f"AIP|1||{npi}^Smith^Ann|ATT^Attending",
    ]
    return ("\r".join(segments) + "\r").encode()


def booking(actor: str) -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": "booked",
            "start": "2037-03-03T10:00:00+00:00", "end": "2037-03-03T10:30:00+00:00",
            "participant": [{"actor": {"reference": actor}, "status": "accepted"}]}


async def test_blocked_time_is_refused_to_a_fhir_booking_until_opened(core: Core) -> None:
    doctor = await calendar_doctor(core, "7001")
    b = bridge(core, REFUSING)
    assert msa(await b.handle(block("S23", "7001", "B1"), "t"))[1] == "AA"
    with pytest.raises(FhirError) as refused:
        await core.services.resources.create(RequestContext(), "Appointment", booking(doctor))
    assert refused.value.status == 409
    assert msa(await b.handle(block("S24", "7001", "B2"), "t"))[1] == "AA"
    saved = await core.services.resources.create(RequestContext(), "Appointment",
                                                 booking(doctor))
    assert saved.created


async def test_a_block_on_a_resource_without_a_calendar_blocks_only_that_time(
        core: Core) -> None:
    b = bridge(core, REFUSING)
    assert msa(await b.handle(block("S23", "7002", "B3"), "t"))[1] == "AA"
    found = await find(core, "Practitioner", "urn:fhir-sched:hl7v2:CLINIC:any:practitioner|7002")
    doctor = f"Practitioner/{found[0]['id']}"
    with pytest.raises(FhirError):
        await core.services.resources.create(RequestContext(), "Appointment", booking(doctor))
    later = booking(doctor) | {"start": "2037-03-03T14:00:00+00:00",
                               "end": "2037-03-03T14:30:00+00:00"}
    assert (await core.services.resources.create(RequestContext(), "Appointment", later)).created


# --- the guard ----------------------------------------------------------------------------------


async def test_a_conflict_from_an_ordinary_sender_is_ae_with_the_reason(core: Core) -> None:
    b = bridge(core)
    assert msa(await b.handle(s12(10, doctor="5005"), "t"))[1] == "AA"
    clash = await b.handle(s12(11, doctor="5005"), "t")
    assert msa(clash)[1] == "AE"
    assert "|207^" in err(clash)
    assert (await kept(core, "/S12-11")).outcome == "rejected"


async def test_a_conflict_from_the_calendar_of_record_is_stored_and_flagged(core: Core) -> None:
    b = bridge(core)
    assert msa(await b.handle(s12(12, app="OWNER", doctor="5006"), "t"))[1] == "AA"
    assert msa(await b.handle(s12(13, app="OWNER", doctor="5006"), "t"))[1] == "AA"
    stored = await appointment_by_filler(core, "urn:fhir-sched:hl7v2:OWNER:any:filler", "F13")
    assert any(e["url"] == FLAG for e in stored.get("extension", []))


# --- refusals and the dead-letter list ---------------------------------------------------------


async def test_garbage_is_ar_and_kept(core: Core) -> None:
    ack = await bridge(core).handle(b"\x00\x01 this is no HL7", "t")
    assert msa(ack)[1] == "AR"
    letters = await inbox.dead_letters(core.services.store)
    assert letters and letters[0].raw == b"\x00\x01 this is no HL7"


async def test_a_message_type_that_is_not_siu_is_ar_200(core: Core) -> None:
    raw = b"MSH|^~\\&|CLINIC|NORTH|X|Y|20370101||ADT^A01|ADT1|P|2.5.1\rPID|1\r"
    ack = await bridge(core).handle(raw, "t")
    assert msa(ack)[1:3] == ["AR", "ADT1"]
    assert "|200^" in err(ack)


async def test_an_event_the_sender_may_not_send_is_ar_201(core: Core) -> None:
    ack = await bridge(core).handle(s12(14, app="LIMITED", trigger="S15"), "t")
    assert msa(ack)[1] == "AR"
    assert "|201^" in err(ack)


async def test_an_unknown_sender_is_ar_103_when_unknown_senders_are_refused(core: Core) -> None:
    ack = await bridge(core, REFUSING).handle(s12(15, app="STRANGER"), "t")
    assert msa(ack)[1] == "AR"
    assert "|103^" in err(ack)


async def test_a_replayed_dead_letter_that_now_applies_leaves_the_list(core: Core) -> None:
    b = bridge(core)
    await b.handle(s12(20, doctor="5010"), "t")
    assert msa(await b.handle(s12(21, doctor="5010"), "t"))[1] == "AE"
    assert [e.control_id for e in await inbox.dead_letters(core.services.store)] == ["S12-21"]
    # staff move the first booking out of the way, then replay
    first = await appointment_by_filler(core, "urn:fhir-sched:hl7v2:CLINIC:NORTH:filler", "F20")
    await core.services.resources.update(RequestContext(), "Appointment", first["id"],
                                         {**first, "status": "cancelled"})
    replayed = await inbox.replay_dead_letters(b)
    assert [r.code for r in replayed] == ["AA"]
    assert await inbox.dead_letters(core.services.store) == []
    assert (await kept(core, "/S12-21")).outcome == "applied"


# --- enhanced mode ------------------------------------------------------------------------------


async def test_enhanced_mode_answers_a_commit_accept(core: Core) -> None:
    ack = await bridge(core).handle(s12(30, extra_msh="|||AL|NE"), "t")
    assert msa(ack)[1] == "CA"


async def test_enhanced_mode_ne_gets_no_ack_but_is_applied(core: Core) -> None:
    ack = await bridge(core).handle(s12(31, extra_msh="|||NE|NE"), "t")
    assert ack == b""
    assert await find(core, "Appointment", "urn:fhir-sched:hl7v2:CLINIC:NORTH:filler|F31")


async def test_an_applied_message_leaves_a_provenance_naming_the_sender(core: Core) -> None:
    await bridge(core).handle(s12(40), "t")
    stored = await appointment_by_filler(core, "urn:fhir-sched:hl7v2:CLINIC:NORTH:filler", "F40")
    _, page = await core.services.search.search(
        RequestContext(), "Provenance", [("target", f"Appointment/{stored['id']}")], strict=True,
        base_url="")
    assert len(page.rows) == 1
    prov = orjson.loads(page.rows[0][1])
    assert prov["agent"][0]["who"]["identifier"]["value"] == "CLINIC/NORTH"
    assert prov["entity"][0]["what"]["identifier"]["value"] == "CLINIC/NORTH/S12-40"
    assert f"Appointment/{stored['id']}" in [t["reference"] for t in prov["target"]]


async def test_raw_bytes_are_dropped_after_retention_but_the_answer_stays(core: Core) -> None:
    b = bridge(core)
    first = await b.handle(s12(50), "t")
    assert (await kept(core, "/S12-50")).raw is not None
    assert await inbox.purge_raw(core.services.store, "2999-01-01T00:00:00Z") >= 1
    entry = await kept(core, "/S12-50")
    assert entry.raw is None and entry.outcome == "applied"
    assert await b.handle(s12(50), "t") == first


async def test_a_calendar_of_record_may_report_a_booking_longer_than_a_day_but_not_unbounded(
        core: Core) -> None:
    """The four-day fixture is recorded (its sender is of record); the same sender reporting a
    month is refused, naming the setting that allows it."""
    raw = (FIXTURES / "FHIR-Converter_S12_3.hl7").read_bytes()
    assert msa(await bridge(core).handle(raw, "test"))[1] == "AA"
    month = raw.replace(b"202010081126+0215|A", b"202011081126+0215|A").replace(
        b"MSG00001", b"MSG00002").replace(b"SCH|12345|36996", b"SCH|12346|36997")
    ack = await bridge(core).handle(month, "test")
    assert msa(ack)[1] == "AE"
    assert "FHIR_SCHED_MAX_RECORDED_APPOINTMENT_HOURS" in err(ack)


async def test_a_booking_of_record_breaking_its_visit_types_rule_is_stored_and_flagged(
        core: Core) -> None:
    """SCH-8 names the visit type; the service offering it (found by the visit-type search
    parameter, since SIU names none) allows booking at most 30 days ahead, and 2037 is
    further: the calendar of record's booking is kept with the rule flagged, an ordinary
    sender's is refused with AE."""
    await core.services.resources.create(RequestContext(), "HealthcareService", {
        "resourceType": "HealthcareService", "extension": [{
            "url": "https://fhir-sched.org/fhir/StructureDefinition/visit-type", "extension": [
                {"url": "code", "valueCoding": {"code": "ROUTINE"}},
                {"url": "minutesDuration", "valuePositiveInt": 30},
                {"url": "maxAdvanceDays", "valuePositiveInt": 30}]}]})
    b = bridge(core)
    assert msa(await b.handle(s12(31, app="OWNER", doctor="5031"), "t"))[1] == "AA"
    stored = await appointment_by_filler(core, "urn:fhir-sched:hl7v2:OWNER:any:filler", "F31")
    rules = [sub["valueCode"] for e in stored.get("extension", []) if e["url"] == FLAG
             for sub in e["extension"] if sub["url"] == "rule"]
    assert rules == ["max-advance"]
    refused = await b.handle(s12(32, doctor="5032"), "t")
    assert msa(refused)[1] == "AE"
    assert "at most 30 day(s) ahead" in err(refused)
