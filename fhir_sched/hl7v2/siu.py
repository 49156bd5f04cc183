"""A parsed SIU message to plain FHIR R4 dicts: what the bridge needs to upsert an Appointment,
apply a participant delta, or block and open time. No database here: people, places and
devices come back as references *by identifier* in the sender's namespace, each with the
minimal body to create when the bridge does not know it.

The rules the best open mappings get wrong are the ones this module is built around: the
trigger decides the status (SCH-25 only where it does not); times come from TQ1 first, then
SCH-11, then the resource segments, and keep their offsets (times without one are read in the
sender's zone); S16 is mapped; the upsert key is the filler id, then the placer id, so an update
without SCH-1 still finds its appointment. What was sent is kept in the ``hl7v2-source``
extension so an outbound SIU can say it again. The walk is over flat segments: RGS groups,
segment order and Z-segments do not matter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

from fhir_sched.hl7v2 import siu_tables as t
from fhir_sched.hl7v2.er7 import Er7Error, Message, Segment
from fhir_sched.hl7v2.senders import Sender

_DTM = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4}|Z)?$"
)
CODE_SYSTEMS: dict[str, str] = {
    "LN": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "C4": "http://www.ama-assn.org/go/cpt",
}
MAX_MINUTES = 366 * 24 * 60


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """A Patient/Practitioner/Location/Device named by identifier; ``body`` is what to create
    when the bridge finds none (``value`` "" when the sender sent a name only)."""

    resource_type: str
    system: str
    value: str
    display: str
    body: dict[str, Any]

    def reference(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"type": self.resource_type}
        if self.value:
            ref["identifier"] = {"system": self.system, "value": self.value}
        if self.display:
            ref["display"] = self.display
        return ref

    @property
    def key(self) -> tuple[str, str, str]:
        return self.resource_type, self.system, self.value or self.display


@dataclass(frozen=True, slots=True)
class ParticipantDelta:
    """S18-S22: one resource added to, changed on, or removed from an appointment."""

    action: str  # add, modify, cancel, discontinue, delete (from the trigger)
    segment: str  # AIS, AIG, AIL, AIP
    segment_action: str  # AIx-2 as read (add/modify/delete/cancel), "" when not sent
    resource: ResourceRef | None  # None for AIS (a service, not an actor)
    participant: dict[str, Any] | None
    service_type: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Block:
    """S23 (blocked) / S24 (opened) time on one resource, for the guard."""

    kind: str  # "blocked" or "opened"
    resource: ResourceRef | None  # None: the whole schedule named by ``schedule``
    start: str
    end: str
    reason: str
    schedule: dict[str, Any] | None = None  # SCH-5 as a CodeableConcept, when sent


@dataclass(frozen=True, slots=True)
class SiuChange:
    kind: str  # appointment, participants, block, open
    trigger: str
    appointment: dict[str, Any]  # whole for "appointment"; identifiers only otherwise
    keys: list[dict[str, Any]]  # the upsert keys, best first: filler, then placer
    patient: ResourceRef | None
    resources: list[ResourceRef]
    service_requests: list[dict[str, Any]]
    deltas: list[ParticipantDelta] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- values -----------------------------------------------------------------------------------


def read_dtm(value: str, zone: tzinfo) -> datetime | None:
    """DTM/TS to an aware datetime; no offset -> ``zone``; a date alone is its midnight there.
    None when it is not a DTM (or names no real date, offset or time)."""
    m = _DTM.match(value.strip())
    if not m:
        return None
    y, mo, d, h, mi, s, frac, off = m.groups()
    try:
        dt = datetime(
            int(y),
            int(mo or 1),
            int(d or 1),
            int(h or 0),
            int(mi or 0),
            int(s or 0),
            int((frac or "0").ljust(6, "0")),
        )
        if not off:
            return dt.replace(tzinfo=zone)
        if off == "Z":
            return dt.replace(tzinfo=UTC)
        sign = 1 if off[0] == "+" else -1
        delta = sign * timedelta(hours=int(off[1:3]), minutes=int(off[3:5]))
        return dt.replace(tzinfo=timezone(delta))
    except ValueError:
        return None


def _when(seg: Segment, fld: int, zone: tzinfo, component: int = 1) -> datetime | None:
    """A timing value: absent -> None; present but unreadable -> 102 naming the field, because
    booking the wrong time is worse than refusing the message."""
    value = seg.get(fld, component)
    if not value.strip():
        return None
    dt = read_dtm(value, zone)
    if dt is None:
        where = f"{seg.name}-{fld}" + (f".{component}" if component > 1 else "")
        raise Er7Error(102, f"{where} {value!r} is not a date/time", segment=seg.name, field=fld)
    return dt


def _plus(dt: datetime, mins: float) -> datetime | None:
    try:
        return dt + timedelta(minutes=mins)
    except OverflowError:
        return None


def instant(dt: datetime) -> str:
    spec = "microseconds" if dt.microsecond else "seconds"
    return dt.isoformat(timespec=spec)


def minutes(quantity: str, unit: str) -> float | None:
    """A quantity in ``unit`` as minutes; None when either is unreadable or it is not a sane
    duration (negative, not finite, or over a year)."""
    try:
        q = float(quantity)
    except ValueError:
        return None
    factor = t.MINUTES_PER_UNIT.get(unit.strip().casefold(), 1 if not unit.strip() else None)
    if factor is None or not math.isfinite(q) or not 0 <= q * factor <= MAX_MINUTES:
        return None
    return q * factor


def tq_duration(value: str) -> float | None:
    """SCH-11.3: "M30", "H2", "30" (minutes), "2 hours"."""
    v = value.strip()
    if not v:
        return None
    digits = v[1:]
    if v[0].upper() in t.TQ_DURATION_PREFIX and digits.isascii() and digits.isdigit():
        total = int(digits) * t.TQ_DURATION_PREFIX[v[0].upper()]
        return total if total <= MAX_MINUTES else None
    parts = v.split(None, 1)
    return minutes(parts[0], parts[1] if len(parts) > 1 else "min")


def _code_system(name: str, sender: Sender) -> str:
    if not name:
        return ""
    if name in CODE_SYSTEMS:
        return CODE_SYSTEMS[name]
    m = re.fullmatch(r"HL7(\d{4})", name)
    if m:
        return f"http://terminology.hl7.org/CodeSystem/v2-{m[1]}"
    return f"{sender.system('code')}:{name}"


def concept(seg: Segment, fld: int, sender: Sender, rep: int = 0) -> dict[str, Any] | None:
    """CE/CWE/CNE -> CodeableConcept; coding and alternate coding kept, original text too. A
    lone CE.1 with spaces and no system is what senders do with free text: it becomes text."""
    codings = []
    for code_c, text_c, sys_c in ((1, 2, 3), (4, 5, 6)):
        code, display = seg.get(fld, code_c, rep), seg.get(fld, text_c, rep)
        if not code or (not display and not seg.get(fld, sys_c, rep) and " " in code.strip()):
            continue  # free text in the identifier ("Nephrology New"): text, not a code
        coding: dict[str, Any] = {"code": code}
        system = _code_system(seg.get(fld, sys_c, rep), sender)
        if system:
            coding["system"] = system
        if display:
            coding["display"] = display
        codings.append(coding)
    text = seg.get(fld, 9, rep) or seg.get(fld, 2, rep) or ("" if codings else seg.get(fld, 1, rep))
    if not codings and not text:
        return None
    out: dict[str, Any] = {}
    if codings:
        out["coding"] = codings
    if text:
        out["text"] = text
    return out


def _oid_system(universal_id: str, id_type: str) -> str:
    if universal_id and id_type.upper() == "ISO" and re.fullmatch(r"[0-9.]+", universal_id):
        return f"urn:oid:{universal_id}"
    return ""


def _system(sender: Sender, kind: str, universal_id: str = "", id_type: str = "") -> str:
    """The sender's configured namespace first, then an OID the value carries, then a local
    per-sender URN: ids are only unique within their sender."""
    return sender.systems.get(kind) or _oid_system(universal_id, id_type) or sender.system(kind)


# --- identifiers and actors -------------------------------------------------------------------

_TYPE_DISPLAY = {"PLAC": "Placer Identifier", "FILL": "Filler Identifier"}


def ei_identifier(seg: Segment, fld: int, sender: Sender, code: str) -> dict[str, Any] | None:
    value = seg.get(fld, 1).strip()
    if not value:
        return None
    kind = "filler" if code == "FILL" else "placer"
    return {
        "type": {"coding": [{"system": t.V2_0203, "code": code, "display": _TYPE_DISPLAY[code]}]},
        "system": _system(sender, kind, seg.get(fld, 3), seg.get(fld, 4)),
        "value": value,
    }


def _human_name(seg: Segment, fld: int, first: int, rep: int = 0) -> dict[str, Any] | None:
    """XPN at component ``first`` (PID-5: 1) or XCN names (from component 2)."""
    family = seg.get(fld, first, rep)
    given = [g for g in (seg.get(fld, first + 1, rep), seg.get(fld, first + 2, rep)) if g]
    prefix = seg.get(fld, first + 4, rep)
    suffix = seg.get(fld, first + 3, rep)
    name: dict[str, Any] = {}
    if family:
        name["family"] = family
    if given:
        name["given"] = given
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    if name:
        name["text"] = " ".join([*given, family]).strip()
    return name or None


def patient(msg: Message, sender: Sender) -> ResourceRef | None:
    pid = msg.segment("PID")
    if pid is None:
        return None
    reps = range(pid.repetitions(3))
    chosen = next((r for r in reps if pid.get(3, 5, r).upper() == "MR" and pid.get(3, 1, r)), None)
    if chosen is None:
        chosen = next((r for r in reps if pid.get(3, 1, r)), None)
    if chosen is None:
        return None
    value = pid.get(3, 1, chosen)
    system = _system(sender, "patient", pid.get(3, 4, chosen, 2), pid.get(3, 4, chosen, 3))
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": value}],
    }
    name = _human_name(pid, 5, 1)
    if name:
        body["name"] = [name]
    if pid.get(8):
        body["gender"] = t.GENDER.get(pid.get(8).upper(), "unknown")
    birth = read_dtm(pid.get(7), sender.zone)
    if birth is not None:
        body["birthDate"] = birth.date().isoformat()
    display = name["text"] if name else ""
    return ResourceRef("Patient", system, value, display, body)


def xcn_practitioner(seg: Segment, fld: int, sender: Sender, rep: int = 0) -> ResourceRef | None:
    value = seg.get(fld, 1, rep).strip()
    name = _human_name(seg, fld, 2, rep)
    if not value and not name:
        return None
    system = _system(sender, "practitioner", seg.get(fld, 9, rep, 2), seg.get(fld, 9, rep, 3))
    body: dict[str, Any] = {"resourceType": "Practitioner"}
    if value:
        body["identifier"] = [{"system": system, "value": value}]
    if name:
        body["name"] = [name]
    return ResourceRef("Practitioner", system, value, name["text"] if name else "", body)


def ail_location(seg: Segment, sender: Sender) -> ResourceRef | None:
    parts = [seg.get(3, c) for c in (1, 2, 3, 4)]
    value = seg.get(3, 10) or parts[0] or "^".join(p for p in parts if p)
    if not value:
        return None
    system = _system(sender, "location")
    display = " ".join(p for p in (parts[1] or parts[0], parts[3]) if p)
    body: dict[str, Any] = {
        "resourceType": "Location",
        "identifier": [{"system": system, "value": value}],
        "name": display or value,
    }
    kind = concept(seg, 4, sender)
    if kind:
        body["type"] = [kind]
    return ResourceRef("Location", system, value, display, body)


def aig_resource(seg: Segment, sender: Sender) -> ResourceRef | None:
    value, display = seg.get(3, 1).strip(), seg.get(3, 2)
    if not value and not display:
        return None
    staff = (seg.get(4, 2) or seg.get(4, 1)).casefold() in t.STAFF_RESOURCE_TYPES
    if staff:
        system = _system(sender, "practitioner")
        body: dict[str, Any] = {
            "resourceType": "Practitioner",
            "name": [{"text": display or value}],
        }
        if value:
            body["identifier"] = [{"system": system, "value": value}]
        return ResourceRef("Practitioner", system, value, display, body)
    system = _system(sender, "device")
    body = {
        "resourceType": "Device",
        "deviceName": [{"name": display or value, "type": "user-friendly-name"}],
    }
    if value:
        body["identifier"] = [{"system": system, "value": value}]
    kind = concept(seg, 4, sender)
    if kind:
        body["type"] = kind
    return ResourceRef("Device", system, value, display, body)


def actor(seg: Segment, sender: Sender) -> ResourceRef | None:
    if seg.name == "AIP":
        return xcn_practitioner(seg, 3, sender)
    if seg.name == "AIL":
        return ail_location(seg, sender)
    if seg.name == "AIG":
        return aig_resource(seg, sender)
    return None


# --- timing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    start: datetime | None
    end: datetime | None
    minutes: float | None
    source: str  # TQ1, SCH-11, AIS, AIG, AIL, AIP or ""
    raw: str  # the start as sent


def segment_period(seg: Segment, zone: tzinfo) -> Timing:
    lay = t.RESOURCES[seg.name]
    start = _when(seg, lay.start, zone)
    if start is not None and seg.get(lay.offset):
        off = minutes(seg.get(lay.offset), seg.get(lay.offset_units) or "min")
        if off is not None:
            start = _plus(start, off)
    dur = (
        minutes(seg.get(lay.duration), seg.get(lay.duration_units))
        if seg.get(lay.duration)
        else None
    )
    end = _plus(start, dur) if start is not None and dur is not None else None
    return Timing(start, end, dur, seg.name if start else "", seg.get(lay.start))


def timing(msg: Message, zone: tzinfo) -> Timing:
    """TQ1-7/8, else SCH-11.4/11.5 (first repetition), else the first resource segment with a
    start (plus its duration); a missing end comes from the duration found at the same level,
    then SCH-9/10."""
    sch = msg.segment("SCH")
    tq1 = msg.segment("TQ1")
    found: Timing | None = None
    if tq1 is not None and tq1.get(7):
        start, end = _when(tq1, 7, zone), _when(tq1, 8, zone)
        dur = minutes(tq1.get(6, 1), tq1.get(6, 2)) if tq1.get(6, 1) else None
        found = Timing(start, end, dur, "TQ1", tq1.get(7))
    elif sch is not None and sch.get(11, 4):
        start, end = _when(sch, 11, zone, 4), _when(sch, 11, zone, 5)
        found = Timing(start, end, tq_duration(sch.get(11, 3)), "SCH-11", sch.get(11, 4))
    else:
        for seg in msg.segments():
            if seg.name in t.RESOURCES:
                period = segment_period(seg, zone)
                if period.start is not None:
                    found = period
                    break
    if found is None:
        return Timing(None, None, None, "", "")
    dur = found.minutes
    if dur is None and sch is not None and sch.get(9):
        dur = minutes(sch.get(9), sch.get(10, 1))
    end = found.end
    if end is None and found.start is not None and dur is not None:
        end = _plus(found.start, dur)
    return Timing(found.start, end, dur, found.source, found.raw)


# --- the walk ---------------------------------------------------------------------------------


def _notes(msg: Message) -> dict[int, list[str]]:
    """NTE-3 texts by the index of the segment they follow (an NTE belongs to the one before)."""
    out: dict[int, list[str]] = {}
    owner = -1
    for i, seg in enumerate(msg.segments()):
        if seg.name == "NTE":
            text = "\n".join(
                seg.get(3, 1, r) for r in range(seg.repetitions(3)) if seg.get(3, 1, r)
            )
            if text:
                out.setdefault(owner, []).append(text)
        elif not seg.name.startswith("Z"):  # a Z-segment (Epic's ZCS after SCH) owns no notes
            owner = i
    return out


def _status(trigger: str, sch: Segment, sender: Sender, warnings: list[str]) -> str:
    decided = t.TRIGGER_STATUS.get(trigger)
    if decided:
        return decided
    code = sch.get(25, 1) or sch.get(25, 2)
    if not code:
        return t.DEFAULT_STATUS
    mapped = sender.status(code) or t.FILLER_STATUS.get(code.strip().casefold())
    if mapped is None:
        warnings.append(f"SCH-25 {code!r} is not a known filler status; using {t.DEFAULT_STATUS}")
        return t.DEFAULT_STATUS
    return mapped


def _participant_status(seg: Segment) -> str:
    lay = t.RESOURCES[seg.name]
    code = seg.get(lay.status, 1).strip().casefold()
    return t.PARTICIPANT_STATUS.get(code, t.DEFAULT_PARTICIPANT_STATUS)


def _participant(
    ref: ResourceRef, seg: Segment | None, zone: tzinfo, sender: Sender
) -> dict[str, Any]:
    part: dict[str, Any] = {"actor": ref.reference()}
    if seg is None:
        part["status"] = t.PATIENT_PARTICIPANT_STATUS
        return part
    lay = t.RESOURCES[seg.name]
    if lay.type_field is not None:
        kind = concept(seg, lay.type_field, sender)
        if kind:
            part["type"] = [kind]
    period = segment_period(seg, zone)
    if period.start is not None:
        part["period"] = {"start": instant(period.start)}
        if period.end is not None:
            part["period"]["end"] = instant(period.end)
    part["status"] = _participant_status(seg)
    return part


def _source_extension(msg: Message, trigger: str, timing_: Timing) -> dict[str, Any]:
    sch = msg.segment("SCH")
    values = [("trigger", trigger), ("version", msg.header.version)]
    if sch is not None:
        values += [("fillerStatus", sch.text(25)), ("eventReason", sch.text(6))]
        values += [("appointmentReason", sch.text(7)), ("appointmentType", sch.text(8))]
    values += [("timingSource", timing_.source), ("start", timing_.raw)]
    return {
        "url": t.HL7V2_SOURCE,
        "extension": [{"url": k, "valueString": v} for k, v in values if v],
    }


def _service_requests(
    sch: Segment, sender: Sender, pat: ResourceRef | None
) -> list[dict[str, Any]]:
    ids = [
        i
        for i in (ei_identifier(sch, 26, sender, "PLAC"), ei_identifier(sch, 27, sender, "FILL"))
        if i
    ]
    if not ids:
        return []
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "unknown",
        "intent": "order",
        "identifier": ids,
    }
    if pat is not None:
        body["subject"] = pat.reference()
    return [body]


@dataclass(frozen=True, slots=True)
class _Context:
    msg: Message
    sch: Segment
    sender: Sender
    zone: tzinfo
    trigger: str
    kind: str
    keys: list[dict[str, Any]]
    patient: ResourceRef | None
    when: Timing
    resources: dict[tuple[str, str, str], ResourceRef]
    warnings: list[str]

    def add(self, ref: ResourceRef | None) -> ResourceRef | None:
        if ref is not None:
            self.resources.setdefault(ref.key, ref)
        return ref

    def change(self, appointment: dict[str, Any], **rest: Any) -> SiuChange:
        return SiuChange(
            kind=self.kind,
            trigger=self.trigger,
            appointment=appointment,
            keys=self.keys,
            patient=self.patient,
            resources=list(self.resources.values()),
            service_requests=rest.pop("service_requests", []),
            warnings=self.warnings,
            **rest,
        )

    @property
    def key_only(self) -> dict[str, Any]:
        return {"resourceType": "Appointment", "identifier": self.keys}


def map_message(msg: Message, sender: Sender) -> SiuChange:
    """The change one SIU message describes. Raises ``Er7Error`` (200/201) for what is not SIU
    or an event this bridge or this sender does not take, 101 when SCH or both ids are missing,
    102 for a time that is present but unreadable."""
    h = msg.header
    if h.message_code != "SIU":
        raise Er7Error(200, f"message type {h.message_code!r} is not SIU", field=9, header=h)
    trigger = h.trigger_event
    kind = t.KIND.get(trigger)
    if kind is None:
        raise Er7Error(201, f"SIU^{trigger} is not a supported event", field=9, header=h)
    if trigger not in sender.events:
        raise Er7Error(201, f"SIU^{trigger} is not allowed from this sender", field=9, header=h)
    sch = msg.segment("SCH")
    if sch is None:
        raise Er7Error(101, "the SCH segment is missing", segment="SCH", header=h)
    keys = [
        i
        for i in (ei_identifier(sch, 2, sender, "FILL"), ei_identifier(sch, 1, sender, "PLAC"))
        if i
    ]
    if not keys and kind in ("appointment", "participants"):
        raise Er7Error(
            101,
            "SCH-1 and SCH-2 are both empty: no appointment id",
            segment="SCH",
            field=1,
            header=h,
        )
    zone = sender.zone
    pat = patient(msg, sender)
    ctx = _Context(
        msg,
        sch,
        sender,
        zone,
        trigger,
        kind,
        keys,
        pat,
        timing(msg, zone),
        {pat.key: pat} if pat is not None else {},
        list(msg.warnings),
    )
    if kind == "participants":
        return _participant_deltas(ctx)
    if kind in ("block", "open"):
        return _blocks(ctx)
    return _appointment(ctx)


def _participant_deltas(ctx: _Context) -> SiuChange:
    """S18-S22: one delta per resource segment; the appointment is named, not restated."""
    deltas = []
    for seg in ctx.msg.segments():
        if seg.name not in t.RESOURCES:
            continue
        ref = ctx.add(actor(seg, ctx.sender))
        deltas.append(
            ParticipantDelta(
                action=t.DELTA_ACTION[ctx.trigger],
                segment=seg.name,
                segment_action=t.SEGMENT_ACTION.get(seg.get(2).strip().upper(), ""),
                resource=ref,
                participant=_participant(ref, seg, ctx.zone, ctx.sender) if ref else None,
                service_type=concept(seg, 3, ctx.sender) if seg.name == "AIS" else None,
            )
        )
    return ctx.change(ctx.key_only, deltas=deltas)


def _blocks(ctx: _Context) -> SiuChange:
    """S23/S24: time blocked or opened on each named resource (its own period first, else the
    message's), or on the SCH-5 schedule when no resource is named."""
    label = "blocked" if ctx.kind == "block" else "opened"
    reason = ((concept(ctx.sch, 6, ctx.sender) or concept(ctx.sch, 7, ctx.sender)) or {}).get(
        "text", ""
    )
    schedule = concept(ctx.sch, 5, ctx.sender)
    blocks = []
    for seg in ctx.msg.segments():
        if seg.name not in ("AIG", "AIL", "AIP"):
            continue
        own = segment_period(seg, ctx.zone)
        start, end = own.start or ctx.when.start, own.end or ctx.when.end
        if start is None or end is None:
            ctx.warnings.append(f"{seg.name} has no start and end; nothing {label}")
            continue
        ref = ctx.add(actor(seg, ctx.sender))
        blocks.append(Block(label, ref, instant(start), instant(end), reason, schedule))
    when = ctx.when
    if not blocks and when.start is not None and when.end is not None and schedule is not None:
        blocks.append(Block(label, None, instant(when.start), instant(when.end), reason, schedule))
    return ctx.change(ctx.key_only, blocks=blocks)


def _appointment(ctx: _Context) -> SiuChange:
    sch, sender, when = ctx.sch, ctx.sender, ctx.when
    appt: dict[str, Any] = {
        "resourceType": "Appointment",
        "extension": [_source_extension(ctx.msg, ctx.trigger, when)],
        "identifier": ctx.keys,
        "status": _status(ctx.trigger, sch, sender, ctx.warnings),
    }
    if ctx.trigger in ("S15", "S16"):
        cancel = concept(sch, 6, sender)
        if cancel:
            appt["cancelationReason"] = cancel
    services = [c for s in ctx.msg.segments("AIS") if (c := concept(s, 3, sender))]
    if services:
        appt["serviceType"] = services
    reason = concept(sch, 7, sender)
    if reason:
        appt["reasonCode"] = [reason]
    appt_type = concept(sch, 8, sender)
    if appt_type is None and sch.get(7).upper() in t.TABLE_0276:
        appt_type = {"coding": [{"system": t.V2_0276, "code": sch.get(7).upper()}]}
    if appt_type:
        appt["appointmentType"] = appt_type
    tq1 = ctx.msg.segment("TQ1")
    prio = ((tq1.get(9) if tq1 is not None else "") or sch.get(11, 6)).upper()
    if prio in t.PRIORITY:
        appt["priority"] = t.PRIORITY[prio]
    if when.start is not None:
        appt["start"] = instant(when.start)
        if when.end is not None:
            appt["end"] = instant(when.end)
    else:
        ctx.warnings.append("no start time in TQ1, SCH-11 or the resource segments")
    dur = minutes(sch.get(9), sch.get(10, 1)) if sch.get(9) else None
    if dur is None:
        dur = when.minutes
    if dur is None and when.start is not None and when.end is not None:
        dur = (when.end - when.start).total_seconds() / 60
    if dur is not None and dur >= 1:
        appt["minutesDuration"] = round(dur)
    segs = ctx.msg.segments()
    sch_notes = [
        n
        for i, ns in _notes(ctx.msg).items()
        if i >= 0 and segs[i].name in ("SCH", "TQ1")
        for n in ns
    ]
    if sch_notes:
        appt["comment"] = "\n".join(sch_notes)
    participants = _participants(ctx)
    if participants:
        appt["participant"] = participants
    requests = _service_requests(sch, sender, ctx.patient)
    if requests:
        appt["basedOn"] = [
            {"type": "ServiceRequest", "identifier": r["identifier"][-1]} for r in requests
        ]
    return ctx.change(appt, service_requests=requests)


def _participants(ctx: _Context) -> list[dict[str, Any]]:
    """Patient, PV1 attending/referring/consulting, then AIG/AIL/AIP; one per actor."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    if ctx.patient is not None:
        out[ctx.patient.key] = _participant(ctx.patient, None, ctx.zone, ctx.sender)
    pv1 = ctx.msg.segment("PV1")
    for fld, code in t.PV1_PERSONS.items():
        ref = ctx.add(xcn_practitioner(pv1, fld, ctx.sender)) if pv1 is not None else None
        if ref is not None:
            out.setdefault(
                ref.key,
                {
                    "actor": ref.reference(),
                    "type": [{"coding": [{"system": t.PARTICIPATION_TYPE, "code": code}]}],
                    "status": "accepted",
                },
            )
    for seg in ctx.msg.segments():
        if seg.name in ("AIG", "AIL", "AIP"):
            ref = ctx.add(actor(seg, ctx.sender))
            if ref is not None:
                out.setdefault(ref.key, _participant(ref, seg, ctx.zone, ctx.sender))
    return list(out.values())
