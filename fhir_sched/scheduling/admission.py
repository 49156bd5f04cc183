"""Admission: whether the time a booking takes is time its resources actually offer.

Capacity claims (``guard``) stop two bookings from sharing what there is one of; they say
nothing about whether the time exists at all. This module does: a bookable resource that has a
calendar on this server (one or more active Schedules) may only be booked inside it, read
exactly as ``$find`` reads it, by running the availability engine on the resource's own
calendar with nobody else booked. So the rule cannot drift from what ``$find`` offers:

- template time: the start sits on the template's grid and consecutive units cover the visit,
  within the weekly hours in the template's zone, outside ``notAvailable`` and inside
  ``planningHorizon``; a ``busy-unavailable`` Slot blocks it;
- explicit Slots: bookable Slots of the resource's Schedules (free, or already partly taken:
  the claims decide how much is left) cover the visit without a gap, inside the horizon;
- a resource with no active Schedule here is not scheduled by this server: only capacity
  applies to it (a plain FHIR store of appointments keeps working);
- a Schedule marked ``blocked-time-only`` (the HL7 v2 bridge's, for a resource a feed blocked
  time on while it has no calendar here) offers nothing and limits nothing but its blocks:
  a booking overlapping one of its ``busy-unavailable`` Slots is refused, the rest is as for
  a resource with no Schedule;
- nothing that involves a resource scheduled here starts in the past (less a configured
  grace).

Everything here reads the unit it runs in, so what it checks is what commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from ..query import AnyOf, Cond, Entry, Query
from ..storage.base import Unit
from ..timeutil import parse_instant, to_us
from .availability import Busy, ResourceCalendar, free_units
from .extensions import BLOCKED_TIME_ONLY
from .templates import Template, TemplateError, horizon, parse_templates

# How many Slots of one resource's calendars a single booking may overlap and still be checked;
# a visit spanning more explicit Slots than this is refused rather than read without bound.
MAX_SLOTS_PER_BOOKING = 200
_BOOKABLE_SLOT = frozenset({"free", "busy-tentative", "busy"})
_BLOCKING_SLOT = frozenset({"busy-unavailable"})
_LOOKAHEAD = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Breach:
    """One rule a booking breaks, worded for the person who has to fix it."""

    code: str  # "past" | "outside-availability" | "patient-overlap" | "capacity"
    message: str


@dataclass(frozen=True, slots=True)
class _Calendar:
    templates: tuple[Template, ...]
    horizon: tuple[datetime | None, datetime | None]


@lru_cache(maxsize=4096)
def _blocks_only(body: bytes) -> bool:
    schedule = orjson.loads(body)
    return schedule.get("active") is not False and any(
        isinstance(e, dict) and e.get("url") == BLOCKED_TIME_ONLY and e.get("valueBoolean")
        for e in schedule.get("extension") or [])


@lru_cache(maxsize=4096)
def _calendar(body: bytes) -> _Calendar | None:
    """A stored Schedule's templates and horizon, parsed once per stored version; None for an
    inactive one (it offers nothing and constrains nothing) or one that only carries blocks."""
    schedule = orjson.loads(body)
    if schedule.get("active") is False or _blocks_only(body):
        return None
    try:
        return _Calendar(tuple(parse_templates(schedule)), horizon(schedule))
    except TemplateError:
        return _Calendar((), (None, None))  # validated on write; unreadable means it offers none


def in_past(start: datetime, now: datetime, grace: timedelta) -> Breach | None:
    if start < now - grace:
        return Breach("past", f"the appointment starts in the past ({start.isoformat()}); "
                      "choose a time from now on")
    return None


async def availability_breach(unit: Unit, actor: str, schedules: list[tuple[str, bytes]],
                              start: datetime, end: datetime) -> tuple[bool, Breach | None]:
    """Whether ``actor`` has a calendar here (``schedules``: the Schedules naming it, as
    ``capacity.unit_schedules`` reads them), and (None when it offers [start, end) or has
    none) why it does not offer that time."""
    calendars: dict[str, _Calendar] = {}
    for sid, body in schedules:
        cal = _calendar(body)
        if cal is not None:
            calendars[sid] = cal
    blocking = sorted(sid for sid, body in schedules if _blocks_only(body))
    if blocking:
        held = await _slots(unit, blocking, start, end)
        if held is None or any(s.get("status") in _BLOCKING_SLOT
                               for slots in held.values() for s in slots):
            return bool(calendars), Breach(
                "outside-availability", f"{actor} is blocked from {start.isoformat()} to "
                f"{end.isoformat()} (time blocked by its owner's calendar)")
    if not calendars:
        return False, None
    slots = await _slots(unit, sorted(calendars), start, end)
    if slots is None:
        return True, Breach("outside-availability", f"{actor}: the visit overlaps more than "
                      f"{MAX_SLOTS_PER_BOOKING} Slots; book a shorter visit")
    duration = end - start
    for sid, cal in calendars.items():
        mine = slots.get(sid, [])
        if cal.templates and _template_offers(sid, cal, mine, start, duration):
            return True, None
        if _slots_cover(cal, mine, start, end):
            return True, None
    return True, Breach(
        "outside-availability", f"{actor} is not available from {start.isoformat()} to "
        f"{end.isoformat()} (outside its hours, off its slot grid, in a block or holiday, "
        "beyond its planning horizon, or no free Slot); use $find for times it offers")


def _template_offers(sid: str, cal: _Calendar, slots: list[dict[str, Any]], start: datetime,
                     duration: timedelta) -> bool:
    blocks = sorted((Busy(parse_instant(s["start"]), parse_instant(s["end"]), 1 << 30)
                     for s in slots if s.get("status") in _BLOCKING_SLOT),
                    key=lambda b: b.start)
    calendar = ResourceCalendar("", sid, list(cal.templates), cal.horizon, blocks, [])
    cursor = free_units(calendar, start, start + duration + _LOOKAHEAD, duration)
    return cursor.head is not None and cursor.head[0] == start


def _slots_cover(cal: _Calendar, slots: list[dict[str, Any]], start: datetime,
                 end: datetime) -> bool:
    lo, hi = cal.horizon
    if (lo is not None and start < lo) or (hi is not None and end > hi):
        return False
    if any(s.get("status") in _BLOCKING_SLOT for s in slots):
        return False
    reach = start
    for s_start, s_end in sorted((parse_instant(s["start"]), parse_instant(s["end"]))
                                 for s in slots if s.get("status") in _BOOKABLE_SLOT):
        if s_start > reach:
            break
        reach = max(reach, s_end)
        if reach >= end:
            return True
    return False


async def _slots(unit: Unit, schedule_ids: list[str], start: datetime, end: datetime
                 ) -> dict[str, list[dict[str, Any]]] | None:
    """The Slots of these Schedules overlapping [start, end), by Schedule id (None: too many)."""
    refs = tuple(Entry("schedule", (Cond("val", "=", f"Schedule/{s}"),)) for s in schedule_ids)
    q = Query("Slot", (
        refs[0] if len(refs) == 1 else AnyOf(refs),
        Entry("start", (Cond("lo", "<", to_us(end)),)),
        Entry("end", (Cond("hi", ">", to_us(start)),)),
    ), count=MAX_SLOTS_PER_BOOKING + 1)
    ids = await unit.find_ids(q, limit=MAX_SLOTS_PER_BOOKING + 1)
    if len(ids) > MAX_SLOTS_PER_BOOKING:
        return None
    out: dict[str, list[dict[str, Any]]] = {}
    for slot_id in ids:
        rec = await unit.get("Slot", slot_id)
        if rec is None or rec.deleted or rec.body is None:
            continue
        slot = orjson.loads(rec.body)
        ref = (slot.get("schedule") or {}).get("reference", "")
        if isinstance(ref, str) and ref.startswith("Schedule/"):
            out.setdefault(ref.split("/", 1)[1], []).append(slot)
    return out
