"""The Appointment state machine and what each status means for capacity and Slots.

Taken from the scheduling contract (shared/docs/scheduling.md): one table, consulted by every
door, so a PATCH, a ``$book`` and an HL7 v2 feed all obey the same transitions.
"""

from __future__ import annotations

from ..errors import FhirError

TERMINAL = frozenset({"fulfilled", "cancelled", "noshow", "entered-in-error"})
ONWARD: dict[str, frozenset[str]] = {
    "proposed": frozenset({"pending", "booked", "cancelled"}),
    "waitlist": frozenset({"pending", "booked", "cancelled"}),
    "pending": frozenset({"booked", "cancelled"}),
    "booked": frozenset({"arrived", "checked-in", "fulfilled", "noshow", "cancelled"}),
    "arrived": frozenset({"fulfilled", "cancelled"}),
    "checked-in": frozenset({"fulfilled", "cancelled"}),
}
# Statuses that hold time (a pending one only until its hold expires).
TAKING = frozenset({"pending", "booked", "arrived", "checked-in"})
# What a Slot consumed by an appointment in each status becomes.
SLOT_STATUS = {
    "pending": "busy-tentative",
    "booked": "busy",
    "arrived": "busy",
    "checked-in": "busy",
    "fulfilled": "busy",
}


def check_transition(old: str | None, new: str) -> None:
    if old is None or old == new or new == "entered-in-error":
        return
    if new not in ONWARD.get(old, frozenset()):
        allowed = sorted(ONWARD.get(old, frozenset()) | {"entered-in-error"})
        raise FhirError(
            422,
            "business-rule",
            f"Appointment status transition {old} -> {new} is not allowed "
            f"(from {old}: {', '.join(allowed) if old not in TERMINAL else 'entered-in-error'})",
            expression=["Appointment.status"],
        )
