"""The Slot write rule: a Slot an appointment holds keeps its time and stays bookable.

The guard's claims for an explicit Slot are keyed by the Slot; moving it (start, end, schedule),
withdrawing it (busy-unavailable, entered-in-error) or deleting it while an appointment that
takes time holds it would leave that booking on time that no longer exists. Such a write is a
409 naming the appointments to move or cancel first. The Slot status changes the guard itself
asks for (free, busy, busy-tentative) pass.
"""

from __future__ import annotations

import orjson

from ..errors import FhirError
from ..query import AnyOf, Cond, Entry, Query
from ..storage.base import Unit
from ..timeutil import now_instant
from ..writes import FollowUp, WriteEvent
from .extensions import hold_expiry
from .status import TAKING

_WITHDRAWN = frozenset({"busy-unavailable", "entered-in-error"})
_TIME = ("start", "end", "schedule")


async def check_slot_write(unit: Unit, ev: WriteEvent) -> list[FollowUp]:
    old, new = ev.old, ev.new
    if old is None:
        return []
    if new is not None and new.get("status") not in _WITHDRAWN and all(
            new.get(k) == old.get(k) for k in _TIME):
        return []
    holders = await _holders(unit, ev.id)
    if holders:
        what = "deleted" if new is None else (
            f"made {new.get('status')}" if new.get("status") in _WITHDRAWN else "moved")
        shown = ", ".join(f"Appointment/{a}" for a in holders)
        raise FhirError(409, "conflict", f"Slot/{ev.id} cannot be {what} while {shown} "
                        "holds it; reschedule or cancel that first", severity="error",
                        expression=["Slot"])
    return []


async def _holders(unit: Unit, slot_id: str) -> list[str]:
    """Appointments that take time and cite the Slot (unexpired holds among them)."""
    q = Query("Appointment", (
        Entry("slot", (Cond("val", "=", f"Slot/{slot_id}"),)),
        AnyOf(tuple(Entry("status", (Cond("val", "=", s),)) for s in sorted(TAKING))),
    ), count=5)
    now = now_instant()
    out = []
    for appt_id in await unit.find_ids(q, limit=5):
        rec = await unit.get("Appointment", appt_id)
        if rec is None or rec.deleted or rec.body is None:
            continue
        appt = orjson.loads(rec.body)
        expires = hold_expiry(appt) if appt.get("status") == "pending" else None
        if expires is None or expires > now:
            out.append(appt_id)
    return out
