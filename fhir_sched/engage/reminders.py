"""Which reminders a booking is owed, as CommunicationRequest resources: pure, so the planner
(``planner.py``) can reconcile what is stored with what should be after every change.

A reminder is one lead time of one appointment, by every channel that reaches the patient:
"72 h before, by email and SMS" is one CommunicationRequest with two ``medium`` entries (and,
once sent, one Communication per channel). Its key (the identifier) names the appointment and
the lead, so a reschedule finds the same reminder and moves it, and a second run of the
planner over the same change finds nothing to do. Times are the patient's: the due time is
moved out of the quiet hours in the patient's zone (the core ``timezone`` extension on
Patient, else the clinic's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..scheduling.booking_rules import TIMEZONE_URL
from ..timeutil import format_instant, parse_instant

NOTICE_SYSTEM = "https://fhir-sched.org/fhir/CodeSystem/notice-kind"
CHANNEL_SYSTEM = "https://fhir-sched.org/fhir/CodeSystem/notice-channel"
PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
REMINDER_KEY_SYSTEM = "https://fhir-sched.org/fhir/reminder"
OPT_OUT_URL = "https://fhir-sched.org/fhir/StructureDefinition/notice-opt-out"
# The visit start a notice was planned for: an invitation already sent names that time, and a
# later start means the patient's calendar must be told.
VISIT_START_URL = "https://fhir-sched.org/fhir/StructureDefinition/notice-visit-start"
# Bookings that are owed reminders; any other status owes none (and revokes what was planned).
REMINDED = frozenset({"booked"})
_MODE = {"email": ("EMAILWRIT", "email"), "sms": ("SMSWRIT", "SMS")}


@dataclass(frozen=True, slots=True)
class Planned:
    key: str  # "<appointment id>/<lead minutes>m"
    channels: tuple[str, ...]
    lead: timedelta
    due: datetime
    zone: str = "UTC"  # the patient's


def quiet_hours(text: str) -> tuple[time, time] | None:
    """``21:00-08:00`` as (start, end); empty: None. Raises ValueError when unreadable."""
    if not text.strip():
        return None
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError(f"quiet hours {text!r} are not HH:MM-HH:MM")
    return time.fromisoformat(start.strip()), time.fromisoformat(end.strip())


def _in_quiet(local: time, quiet: tuple[time, time]) -> bool:
    start, end = quiet
    return start <= local < end if start <= end else local >= start or local < end


def outside_quiet(due: datetime, zone: ZoneInfo, quiet: tuple[time, time] | None) -> datetime:
    """``due``, or, when it falls in the quiet hours, the last minute before they began: a
    reminder may come early, never later than promised."""
    if quiet is None:
        return due
    local = due.astimezone(zone)
    if not _in_quiet(local.time().replace(tzinfo=None), quiet):
        return due
    begin = datetime.combine(local.date(), quiet[0], tzinfo=zone)
    if begin > local:  # quiet hours that began the evening before
        begin -= timedelta(days=1)
    return (begin - timedelta(minutes=1)).astimezone(due.tzinfo)


def patient_zone(patient: Mapping[str, Any] | None, fallback: ZoneInfo) -> ZoneInfo:
    for ext in (patient or {}).get("extension") or []:
        if isinstance(ext, Mapping) and ext.get("url") == TIMEZONE_URL:
            try:
                return ZoneInfo(str(ext.get("valueCode")))
            except (ZoneInfoNotFoundError, ValueError):
                break
    return fallback


def opted_out(patient: Mapping[str, Any] | None) -> frozenset[str]:
    """Channels the patient said no to (``notice-opt-out``: a channel code, or ``all``)."""
    codes = {str(ext.get("valueCode")) for ext in (patient or {}).get("extension") or []
             if isinstance(ext, Mapping) and ext.get("url") == OPT_OUT_URL}
    return frozenset({"email", "sms", "webhook"} if "all" in codes else codes)


def address(patient: Mapping[str, Any] | None, channel: str) -> str | None:
    """Where ``channel`` reaches the patient: the best-ranked current email, or SMS-capable
    number (system sms, or a mobile phone). The webhook needs no address of the patient's."""
    if channel == "webhook":
        return ""
    found: list[tuple[int, str]] = []
    for point in (patient or {}).get("telecom") or []:
        if not isinstance(point, Mapping) or not isinstance(point.get("value"), str):
            continue
        if point.get("use") == "old" or (point.get("period") or {}).get("end"):
            continue
        system = point.get("system")
        if (channel == "email" and system == "email") or (channel == "sms" and (
                system == "sms" or (system == "phone" and point.get("use") == "mobile"))):
            rank = point.get("rank")
            found.append((rank if isinstance(rank, int) else 1 << 30, point["value"]))
    return min(found)[1] if found else None


def reachable(patient: Mapping[str, Any] | None, configured: Iterable[str],
              allowed: Sequence[str]) -> list[str]:
    """The channels a reminder goes by: configured on this server, allowed by the visit type
    (all when it names none), not refused by the patient, and with an address to send to."""
    out = []
    refused = opted_out(patient)
    for channel in configured:
        if (allowed and channel not in allowed) or channel in refused:
            continue
        if address(patient, channel) is not None:
            out.append(channel)
    return out


def plan(appointment_id: str, appointment: Mapping[str, Any], leads: Sequence[timedelta],
         channels: Sequence[str], zone: ZoneInfo, quiet: tuple[time, time] | None,
         now: datetime) -> list[Planned]:
    """The reminders a booking is owed now: none unless it is booked; none whose time has
    passed (a visit booked for tomorrow gets its 24 h reminder, not its 72 h one)."""
    if appointment.get("status") not in REMINDED or not appointment.get("start"):
        return []
    start = parse_instant(str(appointment["start"]))
    if start <= now:
        return []
    out = []
    for lead in leads:
        due = outside_quiet(start - lead, zone, quiet)
        if due <= now:
            continue
        minutes = int(lead.total_seconds() // 60)
        out.append(Planned(f"{appointment_id}/{minutes}m", tuple(channels), lead, due,
                           zone.key))
    return out


def medium(channel: str) -> dict[str, Any]:
    codings = [{"system": CHANNEL_SYSTEM, "code": channel}]
    if channel in _MODE:
        code, display = _MODE[channel]
        codings.insert(0, {"system": PARTICIPATION_MODE, "code": code, "display": display})
    return {"coding": codings, "text": channel}


def channels_of(request: Mapping[str, Any]) -> tuple[str, ...]:
    """The channels a CommunicationRequest asks for, in its ``medium`` order (each medium
    read by our own code, or by its ParticipationMode code for email and SMS)."""
    out: list[str] = []
    for concept in request.get("medium") or []:
        for coding in (concept or {}).get("coding") or []:
            system, code = coding.get("system"), coding.get("code")
            if system == CHANNEL_SYSTEM and code in ("email", "sms", "webhook"):
                out.append(str(code))
                break
            if system == PARTICIPATION_MODE and code in ("EMAILWRIT", "SMSWRIT"):
                out.append("email" if code == "EMAILWRIT" else "sms")
                break
    return tuple(dict.fromkeys(out))


def is_due(request: Mapping[str, Any], now: datetime) -> bool:
    """Whether a request's time has come (one without a readable time never is)."""
    value = request.get("occurrenceDateTime")
    try:
        return isinstance(value, str) and parse_instant(value) <= now
    except ValueError:
        return False


def kind_of(request: Mapping[str, Any]) -> str:
    for concept in request.get("category") or []:
        for coding in (concept or {}).get("coding") or []:
            if coding.get("system") == NOTICE_SYSTEM and isinstance(coding.get("code"), str):
                return str(coding["code"])
    return "message"


def key_of(request: Mapping[str, Any]) -> str | None:
    for ident in request.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("system") == REMINDER_KEY_SYSTEM:
            return str(ident.get("value"))
    return None


def request_id(key: str, version: int) -> str:
    """Deterministic, so the planner running twice over one change writes one resource; the
    appointment's version is part of it, so a reminder sent (or revoked) for an earlier state
    of the booking never stands in the way of the one its new state is owed."""
    return "rem-" + hashlib.sha256(f"{key}|{version}".encode()).hexdigest()[:40]


def request_body(planned: Planned, appointment_id: str, patient: str, start: str,
                 authored: datetime, kind: str = "reminder", zone: str = "UTC"
                 ) -> dict[str, Any]:
    """``zone``: the patient's, which the message shows the time in (the core ``timezone``
    extension, so the delivery worker needs no second lookup)."""
    return {
        "resourceType": "CommunicationRequest",
        "extension": [{"url": VISIT_START_URL, "valueDateTime": start},
                      {"url": TIMEZONE_URL, "valueCode": zone}],
        "identifier": [{"system": REMINDER_KEY_SYSTEM, "value": planned.key}],
        "basedOn": [{"reference": f"Appointment/{appointment_id}"}],
        "status": "active",
        "category": [{"coding": [{"system": NOTICE_SYSTEM, "code": kind}]}],
        "priority": "routine",
        "medium": [medium(c) for c in planned.channels],
        "subject": {"reference": patient},
        "recipient": [{"reference": patient}],
        "occurrenceDateTime": format_instant(planned.due),
        "authoredOn": format_instant(authored),
        "note": [{"text": f"{kind} for the visit at {start}, {_lead_words(planned.lead)} "
                          f"before"}],
    }


def visit_start(request: Mapping[str, Any]) -> str | None:
    for ext in request.get("extension") or []:
        if isinstance(ext, Mapping) and ext.get("url") == VISIT_START_URL:
            value = ext.get("valueDateTime")
            return value if isinstance(value, str) else None
    return None


def _lead_words(lead: timedelta) -> str:
    minutes = int(lead.total_seconds() // 60)
    if minutes % 1440 == 0:
        return f"{minutes // 1440} day(s)"
    if minutes % 60 == 0:
        return f"{minutes // 60} hour(s)"
    return f"{minutes} minute(s)"
