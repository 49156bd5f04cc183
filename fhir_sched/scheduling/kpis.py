"""The scheduling KPIs as arithmetic over plain facts: no store, no clock, no FHIR shapes.

``service/measures.py`` reads the facts (visits from the index, bookable windows from the
availability templates, free time from ``$find``, filled waitlist entries) and turns a
``Result`` into a MeasureReport; everything a test should check by hand happens here, so the
unit tests in ``tests/test_kpis.py`` need nothing but these values.

Every measure files its members under population codes of R4's measure-population code
system and under four strata at once (practitioner, location, service, ISO week), and a
``Tally`` adds them up overall and per stratum in one pass: a year of 250,000 visits is one
dict update per visit, not one per visit, population and stratifier.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from math import fsum

from ..timeutil import from_us, to_us
from .templates import Template

DAY_US = 86_400_000_000
MINUTE_US = 60_000_000
# Statuses of a visit that was booked and kept its time (a no-show kept it too).
KEPT = frozenset({"booked", "arrived", "checked-in", "fulfilled", "noshow"})
# ... and those that were booked at some point, cancelled ones included.
EVER_BOOKED = KEPT | {"cancelled"}
STRATIFIERS = ("practitioner", "location", "service", "week")
PRACTITIONER_TYPES = ("Practitioner/", "PractitionerRole/")

IP, DEN, NUM = "initial-population", "denominator", "numerator"
MP, MPE, OBS = "measure-population", "measure-population-exclusion", "measure-observation"

# (practitioners, locations, services, ISO week such as "2026-W07")
Strata = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str]


@dataclass(frozen=True, slots=True)
class Visit:
    """One appointment as the measures see it; times in microseconds since the epoch, UTC."""

    id: str
    start: int
    end: int | None
    status: str
    updated: int  # the current version: for a cancelled visit, when it was cancelled
    booked_at: int | None  # Appointment.created, else when the server first stored it
    resources: tuple[str, ...]  # its participants that are not people served (no Patient)
    strata: Strata


@dataclass(frozen=True, slots=True)
class Window:
    """Bookable time of one scheduled resource: ``capacity`` visits at once, each of
    ``slot_minutes`` (a template's unit, or an explicit Slot's length)."""

    resource: str
    start: int
    end: int
    capacity: int
    slot_minutes: int
    strata: Strata


@dataclass(frozen=True, slots=True)
class Observation:
    """One member of a continuous-variable measure that is not a visit (a practitioner and
    visit type for third next available, a filled waitlist entry): its value in days, or None
    when it is excluded (no third open time found)."""

    value: float | None
    strata: Strata


@dataclass(slots=True)
class Counts:
    populations: dict[str, int] = field(default_factory=dict)
    observations: list[float] = field(default_factory=list)


@dataclass(slots=True)
class Result:
    """Population counts and observations overall and per stratum value."""

    total: Counts
    strata: dict[str, dict[str, Counts]]


class Tally:
    """Adds members under (strata, population codes); expands to strata once at the end."""

    def __init__(self) -> None:
        self._counts: dict[tuple[Strata, tuple[str, ...]], int] = defaultdict(int)
        self._obs: dict[Strata, list[float]] = defaultdict(list)

    def add(self, strata: Strata, codes: tuple[str, ...], amount: int = 1) -> None:
        self._counts[strata, codes] += amount

    def observe(self, strata: Strata, value: float) -> None:
        self._obs[strata].append(value)

    def result(self, codes: Sequence[str]) -> Result:
        total = Counts({c: 0 for c in codes})
        per: dict[str, dict[str, Counts]] = {s: {} for s in STRATIFIERS}

        def cell(n: int, key: str) -> Counts:
            found = per[STRATIFIERS[n]].get(key)
            if found is None:
                found = per[STRATIFIERS[n]][key] = Counts({c: 0 for c in codes})
            return found

        def keys(strata: Strata) -> Iterable[tuple[int, str]]:
            for n in range(3):
                for key in strata[n]:
                    yield n, key
            yield 3, strata[3]

        for (strata, members), amount in self._counts.items():
            for code in members:
                total.populations[code] += amount
            for n, key in keys(strata):
                c = cell(n, key)
                for code in members:
                    c.populations[code] += amount
        for strata, values in self._obs.items():
            total.observations.extend(values)
            for n, key in keys(strata):
                cell(n, key).observations.extend(values)
        return Result(total, per)


def ratio(counts: Counts) -> float | None:
    """numerator / denominator (proportion and ratio scoring), None when nothing is counted."""
    den = counts.populations.get(DEN, 0)
    return counts.populations.get(NUM, 0) / den if den else None


def aggregate(counts: Counts, method: str) -> float | None:
    """The observations' median or mean (continuous-variable scoring), None without any."""
    values = counts.observations
    if not values:
        return None
    if method == "median":  # statistics.median, which sorts too
        ordered = sorted(values)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return fsum(values) / len(values)  # statistics.mean is exact, in Fractions: 100x slower


# ------------------------------------------------------------------------------ measures


def no_show(visits: Iterable[Visit], now: int) -> Result:
    """MGMA-style: no-shows / kept visits whose start has passed (cancelled ones excluded)."""
    t = Tally()
    ip, den, num = (IP,), (IP, DEN), (IP, DEN, NUM)
    for v in visits:
        if v.start < now and v.status in KEPT:
            t.add(v.strata, num if v.status == "noshow" else den)
        else:
            t.add(v.strata, ip)
    return t.result((IP, DEN, NUM))


def cancellation(visits: Iterable[Visit], late_lead_us: int | None = None) -> Result:
    """Cancelled / ever-booked visits; with ``late_lead_us``, only cancellations made less
    than that long before the start (or after it) count in the numerator."""
    t = Tally()
    ip, den, num = (IP,), (IP, DEN), (IP, DEN, NUM)
    for v in visits:
        if v.status not in EVER_BOOKED:
            t.add(v.strata, ip)
        elif v.status == "cancelled" and (late_lead_us is None
                                          or v.updated > v.start - late_lead_us):
            t.add(v.strata, num)
        else:
            t.add(v.strata, den)
    return t.result((IP, DEN, NUM))


def _kind(resource: str, strata: Strata) -> Strata:
    """A scheduled resource's own strata: itself as practitioner or location (so a room's
    capacity never counts towards a practitioner's, nor theirs towards the room's)."""
    is_practitioner = resource.startswith(PRACTITIONER_TYPES)
    is_location = resource.startswith("Location/")
    return ((resource,) if is_practitioner else (), (resource,) if is_location else (),
            strata[2], strata[3])


def capacity_use(visits: Iterable[Visit], windows: Iterable[Window], *, minutes: bool,
                 keep: Callable[[str], bool] = lambda _r: True) -> Result:
    """Fill rate (``minutes=False``: booked visits / bookable visits) or utilisation
    (``minutes=True``: booked minutes / available minutes), counted per scheduled resource:
    a visit with a practitioner and a room uses both, and each has its own capacity. Only
    resources ``keep`` admits are counted (a subject's own calendar)."""
    t = Tally()
    den, num = (DEN,), (NUM,)
    scheduled: set[str] = set()
    for w in windows:
        if not keep(w.resource):
            continue
        scheduled.add(w.resource)
        length = (w.end - w.start) // MINUTE_US
        amount = length * w.capacity if minutes else (length // w.slot_minutes) * w.capacity
        if amount:
            t.add(_kind(w.resource, w.strata), den, amount)
    for v in visits:
        if v.status not in KEPT:
            continue
        used = max(0, (v.end - v.start) // MINUTE_US) if v.end is not None else 0
        if minutes and not used:
            continue
        for r in v.resources:
            if r in scheduled:
                t.add(_kind(r, v.strata), num, used if minutes else 1)
    return t.result((DEN, NUM))


def lead_time(visits: Iterable[Visit]) -> Result:
    """Days from booking to visit, for kept visits; one booked after its start (recorded
    afterwards) is excluded."""
    t = Tally()
    mp, excluded = (MP, OBS), (MP, MPE)
    for v in visits:
        if v.status not in KEPT or v.booked_at is None:
            continue
        days = (v.start - v.booked_at) / DAY_US
        if days < 0:
            t.add(v.strata, excluded)
        else:
            t.add(v.strata, mp)
            t.observe(v.strata, days)
    return t.result((MP, MPE, OBS))


def observed(items: Iterable[Observation]) -> Result:
    """A continuous-variable measure over members that are not visits."""
    t = Tally()
    for o in items:
        if o.value is None:
            t.add(o.strata, (MP, MPE))
        else:
            t.add(o.strata, (MP, OBS))
            t.observe(o.strata, o.value)
    return t.result((MP, MPE, OBS))


def days_to_third(request_day: date, starts: Sequence[datetime]) -> float | None:
    """IHI third next available: whole days from the request day to the day of the third
    open time (0 when it is on the request day itself), None with fewer than three."""
    if len(starts) < 3:
        return None
    return float((sorted(starts)[2].astimezone(UTC).date() - request_day).days)


# ------------------------------------------------------------------------------ templates


_WEEKS: dict[int, str] = {}


def iso_week(us: int) -> str:
    """The ISO week of an instant, read in UTC: ``2026-W07`` (cached per day)."""
    day = us // DAY_US
    found = _WEEKS.get(day)
    if found is None:
        y, w, _ = (date(1970, 1, 1) + timedelta(days=day)).isocalendar()
        found = _WEEKS[day] = f"{y}-W{w:02d}"
    return found


def template_windows(t: Template, lo: int, hi: int) -> list[tuple[int, int]]:
    """The open hours of a template within ``[lo, hi)`` as merged UTC intervals: its weekly
    hours read on its zone's wall clock, within validPeriod, less notAvailable. Hours, not
    units: a utilisation denominator is the time open, and counting units would count the
    overlap of units aligned closer than their length twice."""
    start, stop = from_us(lo), from_us(hi)
    if t.valid_from is not None:
        start = max(start, t.valid_from.astimezone(UTC))
    if t.valid_to is not None:
        stop = min(stop, t.valid_to.astimezone(UTC))
    if start >= stop:
        return []
    spans: list[tuple[datetime, datetime]] = []
    day = start.astimezone(t.tz).date() - timedelta(days=1)
    last = stop.astimezone(t.tz).date()
    while day <= last:
        for days, open_at, close_at in t.weekly:
            if day.weekday() not in days:
                continue
            # an end at or before the start ends the next day (equal: 24 hours)
            a = datetime.combine(day, open_at, t.tz)
            b = datetime.combine(day + timedelta(days=1) if close_at <= open_at else day,
                                 close_at, t.tz)
            a, b = max(a.astimezone(UTC), start), min(b.astimezone(UTC), stop)
            if a < b:
                spans.append((a, b))
        day += timedelta(days=1)
    merged: list[tuple[datetime, datetime]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    out: list[tuple[int, int]] = []
    blocked = sorted((a.astimezone(UTC), b.astimezone(UTC)) for a, b in t.not_available)
    for a, b in merged:
        pieces = [(a, b)]
        for x, y in blocked:
            pieces = [p for s, e in pieces for p in ((s, min(e, x)), (max(s, y), e))
                      if p[0] < p[1]]
        out.extend((to_us(s), to_us(e)) for s, e in pieces)
    return out
