"""The Slots a Schedule publishes (SMART Scheduling Links): its template time cut into slots,
each free or busy by the rule the booking guard enforces.

Pure, like the rest of the availability engine: the caller hands over the calendar (templates,
busy time from the guard's claims, stored free Slots), and ``published_slots`` answers the
same question ``$find`` does, one slot at a time: could one more visit of this slot's length
be booked here? So a slot published as free is one ``$book`` accepts (for a visit type that
needs only this resource and no patient-specific rule), and one published as busy is one it
would refuse.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from .availability import Busy, ResourceCalendar, free_units
from .templates import iter_units


@dataclass(frozen=True, slots=True)
class PublishedSlot:
    start: datetime
    end: datetime
    free: bool
    left: int  # seats left for one more visit (0 when busy)
    slot_id: str | None = None  # a stored Slot's id; None for template time


def published_slots(cal: ResourceCalendar, lo: datetime, hi: datetime) -> list[PublishedSlot]:
    """Every slot of ``cal`` in [lo, hi), ascending by start.

    Template time: the template's units (``slotMinutes`` long, on its grid), cut so that
    published slots of one template never overlap: where ``alignmentMinutes`` is shorter than
    ``slotMinutes`` only every unit that starts at or after the previous one's end is kept
    (a client counting free slots must not count one half hour twice). A unit is free when
    one more visit of its length fits there with the template's buffers and capacity.

    Stored free Slots of the Schedule: published with their own times and id, free while
    the guard has room in them. Busy stored Slots are already part of ``cal.busy``.
    """
    out: list[PublishedSlot] = []
    for template in cal.templates:
        length = timedelta(minutes=template.slot_minutes)
        alone = dataclasses.replace(cal, templates=[template], free_slots=[])
        free = {s for s, _e, _id in free_units(alone, lo, hi, length)}
        h_start, h_end = cal.horizon
        last_end: datetime | None = None
        peaks = _Peaks(cal.busy)
        for s, e in iter_units(template, lo, hi):
            if last_end is not None and s < last_end:
                continue
            if (h_start is not None and s < h_start) or (h_end is not None and e > h_end):
                continue
            last_end = e
            if s in free:
                window = (s - template.buffer_before, e + template.buffer_after)
                left = template.capacity - peaks.peak(*window)
                out.append(PublishedSlot(s, e, True, max(left, 1)))
            else:
                out.append(PublishedSlot(s, e, False, 0))
    # A stored Slot takes visits up to its capacity with no buffers (as free_units offers
    # it): room is the capacity less the most taken inside it.
    peaks = _Peaks(cal.busy)
    for s, e, capacity, slot_id in sorted(cal.free_slots):
        if s < lo or s >= hi:
            continue
        left = capacity - peaks.peak(s, e)
        out.append(PublishedSlot(s, e, left > 0, max(left, 0), slot_id))
    out.sort(key=lambda p: (p.start, p.end, p.slot_id or ""))
    return out


class _Peaks:
    """The most capacity taken at any instant of a window, for windows that move forward.

    ``busy`` (sorted by start) holds the guard's claims as runs of equal count, which never
    overlap one another, plus busy stored Slots, which take the whole capacity: so the most
    taken in a window is the largest count among the entries overlapping it. Entries join once
    (a pointer along the start order) and leave once their end is behind the window, so a whole
    template's slots cost one pass over the busy list, however long its entries are.
    """

    __slots__ = ("_active", "_busy", "_next")

    def __init__(self, busy: list[Busy]) -> None:
        self._busy = busy
        self._next = 0
        self._active: list[Busy] = []

    def peak(self, lo: datetime, hi: datetime) -> int:
        busy, i = self._busy, self._next
        while i < len(busy) and busy[i].start < hi:
            self._active.append(busy[i])
            i += 1
        self._next = i
        self._active = [b for b in self._active if b.end > lo]
        return max((b.count for b in self._active if b.start < hi), default=0)
