"""Appointment: R4 invariants app-1 to app-3, the required code bindings, and the booking guard
(status machine and capacity claims) as its write rule."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..scheduling.guard import guard_appointment
from ._common import end_not_before_start

WRITE_RULE = guard_appointment
# $find proposal ids (service/proposals.py) live here, outside every stored Appointment's id.
PROPOSAL_ID_PREFIX = "proposal-"

STATUS = (
    "proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow",
    "entered-in-error", "checked-in", "waitlist",
)
BINDINGS = {
    "status": STATUS,
    "participant.status": ("accepted", "declined", "tentative", "needs-action"),
    "participant.required": ("required", "optional", "information-only"),
}


def rules(res: dict[str, Any]) -> Iterator[tuple[str, str]]:
    start, end = res.get("start"), res.get("end")
    if (start is None) != (end is None):
        # app-2: either start and end are specified, or neither
        yield ("Appointment.end" if start else "Appointment.start",
               "app-2: either start and end are specified, or neither")
    if start is None and res.get("status") not in ("proposed", "cancelled", "waitlist", None):
        yield ("Appointment.start",
               "app-3: only proposed, cancelled or waitlist appointments may lack start and end")
    yield from end_not_before_start(res, "Appointment")
    if not res.get("participant"):
        yield ("Appointment.participant",
               "an Appointment needs at least one participant (R4 cardinality 1..*)")
    for n, p in enumerate(res.get("participant") or []):
        if isinstance(p, dict) and not p.get("type") and not p.get("actor"):
            # app-1: either the type or actor on the participant SHALL be specified
            yield (f"Appointment.participant[{n}]",
                   "app-1: either the type or actor on the participant SHALL be specified")
