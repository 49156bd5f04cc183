"""The booking guard: the one mechanism that decides whether time may be taken.

Every Appointment write, whatever its door (plain REST, ``$hold``, ``$book``, transactions, HL7
v2), passes through ``BookingGuard.on_write`` inside the write's atomic unit. Capacity is a set
of unique *claims* in the database: for each resource the appointment needs, one claim per
5-minute unit it covers (plus that resource's buffers), numbered up to the resource's capacity,
and one per explicit Slot. A unique key cannot be inserted twice, so two processes racing for
the last unit cannot both win, on SQLite or MongoDB alike. A hold's claims carry its expiry, so
an expired hold stops blocking the moment it expires; the sweeper only tidies up afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import FhirError
from ..query import Cond, Entry, Query
from ..storage.base import Unit
from ..timeutil import format_instant, now_instant, parse_instant
from .extensions import hold_expiry, overbook_requested
from .status import SLOT_STATUS, TAKING, check_transition
from .templates import TemplateError, parse_templates

if TYPE_CHECKING:
    from ..service.resources import ResourceService, WriteEvent

GRID = timedelta(minutes=5)
# Participant actor types whose time is a bookable resource. Patients are not: a patient's
# overlapping bookings are kept out of $find offers instead of being refused outright.
RESOURCE_TYPES = frozenset(
    {"Practitioner", "PractitionerRole", "Location", "Device", "HealthcareService", "RelatedPerson"}
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Policy:
    capacity: int = 1
    buffer_before: timedelta = timedelta(0)
    buffer_after: timedelta = timedelta(0)


def _floor(dt: datetime) -> datetime:
    return dt - (dt - _EPOCH) % GRID


def units(start: datetime, end: datetime) -> list[datetime]:
    """The 5-minute grid units that [start, end) touches."""
    out, t = [], _floor(start)
    while t < end:
        out.append(t)
        t += GRID
    return out


def resource_actors(appointment: dict[str, Any]) -> list[str]:
    actors = []
    for p in appointment.get("participant") or []:
        if (
            not isinstance(p, dict)
            or p.get("status") == "declined"
            or p.get("required") == "information-only"
        ):
            continue
        ref = (p.get("actor") or {}).get("reference")
        if isinstance(ref, str) and "://" not in ref and ref.split("/")[0] in RESOURCE_TYPES:
            actors.append(ref)
    return list(dict.fromkeys(actors))


def slot_ids(appointment: dict[str, Any] | None) -> list[str]:
    out = []
    for s in (appointment or {}).get("slot") or []:
        ref = s.get("reference") if isinstance(s, dict) else None
        if isinstance(ref, str) and ref.startswith("Slot/"):
            out.append(ref.split("/")[1])
    return list(dict.fromkeys(out))


def claim_prefix(resource: str) -> str:
    return f"cap|{resource}|"


_POLICY_CACHE = 4096


class BookingGuard:
    def __init__(self, service: ResourceService) -> None:
        self.service = service
        # Parsed policy per stored Schedule body. The body is still read inside every unit (so
        # the policy is always the committed one); only re-parsing the same bytes is saved.
        self._policies: dict[bytes, Policy] = {}

    async def on_write(self, unit: Unit, ev: WriteEvent) -> None:
        if ev.type != "Appointment":
            return
        old_status = (ev.old or {}).get("status")
        if ev.new is not None:
            check_transition(old_status, ev.new.get("status", ""))
        owner = ("Appointment", ev.id)
        # Start from nothing: a modified booking re-claims what it needs now. A new one owns
        # nothing yet (every write of an id, its deletion included, passes here and releases),
        # so the store round trip is skipped for it.
        if ev.old is not None:
            await unit.release(*owner)
        new = ev.new
        if new is not None and new.get("status") in TAKING and new.get("start") and new.get("end"):
            await self._claim_all(unit, ev, new)
        await self._sync_slots(unit, ev)

    async def _claim_all(self, unit: Unit, ev: WriteEvent, appt: dict[str, Any]) -> None:
        start, end = parse_instant(appt["start"]), parse_instant(appt["end"])
        expires = hold_expiry(appt) if appt.get("status") == "pending" else None
        now = now_instant()
        if expires is not None and expires <= now and ev.old is None:
            raise FhirError(409, "conflict", "the hold has already expired", severity="fatal")
        overbook = overbook_requested(appt)
        if overbook and not ev.ctx.may_overbook:
            raise FhirError(
                403,
                "forbidden",
                "this caller may not overbook; remove the "
                "overbooked extension or ask a scheduler with that right",
                expression=["Appointment.extension"],
            )
        owner = ("Appointment", ev.id)
        for actor in resource_actors(appt):
            policy = await self._policy(unit, actor)
            span = units(start - policy.buffer_before, end + policy.buffer_after)
            for u in span:
                key = f"{claim_prefix(actor)}{format_instant(u)}|"
                if not await self._take(unit, key, policy.capacity, owner, expires, now, overbook):
                    local = u.isoformat().replace("+00:00", "Z")
                    raise FhirError(
                        409,
                        "conflict",
                        f"{actor} has no capacity left at {local}"
                        f" (capacity {policy.capacity}); choose another time",
                        severity="fatal",
                    )
        for sid in slot_ids(appt):
            slot = await unit.get("Slot", sid)
            if slot is None or slot.deleted or slot.body is None:
                raise FhirError(
                    422, "not-found", f"Slot/{sid} does not exist", expression=["Appointment.slot"]
                )
            body = orjson.loads(slot.body)
            status = body.get("status")
            if status in ("busy-unavailable", "entered-in-error"):
                raise FhirError(409, "conflict", f"Slot/{sid} is {status}", severity="fatal")
            sched = (body.get("schedule") or {}).get("reference", "")
            policy = await self._schedule_policy(unit, sched.split("/")[-1]) if sched else Policy()
            if not await self._take(
                unit, f"slot|Slot/{sid}|", policy.capacity, owner, expires, now, overbook
            ):
                raise FhirError(409, "conflict", f"Slot/{sid} is already taken", severity="fatal")

    @staticmethod
    async def _take(
        unit: Unit,
        prefix: str,
        capacity: int,
        owner: tuple[str, str],
        expires: str | None,
        now: str,
        overbook: bool,
    ) -> bool:
        for seq in range(capacity):
            if await unit.claim(f"{prefix}{seq}", *owner, expires=expires, now=now):
                return True
        if overbook:
            n = capacity
            while not await unit.claim(f"{prefix}ob{n}", *owner, expires=expires, now=now):
                n += 1
            return True
        return False

    async def _policy(self, unit: Unit, actor: str) -> Policy:
        ids = await unit.find_ids(
            Query(
                "Schedule",
                (
                    Entry("actor", (Cond("val", "=", actor),)),
                    Entry("active", (Cond("val", "!=", "false"),)),
                ),
            ),
            limit=5,
        )
        if not ids:
            ids = await unit.find_ids(
                Query("Schedule", (Entry("actor", (Cond("val", "=", actor),)),)), limit=5
            )
        for sid in sorted(ids):
            policy = await self._schedule_policy(unit, sid)
            if policy != Policy():
                return policy
        return Policy()

    async def _schedule_policy(self, unit: Unit, schedule_id: str) -> Policy:
        rec = await unit.get("Schedule", schedule_id)
        if rec is None or rec.deleted or rec.body is None:
            return Policy()
        policy = self._policies.get(rec.body)
        if policy is None:
            policy = _parse_policy(rec.body)
            if len(self._policies) >= _POLICY_CACHE:
                self._policies.pop(next(iter(self._policies)))
            self._policies[rec.body] = policy
        return policy

    async def _sync_slots(self, unit: Unit, ev: WriteEvent) -> None:
        """Slots follow their appointment: tentative while held, busy when booked, free when
        nothing claims them any more (a capacity-3 slot stays busy while others hold it)."""
        ids = dict.fromkeys(slot_ids(ev.old) + slot_ids(ev.new))
        status_new = (ev.new or {}).get("status")
        for sid in ids:
            rec = await unit.get("Slot", sid)
            if rec is None or rec.deleted or rec.body is None:
                continue
            slot = orjson.loads(rec.body)
            if slot.get("status") in ("busy-unavailable", "entered-in-error"):
                continue
            held = await unit.count_claims(f"slot|Slot/{sid}|")
            if held == 0:
                target = "free"
            elif sid in slot_ids(ev.new) and status_new in SLOT_STATUS:
                target = SLOT_STATUS[status_new]
            else:
                target = "busy"
            overbooked = await unit.count_claims(f"slot|Slot/{sid}|ob") > 0
            if slot.get("status") == target and bool(slot.get("overbooked")) == overbooked:
                continue
            slot["status"] = target
            if overbooked:
                slot["overbooked"] = True
            else:
                slot.pop("overbooked", None)
            slot.pop("meta", None)
            await self.service.put_in_unit(unit, ev.ctx, "Slot", sid, slot, check_refs=False)


def _parse_policy(body: bytes) -> Policy:
    try:
        templates = parse_templates(orjson.loads(body))
    except TemplateError:
        return Policy()
    if not templates:
        return Policy()
    t = templates[0]
    return Policy(t.capacity, t.buffer_before, t.buffer_after)
