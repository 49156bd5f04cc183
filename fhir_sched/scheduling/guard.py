"""The booking guard: the one mechanism that decides whether time may be taken.

``guard_appointment`` is the Appointment type's write rule (declared in
``resources/appointment.py``); the write pipeline calls it inside the atomic unit of every
Appointment write, whatever the door (plain REST, ``$hold``, ``$book``, a transaction entry,
HL7 v2). Capacity is a set of unique *claims* in the database (spelled by ``claims``): for each
resource the appointment needs, one seat per 5-minute unit it covers (plus that resource's
buffers), below the resource's capacity (``capacity.resource_policy``), and one per explicit
Slot. A unique key cannot be inserted twice, so two processes racing for the last unit cannot
both win, on SQLite or MongoDB alike. A hold's claims carry its expiry, so an expired hold stops
blocking the moment it expires; the sweeper only tidies up afterwards.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import FhirError
from ..storage.base import Unit
from ..timeutil import now_instant, parse_instant
from ..writes import FollowUp, WriteEvent
from . import claims, participants
from .capacity import stored_schedule_policy, unit_policy
from .extensions import hold_expiry, overbook_requested
from .status import SLOT_STATUS, TAKING, check_transition


def resource_actors(appointment: dict[str, Any]) -> list[str]:
    """Every bookable actor, participant or device-participant extension (``participants``)."""
    return participants.resource_actors(appointment)


def slot_ids(appointment: dict[str, Any] | None) -> list[str]:
    out = []
    for s in (appointment or {}).get("slot") or []:
        ref = s.get("reference") if isinstance(s, dict) else None
        if isinstance(ref, str) and ref.startswith("Slot/"):
            out.append(ref.split("/")[1])
    return list(dict.fromkeys(out))


async def guard_appointment(unit: Unit, ev: WriteEvent) -> list[FollowUp]:
    """The Appointment write rule: status machine, capacity claims, Slots following along."""
    old_status = (ev.old or {}).get("status")
    if ev.new is not None:
        check_transition(old_status, ev.new.get("status", ""))
    # Start from nothing: a modified booking re-claims what it needs now. A new one owns
    # nothing yet (every write of an id, its deletion included, passes here and releases),
    # so the store round trip is skipped for it.
    if ev.old is not None:
        await unit.release("Appointment", ev.id)
    new = ev.new
    if new is not None and new.get("status") in TAKING and new.get("start") and new.get("end"):
        await _claim_all(unit, ev, new)
    return await _follow_slots(unit, ev)


async def _claim_all(unit: Unit, ev: WriteEvent, appt: dict[str, Any]) -> None:
    start, end = parse_instant(appt["start"]), parse_instant(appt["end"])
    expires = hold_expiry(appt) if appt.get("status") == "pending" else None
    now = now_instant()
    if expires is not None and expires <= now and ev.old is None:
        raise FhirError(409, "conflict", "the hold has already expired", severity="fatal")
    overbook = overbook_requested(appt)
    if overbook and not ev.ctx.may_overbook:
        raise FhirError(
            403, "forbidden",
            "this caller may not overbook; remove the overbooked extension or ask a scheduler "
            "with that right", expression=["Appointment.extension"])
    owner = ("Appointment", ev.id)
    for actor in resource_actors(appt):
        policy = await unit_policy(unit, actor)
        for u in claims.units(start - policy.buffer_before, end + policy.buffer_after):
            prefix = claims.unit_prefix(actor, u)
            if not await _take(unit, prefix, policy.capacity, owner, expires, now, overbook):
                local = u.isoformat().replace("+00:00", "Z")
                raise FhirError(
                    409, "conflict", f"{actor} has no capacity left at {local}"
                    f" (capacity {policy.capacity}); choose another time", severity="fatal")
    for sid in slot_ids(appt):
        slot = await unit.get("Slot", sid)
        if slot is None or slot.deleted or slot.body is None:
            raise FhirError(
                422, "not-found", f"Slot/{sid} does not exist", expression=["Appointment.slot"])
        body = orjson.loads(slot.body)
        status = body.get("status")
        if status in ("busy-unavailable", "entered-in-error"):
            raise FhirError(409, "conflict", f"Slot/{sid} is {status}", severity="fatal")
        capacity = await _slot_capacity(unit, body)
        if not await _take(unit, claims.slot_prefix(sid), capacity, owner, expires, now,
                           overbook):
            raise FhirError(409, "conflict", f"Slot/{sid} is already taken", severity="fatal")


async def _slot_capacity(unit: Unit, slot: dict[str, Any]) -> int:
    sched = (slot.get("schedule") or {}).get("reference", "")
    if not isinstance(sched, str) or not sched.startswith("Schedule/"):
        return 1
    rec = await unit.get("Schedule", sched.split("/", 1)[1])
    if rec is None or rec.deleted or rec.body is None:
        return 1
    return stored_schedule_policy(rec.body).capacity


async def _take(unit: Unit, prefix: str, capacity: int, owner: tuple[str, str],
                expires: str | None, now: str, overbook: bool) -> bool:
    for n in range(capacity):
        if await unit.claim(prefix + claims.seat(n), *owner, expires=expires, now=now):
            return True
    if overbook:
        n = capacity
        while not await unit.claim(prefix + claims.overbook_seat(n), *owner, expires=expires,
                                   now=now):
            n += 1
        return True
    return False


async def _follow_slots(unit: Unit, ev: WriteEvent) -> list[FollowUp]:
    """Slots follow their appointment: tentative while held, busy when booked, free when
    nothing claims them any more (a capacity-3 slot stays busy while others hold it)."""
    out: list[FollowUp] = []
    new_slots = slot_ids(ev.new)
    status_new = (ev.new or {}).get("status")
    for sid in dict.fromkeys(slot_ids(ev.old) + new_slots):
        rec = await unit.get("Slot", sid)
        if rec is None or rec.deleted or rec.body is None:
            continue
        slot = orjson.loads(rec.body)
        if slot.get("status") in ("busy-unavailable", "entered-in-error"):
            continue
        held = await unit.count_claims(claims.slot_prefix(sid))
        if held == 0:
            target = "free"
        elif sid in new_slots and status_new in SLOT_STATUS:
            target = SLOT_STATUS[status_new]
        else:
            target = "busy"
        overbooked = await unit.count_claims(claims.slot_overbook_prefix(sid)) > 0
        if slot.get("status") == target and bool(slot.get("overbooked")) == overbooked:
            continue
        slot["status"] = target
        if overbooked:
            slot["overbooked"] = True
        else:
            slot.pop("overbooked", None)
        slot.pop("meta", None)
        out.append(FollowUp("Slot", sid, slot))
    return out
