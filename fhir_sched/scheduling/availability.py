"""Free time for one resource, and options that need several resources at once.

Everything here is a pure function of plain values handed over by the caller (templates, busy
intervals, explicit free Slots), so the booking guard, `$find` and tests all agree on one answer.
The computation is lazy end to end: candidate starts come from generators, resources are joined by
a heap merge on start time, and the search stops as soon as `count` options are known. That is what
keeps a 365-day window about as cheap as a 31-day one whenever the answer lies early.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fhir_sched.scheduling.templates import (
    Template,
    iter_units,
)


@dataclass(frozen=True, slots=True)
class Busy:
    """Something that takes capacity on one resource (appointment, unexpired hold, busy Slot)."""

    start: datetime
    end: datetime
    count: int = 1


@dataclass(slots=True)
class ResourceCalendar:
    """Everything the engine needs about one Schedule, gathered by the caller in one go."""

    key: str
    schedule_id: str
    templates: list[Template]
    horizon: tuple[datetime | None, datetime | None]
    busy: list[Busy]
    free_slots: list[tuple[datetime, datetime, int, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Option:
    """One proposed appointment time with the resources that make it possible."""

    start: datetime
    end: datetime
    resources: tuple[str, ...]
    slot_ids: tuple[str | None, ...]


# --------------------------------------------------------------------------- one resource


def _utc(value: datetime, name: str) -> datetime:
    """Normalise to the one UTC tzinfo object: CPython then compares without offset lookups."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


class _LoadSweep:
    """Capacity taken over a query interval, swept forward along ascending candidate starts.

    Busy entries enter once (pointer over the start-sorted list) and leave once (heap on end), so
    each check costs O(log n) plus the few entries actually overlapping it, and only the part of
    the busy list the search reaches is ever looked at. A failed check also says how far the
    caller may jump, which is what makes a fully booked fortnight cheap to cross.
    """

    __slots__ = ("_active", "_busy", "_last_start", "_next")

    def __init__(self, busy: Sequence[Busy]) -> None:
        self._busy = busy
        self._next = 0
        self._active: list[tuple[datetime, int, datetime, int]] = []
        self._last_start: datetime | None = None

    def blocked_until(
        self, start: datetime, end: datetime, floor: datetime, capacity: int
    ) -> datetime | None:
        """None when [start, end) has room; else the earliest start a same-length interval might.

        `floor` must never decrease between calls and be <= `start`; entries ending by it are
        forgotten.
        """
        busy, active, i = self._busy, self._active, self._next
        while i < len(busy) and busy[i].start < end:
            entry = busy[i]
            if self._last_start is not None and entry.start < self._last_start:
                raise ValueError("ResourceCalendar.busy must be sorted by start")
            self._last_start = entry.start
            if entry.end > floor and entry.count > 0:
                heapq.heappush(active, (entry.end, i, entry.start, entry.count))
            i += 1
        self._next = i
        while active and active[0][0] <= floor:
            heapq.heappop(active)

        overlapping = [(s, e, c) for e, _, s, c in active if s < end and e > start]
        if not overlapping:
            return None
        if capacity == 1:
            return self._gap(start, end - start)
        if sum(c for _, _, c in overlapping) < capacity:
            return None
        if len(overlapping) > 1:
            events = sorted(
                [(max(s, start), c) for s, _, c in overlapping]
                + [(min(e, end), -c) for _, e, c in overlapping]
            )
            peak = level = 0
            for _, delta in events:  # at equal times -c sorts first: intervals are half-open
                level += delta
                peak = max(peak, level)
            if peak < capacity:
                return None
        # Until the first of these ends, all of them still overlap any later interval.
        return min(e for _, e, _ in overlapping)

    def _gap(self, start: datetime, length: timedelta) -> datetime:
        """Earliest r >= start with no busy entry in [r, r + length): the next hole that fits."""
        busy, reach, j = self._busy, start, self._next
        while True:
            before = reach
            for e, _, s, _ in self._active:
                if e > reach and s < reach + length:
                    reach = e
            while j < len(busy) and busy[j].start < reach + length:
                if busy[j].end > reach and busy[j].count > 0:
                    reach = busy[j].end
                j += 1
            if reach == before:
                return reach


class _TemplateSource:
    """Candidate starts from one template: unit starts from which `duration` is fully covered."""

    __slots__ = ("_duration", "_exhausted", "_min", "_units", "_window", "head", "template")

    def __init__(self, t: Template, lo: datetime, hi: datetime, duration: timedelta) -> None:
        self.template = t
        self._units = iter_units(t, lo, hi)
        self._duration = duration
        self._window: deque[tuple[datetime, datetime]] = deque()
        self._exhausted = False
        self._min = lo
        self.head: datetime | None = None
        self._settle()

    def _pull(self) -> bool:
        if self._exhausted:
            return False
        unit = next(self._units, None)
        if unit is None:
            self._exhausted = True
            return False
        self._window.append(unit)
        return True

    def _settle(self) -> None:
        window = self._window
        while window or self._pull():
            start, covered = window[0]
            if start < self._min:
                window.popleft()
                continue
            needed = start + self._duration
            k = 1
            while covered < needed:
                if k >= len(window) and not self._pull():
                    break
                unit_start, unit_end = window[k]
                if unit_start > covered:
                    break
                covered = max(covered, unit_end)
                k += 1
            if covered >= needed:
                self.head = start
                return
            window.popleft()
        self.head = None

    def advance(self) -> None:
        if self._window:
            self._window.popleft()
        self._settle()

    def skip_to(self, when: datetime) -> None:
        if self.head is not None and self.head >= when:
            return
        self._min = when
        while self._window and self._window[0][0] < when:
            self._window.popleft()
        skip = getattr(self._units, "skip_to", None)
        if not self._window and skip is not None:
            skip(when)
        self._settle()


class _SlotSource:
    """Explicit free Slots that fit the visit, in start order."""

    __slots__ = ("_i", "_items", "head")

    def __init__(self, items: list[tuple[datetime, int, str]]) -> None:
        self._items = items
        self._i = 0
        self.head: datetime | None = items[0][0] if items else None

    @property
    def current(self) -> tuple[datetime, int, str]:
        return self._items[self._i]

    def advance(self) -> None:
        self._i += 1
        self.head = self._items[self._i][0] if self._i < len(self._items) else None

    def skip_to(self, when: datetime) -> None:
        while self.head is not None and self.head < when:
            self.advance()


class FreeCursor:
    """What free_units returns: free (start, end, slot id) ascending, with `skip_to`.

    An object rather than a plain generator so a multi-resource search can move every resource
    straight to the next start the others allow.
    """

    __slots__ = ("_duration", "_last", "_lead", "_slots", "_sources", "_sweep", "head")

    def __init__(
        self, cal: ResourceCalendar, start: datetime, end: datetime, duration: timedelta
    ) -> None:
        lo, hi = _utc(start, "start"), _utc(end, "end")
        h_start, h_end = cal.horizon
        if h_start is not None:
            lo = max(lo, _utc(h_start, "horizon start"))
        if h_end is not None:
            hi = min(hi, _utc(h_end, "horizon end"))
        self._duration = duration
        self._sources: list[_TemplateSource] = []
        self._slots = _SlotSource([])
        self._sweep = _LoadSweep(cal.busy)
        self._lead = max((t.buffer_before for t in cal.templates), default=timedelta(0))
        self._last: datetime | None = None
        self.head: tuple[datetime, datetime, str | None] | None = None
        if lo >= hi or duration <= timedelta(0):
            return
        self._sources = [_TemplateSource(t, lo, hi, duration) for t in cal.templates]
        fitting = []
        for s, e, capacity, slot_id in cal.free_slots:
            s_utc = _utc(s, "slot start")
            if s_utc >= lo and s_utc + duration <= min(_utc(e, "slot end"), hi):
                fitting.append((s_utc, capacity, slot_id))
        self._slots = _SlotSource(sorted(fitting))
        self._find()

    def _find(self) -> None:
        """Set `head` to the next free candidate at or after the sources' current positions."""
        duration, sweep, slots = self._duration, self._sweep, self._slots
        while True:
            source: _TemplateSource | None = None
            at = slots.head
            for candidate in self._sources:
                if candidate.head is not None and (at is None or candidate.head < at):
                    source, at = candidate, candidate.head
            if at is None:
                self.head = None
                return
            if at == self._last:  # already offered from another template or Slot
                (source or slots).advance()
                continue
            floor = at - self._lead
            if source is None:  # an explicit Slot wins ties: the option can cite a real Slot
                _, capacity, slot_id = slots.current
                slots.advance()
                if sweep.blocked_until(at, at + duration, floor, capacity) is None:
                    self._last, self.head = at, (at, at + duration, slot_id)
                    return
                continue
            t = source.template
            lower = at - t.buffer_before
            resume = sweep.blocked_until(lower, at + duration + t.buffer_after, floor, t.capacity)
            if resume is None:
                source.advance()
                self._last, self.head = at, (at, at + duration, None)
                return
            source.skip_to(max(resume + t.buffer_before, at + _TINY))

    def __iter__(self) -> FreeCursor:
        return self

    def __next__(self) -> tuple[datetime, datetime, str | None]:
        head = self.head
        if head is None:
            raise StopIteration
        self._find()
        return head

    def skip_to(self, when: datetime) -> None:
        """Move `head` to the first free candidate starting at or after `when`."""
        if self.head is None or self.head[0] >= when:
            return
        for source in self._sources:
            source.skip_to(when)
        self._slots.skip_to(when)
        self._find()


_TINY = timedelta(microseconds=1)


def free_units(
    cal: ResourceCalendar, start: datetime, end: datetime, duration: timedelta
) -> FreeCursor:
    """Lazily yield (start, end, slot id or None) where this resource can take one more visit.

    Ascending by start, one entry per start. Template time needs the unit grid, consecutive units
    covering the whole visit, and capacity left over the visit widened by the template's buffers.
    Explicit free Slots are offered as-is (their own capacity, no buffers, exceptions not applied)
    and win a tie with template time so the option can reference a real Slot. Everything stays
    within the planning horizon and [start, end).
    """
    return FreeCursor(cal, start, end, duration)


# --------------------------------------------------------------------------- several resources


def _merged_avoid(
    avoid: Iterable[tuple[datetime, datetime]],
) -> tuple[list[datetime], list[datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for s, e in sorted((_utc(s, "avoid start"), _utc(e, "avoid end")) for s, e in avoid):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return [s for s, _ in merged], [e for _, e in merged]


def _iter_options(
    needs: Sequence[Sequence[ResourceCalendar]],
    start: datetime,
    end: datetime,
    duration: timedelta,
    avoid: Iterable[tuple[datetime, datetime]],
) -> Iterator[Option]:
    """All options in output order: by start, then by the preference index of the first need.

    The first need is the one the patient chooses between (typically the practitioner): each of
    its free candidates gives its own option at a start. The other needs (rooms, devices) get
    their most preferred free candidate, never reusing a resource already in the option.

    Resources are joined leapfrog-style: the next possible start is the latest of each need's
    earliest free start, and every resource jumps straight there, so a device booked for weeks
    does not make the search walk every practitioner's weeks unit by unit.
    """
    calendars: dict[int, ResourceCalendar] = {}
    for need in needs:
        for cal in need:
            calendars.setdefault(id(cal), cal)
    number = {ident: n for n, ident in enumerate(calendars)}
    need_ids = [[number[id(cal)] for cal in need] for need in needs]
    keys = [cal.key for cal in calendars.values()]
    cursors = [free_units(cal, start, end, duration) for cal in calendars.values()]
    avoid_starts, avoid_ends = _merged_avoid(avoid)

    while True:
        target: datetime | None = None
        for ids in need_ids:
            earliest = min(
                (h[0] for h in (cursors[n].head for n in ids) if h is not None), default=None
            )
            if earliest is None:
                return
            if target is None or earliest > target:
                target = earliest
        assert target is not None
        # The patient's own bookings: skip past any that a visit starting here would overlap.
        i = bisect_right(avoid_ends, target)
        if i < len(avoid_starts) and avoid_starts[i] < target + duration:
            target = avoid_ends[i]
        behind = [c for c in cursors if c.head is not None and c.head[0] < target]
        if behind:
            for cursor in behind:
                cursor.skip_to(target)
            continue

        free = {
            n: c.head[2]
            for n, c in enumerate(cursors)
            if c.head is not None and c.head[0] == target
        }
        if all(any(n in free for n in ids) for ids in need_ids):
            finish = target + duration
            for first in need_ids[0]:
                if first not in free:
                    continue
                chosen, used = [first], {keys[first]}
                for ids in need_ids[1:]:
                    pick = next((n for n in ids if n in free and keys[n] not in used), None)
                    if pick is None:
                        break
                    chosen.append(pick)
                    used.add(keys[pick])
                else:
                    yield Option(
                        target,
                        finish,
                        tuple(keys[n] for n in chosen),
                        tuple(free[n] for n in chosen),
                    )
        for n in free:
            next(cursors[n])


def find_options(
    needs: list[list[ResourceCalendar]],
    start: datetime,
    end: datetime,
    duration: timedelta,
    count: int,
    avoid: Sequence[tuple[datetime, datetime]] = (),
    prefer: Callable[[datetime], bool] | None = None,
) -> list[Option]:
    """Return at most `count` options, deterministic for the same input.

    Earliest start first; at one start, options follow the first need's preference order. `avoid`
    (the patient's own bookings) may not overlap an option. With `prefer`, accepted options come
    first and the search stops as soon as `count` of them are found; otherwise the earliest
    rejected ones fill the remainder.
    """
    if count <= 0 or not needs or any(not need for need in needs):
        return []
    preferred: list[Option] = []
    others: list[Option] = []
    for option in _iter_options(needs, start, end, duration, avoid):
        if prefer is None or prefer(option.start):
            preferred.append(option)
            if len(preferred) >= count:
                break
        elif len(others) < count:
            others.append(option)
    return (preferred + others)[:count]
