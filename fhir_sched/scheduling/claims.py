"""The claims codec: the one place that knows how a booking's capacity claims are spelled.

A claim is a unique key in the database. For a bookable resource it names the resource, one
5-minute UTC unit and a seat number below the resource's capacity (``ob<n>`` seats are
overbookings); for an explicit Slot it names the Slot and a seat. Because
``format_instant`` is fixed-width, key order within one resource is time order, which is how
``$find`` reads a resource's busy time with one range scan over exactly what the guard writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from ..timeutil import format_instant

GRID = timedelta(minutes=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_unit(dt: datetime) -> datetime:
    return dt - (dt - _EPOCH) % GRID


def units(start: datetime, end: datetime) -> list[datetime]:
    """The 5-minute grid units that [start, end) touches."""
    out, t = [], floor_unit(start)
    while t < end:
        out.append(t)
        t += GRID
    return out


def resource_prefix(resource: str) -> str:
    """Every claim on ``resource`` (``Practitioner/7``) starts with this."""
    return f"cap|{resource}|"


def unit_prefix(resource: str, unit: datetime) -> str:
    """Every seat of one unit of ``resource``; append ``seat(n)`` or ``overbook_seat(n)``."""
    return f"{resource_prefix(resource)}{format_instant(unit)}|"


def slot_prefix(slot_id: str) -> str:
    return f"slot|Slot/{slot_id}|"


def referral_prefix(request_id: str) -> str:
    """The visits of one referral (a ServiceRequest): one seat per visit it allows."""
    return f"ref|ServiceRequest/{request_id}|"


def slot_overbook_prefix(slot_id: str) -> str:
    return f"{slot_prefix(slot_id)}ob"


def seat(n: int) -> str:
    return str(n)


def overbook_seat(n: int) -> str:
    return f"ob{n}"


def unit_prefix_of(resource: str, unit: str) -> str:
    """``unit_prefix`` from a unit instant as ``unit_of`` returns it (already formatted)."""
    return f"{resource_prefix(resource)}{unit}|"


def unit_of(key: str, prefix_length: int) -> str:
    """The unit instant (as formatted) of a resource claim key, given its prefix's length."""
    return key[prefix_length:key.index("|", prefix_length)]


def unit_keys(resource: str, start: datetime, end: datetime, seats: int) -> Iterator[str]:
    """Every seat key of every unit [start, end) touches: what a fully booked span holds."""
    for u in units(start, end):
        prefix = unit_prefix(resource, u)
        for n in range(seats):
            yield prefix + seat(n)
