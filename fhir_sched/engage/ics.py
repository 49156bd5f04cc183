"""Appointments as RFC 5545 iCalendar, for invitation emails (RFC 5546) and subscribed feeds.

Times are written as local time with TZID=zone plus a VTIMEZONE for that zone, not in UTC: a
09:00 visit then stays 09:00 in clients that resolve TZID with their own tz database, and clients
that trust only the VTIMEZONE agree with them, across DST changes too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
from icalendar.enums import STATUS

from fhir_sched.timeutil import parse_instant

_NO_NAMES: Mapping[str, str] = MappingProxyType({})
_STATUS = {
    **dict.fromkeys(("booked", "arrived", "fulfilled", "checked-in"), "CONFIRMED"),
    **dict.fromkeys(("proposed", "pending", "waitlist"), "TENTATIVE"),
    **dict.fromkeys(("cancelled", "noshow", "entered-in-error"), "CANCELLED"),
}
_METHODS = (None, "PUBLISH", "REQUEST", "CANCEL")


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One appointment as a calendar shows it; built from an Appointment by appointment_event,
    or directly by callers that know the people's emails."""

    uid: str
    start: datetime
    end: datetime
    zone: str
    summary: str
    status: str
    sequence: int
    stamp: datetime
    description: str = ""
    location: str = ""
    url: str = ""
    organizer: Person | None = None
    attendees: tuple[Person, ...] = ()

    def __post_init__(self) -> None:
        # A naive datetime would be written as floating time: a different instant in every zone.
        for field in ("start", "end", "stamp"):
            if getattr(self, field).utcoffset() is None:
                raise ValueError(f"Event.{field} must be timezone-aware")


def appointment_event(
    appointment: Mapping[str, Any],
    *,
    uid_domain: str,
    zone: str,
    names: Mapping[str, str] = _NO_NAMES,
    summary: str | None = None,
    join_url: str = "",
    stamp: datetime | None = None,
) -> Event | None:
    """An Event for a FHIR R4 Appointment (a dict as parsed from JSON), None when it has no
    start/end: a proposed Appointment without a time yet has nothing to put in a calendar.

    ``names`` maps references ("Practitioner/7") to display names, so that the caller decides
    what is shown; only names are written, never references or identifiers. Without ``stamp``,
    DTSTAMP is meta.lastUpdated, which keeps a feed's bytes stable while nothing changes.
    """
    if not appointment.get("start") or not appointment.get("end"):
        return None
    tz = ZoneInfo(zone)
    meta = appointment.get("meta") or {}
    version = str(meta.get("versionId") or "")
    if stamp is None:
        updated = meta.get("lastUpdated")
        stamp = parse_instant(updated) if updated else datetime.now(UTC)
    who = _actor_names(appointment, ("Practitioner/", "PractitionerRole/"), names)
    lines = [f"With: {', '.join(who)}"] if who else []
    lines += [appointment[k] for k in ("comment", "patientInstruction") if appointment.get(k)]
    if join_url:
        lines.append(f"Join: {join_url}")
    return Event(
        uid=f"Appointment-{appointment['id']}@{uid_domain}",
        start=parse_instant(appointment["start"]).astimezone(tz),
        end=parse_instant(appointment["end"]).astimezone(tz),
        zone=zone,
        summary=summary or _title(appointment),
        status=_STATUS.get(appointment.get("status", ""), "TENTATIVE"),
        sequence=int(version) if version.isdigit() else 0,
        stamp=stamp,
        description="\n".join(lines),
        location=", ".join(_actor_names(appointment, ("Location/",), names)),
        url=join_url,
        attendees=tuple(Person(n) for n in _actor_names(appointment, ("Patient/",), names)),
    )


def cancelled(event: Event, *, stamp: datetime) -> Event:
    """The event as a METHOD:CANCEL carries it: clients apply a change only when its SEQUENCE is
    higher than the one they hold (RFC 5546 2.1.4)."""
    return replace(event, status="CANCELLED", sequence=event.sequence + 1, stamp=stamp)


def calendar(
    events: Iterable[Event],
    *,
    method: str | None = None,
    name: str = "",
    refresh: timedelta | None = None,
    prodid: str = "-//fhir-sched//EN",
) -> bytes:
    """A VCALENDAR (CRLF line endings, folded lines, as icalendar writes) holding one VEVENT per
    event and one VTIMEZONE per zone used. method: "REQUEST" | "CANCEL" | "PUBLISH" | None (a
    feed: no METHOD or PUBLISH). name: X-WR-CALNAME and NAME (RFC 7986). refresh:
    REFRESH-INTERVAL (RFC 7986) and X-PUBLISHED-TTL, for subscribed feeds.

    Persons without an email are left out of ORGANIZER/ATTENDEE: those need a calendar address,
    and clients reject or try to mail invented ones.
    """
    if method not in _METHODS:
        raise ValueError(f"unsupported iTIP method {method!r}")
    cal = icalendar.Calendar()
    cal.add("prodid", prodid)
    cal.add("version", "2.0")
    if method:
        cal.add("method", method)
    if name:
        cal.calendar_name = name
    if refresh is not None:
        # icalendar's refresh_interval setter omits VALUE=DURATION, which RFC 7986 requires.
        cal.add("refresh-interval", icalendar.vDuration(refresh), parameters={"VALUE": "DURATION"})
        cal.add("x-published-ttl", icalendar.vDuration(refresh))
    events = list(events)
    for event in events:
        cal.add_component(_vevent(event))
    if events:
        # Whole calendar years, so each VTIMEZONE holds both sides of its DST rule and stays
        # short; icalendar's default span (1970-2038) is longer and misses later appointments.
        first = min(e.start.astimezone(ZoneInfo(e.zone)).year for e in events)
        last = max(e.end.astimezone(ZoneInfo(e.zone)).year for e in events)
        cal.add_missing_timezones(date(first, 1, 1), date(last + 1, 1, 1))
    ics: bytes = cal.to_ical()  # icalendar 7 leaves to_ical's return type unannotated
    return ics


def _vevent(event: Event) -> icalendar.Event:
    tz = ZoneInfo(event.zone)
    organizer = event.organizer
    return icalendar.Event.new(
        uid=event.uid,
        start=event.start.astimezone(tz),
        end=event.end.astimezone(tz),
        stamp=event.stamp.astimezone(UTC),
        sequence=event.sequence,
        status=STATUS(event.status),
        summary=event.summary,
        description=event.description or None,
        location=event.location or None,
        url=event.url or None,
        organizer=_address(organizer) if organizer and organizer.email else None,
        attendees=[_address(p) for p in event.attendees if p.email] or None,
    )


def _address(person: Person) -> icalendar.vCalAddress:
    address = icalendar.vCalAddress(f"mailto:{person.email}")
    if person.name:
        address.params["CN"] = person.name
    return address


def _actor_names(
    appointment: Mapping[str, Any], prefixes: tuple[str, ...], names: Mapping[str, str]
) -> list[str]:
    """Names of the participants whose actor reference starts with one of the prefixes; those
    who declined are not shown as taking part."""
    found = []
    for participant in appointment.get("participant") or ():
        actor = participant.get("actor") or {}
        reference = actor.get("reference") or ""
        if participant.get("status") == "declined" or not reference.startswith(prefixes):
            continue
        if shown := names.get(reference) or actor.get("display"):
            found.append(shown)
    return found


def _title(appointment: Mapping[str, Any]) -> str:
    if appointment.get("description"):
        return str(appointment["description"])
    types = appointment.get("appointmentType")
    for concept in [*(appointment.get("serviceType") or ()), *([types] if types else ())]:
        displays = [c["display"] for c in concept.get("coding") or () if c.get("display")]
        if text := concept.get("text") or next(iter(displays), None):
            return str(text)
    return "Appointment"
