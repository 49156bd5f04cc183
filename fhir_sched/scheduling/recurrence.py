"""Recurring series: R5's recurrence elements on R4 Appointments, and the dates they make.

R4 has no series. R5 keeps one as ordinary Appointments: the first carries the pattern
(``recurrenceTemplate``), every occurrence its number in it (``recurrenceId``) and a link to
the first (``originatingAppointment``), and one that no longer keeps to the pattern says so
(``occurrenceChanged``). Here they travel as the official R5-for-R4 cross-version extensions,
so a series stays plain R4 that any client can read, search and change one at a time.

Only weekly patterns are expanded (``recurrenceType`` ``wk``, on one or more weekdays, every
``weekInterval`` weeks): the therapy courses and follow-up series clinics book. Occurrences
keep the first one's wall-clock time in the pattern's time zone, so a 09:00 course stays at
09:00 across a daylight-saving change, and keep its length.

Numbers count the pattern's dates from 1, excluded ones included (``excludingRecurrenceId``
names them by number), so an occurrence that could not be booked leaves its number unused
and every booked one keeps the number the pattern gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import FhirError
from .extensions import get_ext, set_ext

XVER = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment."
TEMPLATE = XVER + "recurrenceTemplate"
RECURRENCE_ID = XVER + "recurrenceId"
ORIGINATING = XVER + "originatingAppointment"
CHANGED = XVER + "occurrenceChanged"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# R5 binds recurrenceType to UCUM units of time; a week is "wk".
UCUM = "http://unitsofmeasure.org"
IANA = "https://www.iana.org/time-zones"
WEEKLY = "wk"
_AT = "Appointment.extension('" + TEMPLATE + "')"


@dataclass(frozen=True, slots=True)
class Pattern:
    zone: ZoneInfo
    weekdays: tuple[int, ...]  # Monday is 0
    interval: int  # weeks between the weeks that have occurrences
    count: int | None  # occurrenceCount: the last number
    last: date | None  # lastOccurrenceDate, in the pattern's zone
    excluded_dates: frozenset[date]
    excluded_numbers: frozenset[int]

    @property
    def bounded(self) -> bool:
        return self.count is not None or self.last is not None


@dataclass(frozen=True, slots=True)
class Occurrence:
    number: int
    start: datetime
    end: datetime


def _bad(message: str, element: str = "") -> FhirError:
    return FhirError(422, "invalid", message,
                     expression=[f"{_AT}.extension('{element}')" if element else _AT])


def _sub(ext: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in ext.get("extension") or [] if isinstance(e, dict) and e.get("url") == name]


def _one(ext: dict[str, Any], name: str, key: str) -> Any:
    subs = _sub(ext, name)
    if len(subs) > 1:
        raise _bad(f"recurrenceTemplate: {name} is given {len(subs)} times; at most once", name)
    return subs[0].get(key) if subs else None


def template_of(appointment: dict[str, Any]) -> dict[str, Any] | None:
    return get_ext(appointment, TEMPLATE)


def pattern_of(appointment: dict[str, Any], default_zone: str) -> Pattern:
    """The recurrence the Appointment's ``recurrenceTemplate`` describes; a 422 naming the
    sub-extension when it is not one this server can book (so nothing is booked on a guess)."""
    ext = template_of(appointment)
    if ext is None:
        raise _bad("the Appointment has no recurrenceTemplate")
    kind = _one(ext, "recurrenceType", "valueCodeableConcept")
    codes = {c.get("code") for c in (kind or {}).get("coding") or [] if isinstance(c, dict)}
    if kind is not None and WEEKLY not in codes:
        raise FhirError(422, "not-supported", f"recurrenceTemplate: recurrenceType "
                        f"{sorted(str(c) for c in codes)} is not supported; this server books "
                        f"weekly series ({UCUM} code {WEEKLY!r})",
                        expression=[f"{_AT}.extension('recurrenceType')"])
    for other in ("monthlyTemplate", "yearlyTemplate", "occurrenceDate"):
        if _sub(ext, other):
            raise FhirError(422, "not-supported", f"recurrenceTemplate: {other} is not "
                            "supported; give a weeklyTemplate", expression=[
                                f"{_AT}.extension('{other}')"])
    zone_name = default_zone
    tz = _one(ext, "timezone", "valueCodeableConcept")
    if tz is not None:
        names = [c.get("code") for c in tz.get("coding") or [] if isinstance(c, dict)]
        if not names or not isinstance(names[0], str):
            raise _bad("recurrenceTemplate: timezone needs a coding with an IANA zone code",
                       "timezone")
        zone_name = names[0]
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _bad(f"recurrenceTemplate: {zone_name!r} is not an IANA time zone",
                   "timezone") from exc
    weekly = _sub(ext, "weeklyTemplate")
    if len(weekly) > 1:
        raise _bad("recurrenceTemplate: weeklyTemplate is given more than once", "weeklyTemplate")
    days: tuple[int, ...] = ()
    interval = 1
    if weekly:
        days = tuple(i for i, name in enumerate(WEEKDAYS)
                     if _one(weekly[0], name, "valueBoolean") is True)
        step = _one(weekly[0], "weekInterval", "valuePositiveInt")
        if step is not None:
            if not isinstance(step, int) or isinstance(step, bool) or step < 1:
                raise _bad("recurrenceTemplate: weekInterval must be a positive integer",
                           "weeklyTemplate")
            interval = step
    count = _one(ext, "occurrenceCount", "valuePositiveInt")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool)
                              or count < 1):
        raise _bad("recurrenceTemplate: occurrenceCount must be a positive integer",
                   "occurrenceCount")
    last = _date(_one(ext, "lastOccurrenceDate", "valueDate"), "lastOccurrenceDate")
    excluded_dates = frozenset(
        d for e in _sub(ext, "excludingDate")
        if (d := _date(e.get("valueDate"), "excludingDate")) is not None)
    numbers = [e.get("valuePositiveInt") for e in _sub(ext, "excludingRecurrenceId")]
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in numbers):
        raise _bad("recurrenceTemplate: excludingRecurrenceId must be positive integers",
                   "excludingRecurrenceId")
    return Pattern(zone, days, interval, count, last, excluded_dates,
                   frozenset(n for n in numbers if isinstance(n, int)))


def _date(value: Any, name: str) -> date | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError as exc:
        raise _bad(f"recurrenceTemplate: {name} must be a full date (YYYY-MM-DD)",
                   name) from exc


def expand(pattern: Pattern, start: datetime, end: datetime, until: datetime | None,
           limit: int) -> list[Occurrence]:
    """Every occurrence the pattern makes from the first one (``start``-``end``), up to its
    own end and never at or past ``until`` (the planning horizon); a 422 when that is more than
    ``limit``, or when nothing bounds the series at all."""
    if not pattern.bounded and until is None:
        raise _bad("recurrenceTemplate: give occurrenceCount or lastOccurrenceDate; no "
                   "planning horizon bounds this series")
    local = start.astimezone(pattern.zone)
    first_day, clock = local.date(), local.timetz().replace(tzinfo=None)
    length = end - start
    days = pattern.weekdays or (first_day.weekday(),)
    monday = first_day - timedelta(days=first_day.weekday())
    out: list[Occurrence] = []
    number, week = 0, 0
    while True:
        for wd in days:
            day = monday + timedelta(days=7 * week + wd)
            if day < first_day:
                continue
            at = start if day == first_day else datetime.combine(day, clock, pattern.zone)
            if ((pattern.count is not None and number >= pattern.count)
                    or (pattern.last is not None and day > pattern.last)
                    or (until is not None and at >= until)):
                return out
            number += 1
            if day in pattern.excluded_dates or number in pattern.excluded_numbers:
                continue
            if len(out) >= limit:
                raise FhirError(422, "too-costly", f"this series has more than {limit} "
                                "occurrences, the most one request books "
                                "(FHIR_SCHED_MAX_SERIES_OCCURRENCES); book it in parts, or "
                                "give an earlier lastOccurrenceDate", expression=[_AT])
            out.append(Occurrence(number, at, at + length))
        week += pattern.interval


def with_zone(template: dict[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    """The template with its time zone said (stored so, the series reads the same anywhere)."""
    subs = [e for e in template.get("extension") or [] if e.get("url") != "timezone"]
    return {**template, "extension": [
        {"url": "timezone", "valueCodeableConcept": {"coding": [
            {"system": IANA, "code": str(zone.key)}]}}, *subs]}


def occurrence(body: dict[str, Any], occ: Occurrence, origin: str | None,
               template: dict[str, Any]) -> dict[str, Any]:
    """``body`` as occurrence ``occ`` of a series: the originating one (``origin`` None)
    carries the template, every other one the link to ``origin``."""
    out = {**body, "start": occ.start.isoformat(timespec="seconds"),
           "end": occ.end.isoformat(timespec="seconds")}
    out = set_ext(out, RECURRENCE_ID, {"valuePositiveInt": occ.number})
    if origin is None:
        out = set_ext(out, ORIGINATING, None)
        return set_ext(out, TEMPLATE, {k: v for k, v in template.items() if k != "url"})
    out = set_ext(out, TEMPLATE, None)
    return set_ext(out, ORIGINATING, {"valueReference": {"reference": origin}})


def number_of(appointment: dict[str, Any]) -> int | None:
    ext = get_ext(appointment, RECURRENCE_ID)
    value = ext.get("valuePositiveInt") if ext else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def origin_of(appointment: dict[str, Any]) -> str | None:
    """The series' originating Appointment (``Appointment/<id>``), from an occurrence's link,
    or the Appointment itself when it carries the template; None outside any series."""
    ext = get_ext(appointment, ORIGINATING)
    ref = ((ext or {}).get("valueReference") or {}).get("reference")
    if isinstance(ref, str) and ref.startswith("Appointment/"):
        return ref
    if template_of(appointment) is not None and isinstance(appointment.get("id"), str):
        return f"Appointment/{appointment['id']}"
    return None


def note_moved(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """An occurrence whose time changed no longer keeps to its pattern: it says so
    (``occurrenceChanged``), whichever door moved it."""
    if old is None or number_of(new) is None:
        return new
    if (old.get("start"), old.get("end")) == (new.get("start"), new.get("end")):
        return new
    return set_ext(new, CHANGED, {"valueBoolean": True})
