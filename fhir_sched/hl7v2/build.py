"""An Appointment (and the people and places it names) as an SIU message, in a given version.

The inverse of ``siu.py``, table-driven where the two meet: status to filler status (table
0278), the trigger from what changed, SCH/TQ1/PID/RGS/AIS/AIG/AIL/AIP. Timing follows the
version: TQ1 from 2.5, SCH-11 (TQ) before. Codes the original sender used (the
``hl7v2-source`` extension) are sent back as they were where they still mean the same status,
so a round trip loses nothing. Every value is escaped for the delimiters used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_sched.hl7v2 import siu_tables as t
from fhir_sched.hl7v2.ack import escape, version_tuple
from fhir_sched.scheduling.participants import DEVICE_PARTICIPANT
from fhir_sched.timeutil import parse_instant

ENC = "^~\\&"
# Appointment.status -> HL7 table 0278 (filler status code).
FILLER_STATUS = {
    "proposed": "Pending",
    "pending": "Pending",
    "booked": "Booked",
    "arrived": "Started",
    "checked-in": "Started",
    "fulfilled": "Complete",
    "cancelled": "Cancelled",
    "noshow": "Noshow",
    "entered-in-error": "Deleted",
    "waitlist": "Waitlist",
}
# A change's meaning -> trigger. ``event_for`` picks the row.
TRIGGER_FOR_STATUS = {"cancelled": "S15", "noshow": "S26", "entered-in-error": "S17"}
GENDER = {"male": "M", "female": "F", "other": "O", "unknown": "U"}


def event_for(old: dict[str, Any] | None, new: dict[str, Any] | None) -> str:
    """The SIU trigger for an Appointment change: S12 new, S17 deleted or entered-in-error,
    S15 cancelled, S26 no-show, S13 moved (start, end or duration), S14 anything else."""
    if new is None:
        return "S17"
    status = new.get("status")
    if old is None:
        return TRIGGER_FOR_STATUS.get(str(status), "S12")
    if status != old.get("status") and status in TRIGGER_FOR_STATUS:
        return TRIGGER_FOR_STATUS[str(status)]
    if any(new.get(k) != old.get(k) for k in ("start", "end", "minutesDuration")):
        return "S13"
    return "S14"


@dataclass(frozen=True, slots=True)
class Envelope:
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    control_id: str
    timestamp: str  # DTM
    version: str


def _e(text: Any) -> str:
    return escape(str(text), "|", ENC) if text is not None else ""


def dtm(instant: str | None) -> str:
    if not instant:
        return ""
    when: datetime = parse_instant(instant)
    return when.strftime("%Y%m%d%H%M%S%z")


def _source(appt: dict[str, Any]) -> dict[str, str]:
    for ext in appt.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == t.HL7V2_SOURCE:
            return {str(s.get("url")): str(s.get("valueString") or "")
                    for s in ext.get("extension") or []}
    return {}


def _ce(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    coding = (concept.get("coding") or [{}])[0]
    parts = [_e(coding.get("code") or ""), _e(coding.get("display") or concept.get("text") or "")]
    return "^".join(parts).rstrip("^")


def _ident(identifiers: list[dict[str, Any]], code: str) -> dict[str, Any] | None:
    for ident in identifiers:
        codings = ((ident.get("type") or {}).get("coding") or [{}])
        if any(c.get("code") == code for c in codings):
            return ident
    return None


def _name(resource: dict[str, Any]) -> tuple[str, str]:
    name = (resource.get("name") or [{}])[0]
    if isinstance(name, str):  # Location.name
        return name, ""
    return str(name.get("family") or name.get("text") or ""), " ".join(name.get("given") or [])


def _id_of(resource: dict[str, Any], fallback: str) -> str:
    ident = (resource.get("identifier") or [{}])[0]
    return str(ident.get("value") or fallback)


def build(appt: dict[str, Any], env: Envelope, event: str,
          resources: dict[str, dict[str, Any]]) -> bytes:
    """ER7 bytes (CR after each segment, no MLLP framing) of SIU^``event`` for ``appt``;
    ``resources`` holds the referenced Patients, Practitioners and Locations by reference."""
    vt = version_tuple(env.version)
    source = _source(appt)
    status = str(appt.get("status") or "booked")
    filler_status = FILLER_STATUS.get(status, "Booked")
    sent = source.get("fillerStatus", "")
    if sent and t.FILLER_STATUS.get(sent.casefold()) == status:
        filler_status = sent  # the sender's own spelling, where it still says the same
    structure = "^SIU_S12" if vt >= (2, 3, 1) else ""
    segments = ["|".join(["MSH", ENC, _e(env.sending_application), _e(env.sending_facility),
                          _e(env.receiving_application), _e(env.receiving_facility),
                          env.timestamp, "", f"SIU^{event}{structure}", _e(env.control_id), "P",
                          env.version])]
    start, end = dtm(appt.get("start")), dtm(appt.get("end"))
    minutes = appt.get("minutesDuration")
    if minutes is None and appt.get("start") and appt.get("end"):
        span = parse_instant(appt["end"]) - parse_instant(appt["start"])
        minutes = int(span.total_seconds() // 60)
    identifiers = appt.get("identifier") or []
    placer = _ident(identifiers, "PLAC")
    sch = [""] * 26
    sch[0] = "SCH"
    sch[1] = f"{_e(placer['value'])}" if placer else ""
    sch[2] = f"{_e(appt.get('id', ''))}^{_e(env.sending_application)}"
    sch[6] = _ce(appt.get("cancelationReason")) if status == "cancelled" else ""
    sch[7] = _ce((appt.get("reasonCode") or [None])[0])
    sch[8] = _ce(appt.get("appointmentType"))
    if minutes is not None:
        sch[9], sch[10] = str(minutes), "min"
    if vt < (2, 5) and start:
        sch[11] = f"^^{minutes or ''}^{start}^{end}"
    sch[25] = filler_status
    segments.append("|".join(sch).rstrip("|"))
    if vt >= (2, 5) and start:
        segments.append(f"TQ1|1||||||{start}|{end}")
    if appt.get("comment"):
        segments.append(f"NTE|1||{_e(appt['comment'])}")
    people = _participants(appt)
    for ref in people["Patient"][:1]:
        segments.append(_pid(resources.get(ref, {}), ref))
    segments.append("RGS|1|A")
    for n, concept in enumerate(appt.get("serviceType") or [], 1):
        segments.append(f"AIS|{n}|A|{_ce(concept)}|{start}|||{minutes or ''}|min||"
                        f"{filler_status}")
    for kind, refs in (("AIG", people["Device"]), ("AIL", people["Location"]),
                       ("AIP", people["Practitioner"])):
        for i, ref in enumerate(refs, 1):
            segments.append(_resource_segment(kind, i, ref, resources.get(ref, {}), start,
                                              minutes, filler_status))
    return ("\r".join(segments) + "\r").encode("utf-8")


def _participants(appt: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"Patient": [], "Practitioner": [], "Location": [],
                                 "Device": []}
    actors = [(p.get("actor") or {}).get("reference") for p in appt.get("participant") or []
              if p.get("status") != "declined"]
    for ext in appt.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == DEVICE_PARTICIPANT:
            actors += [(s.get("valueReference") or {}).get("reference")
                       for s in ext.get("extension") or [] if s.get("url") == "actor"]
    for ref in actors:
        if isinstance(ref, str) and "/" in ref:
            kind = ref.split("/", 1)[0]
            kind = "Practitioner" if kind == "PractitionerRole" else kind
            if kind in out and ref not in out[kind]:
                out[kind].append(ref)
    return out


def _pid(patient: dict[str, Any], ref: str) -> str:
    ids = []
    for ident in patient.get("identifier") or []:
        system = str(ident.get("system") or "")
        authority = f"&{system[8:]}&ISO" if system.startswith("urn:oid:") else _e(system)
        ids.append(f"{_e(ident.get('value', ''))}^^^{authority}^MR")
    if not ids:
        ids = [f"{_e(ref.split('/', 1)[1])}^^^FHIR-SCHED^MR"]
    family, given = _name(patient)
    birth = str(patient.get("birthDate") or "").replace("-", "")
    return "|".join(["PID", "1", "", "~".join(ids), "", f"{_e(family)}^{_e(given)}".rstrip("^"),
                     "", birth, GENDER.get(str(patient.get("gender")), "")]).rstrip("|")


def _resource_segment(kind: str, n: int, ref: str, resource: dict[str, Any], start: str,
                      minutes: Any, status: str) -> str:
    ident = _e(_id_of(resource, ref.split("/", 1)[1]))
    family, given = _name(resource)
    if kind == "AIP":
        who = f"{ident}^{_e(family)}^{_e(given)}".rstrip("^")
    elif kind == "AIL":
        who = f"{ident}^^^^^^^^{_e(family)}".rstrip("^")
    else:  # AIG: quantity (6, 7) comes before the start (8), so it is four fields later
        who = f"{ident}^{_e(family)}".rstrip("^")
        return f"AIG|{n}|A|{who}|||||{start}|||{minutes or ''}|min||{status}"
    return f"{kind}|{n}|A|{who}|||{start}|||{minutes or ''}|min||{status}"
