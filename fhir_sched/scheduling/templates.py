"""Availability templates: recurring weekly hours kept on a Schedule, expanded lazily.

Free time is computed from a template rather than from materialised Slot resources, so that a
year-long search costs about as much as a month-long one when the answer is found early. Expansion
is therefore a generator that produces bookable units in ascending order, one local day at a time.

Time-zone rule (applies to every daylight-saving change, in every zone):

    A real instant is "within hours" exactly when its wall-clock reading in the template's zone is
    inside ``[availableStartTime, availableEndTime)`` on a listed weekday.

Consequences: 09:00-17:00 stays 09:00-17:00 local on both change days. On spring-forward day
local times that do not exist are never offered (a 01:00-04:00 window in Europe/Berlin holds 2 real
hours). On fall-back day the repeated local hour is offered twice, once per real instant, when it is
within hours (a 01:00-04:00 window holds 4 real hours). Unit starts sit on the grid
``availableStartTime + k * alignmentMinutes`` read on the wall clock, and a unit is offered only
when every instant of it is within hours; a unit may run across the spring-forward gap because the
missing readings are never reached. ``availableEndTime <= availableStartTime`` means the window
ends on the next day (an overnight shift; equal times mean 24 hours).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EXTENSION_BASE = "https://fhir-sched.org/fhir/StructureDefinition/"
AVAILABILITY_TEMPLATE_URL = EXTENSION_BASE + "availability-template"

DAY_CODES: dict[str, int] = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
DEFAULT_SLOT_MINUTES = 15

_DAY = timedelta(days=1)
_HOUR = timedelta(hours=1)
_MICROSECOND = timedelta(microseconds=1)
_MIDNIGHT = time()
# Largest backward step of a zone's wall clock in one change (real zones use 30 min to 2 h).
_BACKWARD_SLACK = timedelta(hours=3)
# Far enough in either direction that comparisons never see an open end, close enough to stay
# representable after the small shifts the expansion applies.
_FAR_PAST = datetime(1, 1, 3)
_FAR_FUTURE = datetime(9999, 12, 29)

_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])(?:\.([0-9]{1,9}))?")
_DATE_RE = re.compile(r"([0-9]{4})(?:-(0[1-9]|1[0-2])(?:-(0[1-9]|[12][0-9]|3[01]))?)?")
_DATETIME_RE = re.compile(
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
)

_TEMPLATE_ELEMENTS = {
    "timezone",
    "availableTime",
    "slotMinutes",
    "alignmentMinutes",
    "bufferBeforeMinutes",
    "bufferAfterMinutes",
    "capacity",
    "notAvailable",
    "validPeriod",
}
_REPEATING_ELEMENTS = {"availableTime", "notAvailable"}


class TemplateError(ValueError):
    """Raised for an unusable template; the path lets the API point the client at the culprit."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Template:
    """One availability template, already validated, so expansion never has to re-check input."""

    tz: ZoneInfo
    weekly: tuple[tuple[frozenset[int], time, time], ...]
    slot_minutes: int
    alignment_minutes: int
    buffer_before: timedelta
    buffer_after: timedelta
    capacity: int
    not_available: tuple[tuple[datetime, datetime], ...]
    valid_from: datetime | None
    valid_to: datetime | None


# --------------------------------------------------------------------------- parsing


def parse_templates(schedule: Mapping[str, object]) -> list[Template]:
    """Read every availability-template extension; an invalid one rejects the whole Schedule.

    Rejecting (rather than skipping) keeps a typo from silently closing or opening a calendar.
    """
    templates: list[Template] = []
    for index, ext in _extensions(schedule, "Schedule"):
        if ext.get("url") == AVAILABILITY_TEMPLATE_URL:
            templates.append(_parse_template(ext, f"Schedule.extension[{index}]"))
    return templates


def horizon(schedule: Mapping[str, object]) -> tuple[datetime | None, datetime | None]:
    """Read planningHorizon as UTC instants so callers can compare without zone handling.

    A date-only bound is read in the zone of the first template (UTC when there is none), because
    "book until 2026-12-31" means that day in the clinic's own calendar; an end date includes the
    whole day, as FHIR Period.end does.
    """
    period = schedule.get("planningHorizon")
    if period is None:
        return None, None
    path = "Schedule.planningHorizon"
    if not isinstance(period, Mapping):
        raise TemplateError(path, "must be a Period object")
    tz = _first_zone(schedule)
    return _parse_period(period, path, tz)


def _first_zone(schedule: Mapping[str, object]) -> ZoneInfo | None:
    """Best-effort zone lookup: horizon() must not fail just because a template is broken."""
    try:
        for _, ext in _extensions(schedule, "Schedule"):
            if ext.get("url") != AVAILABILITY_TEMPLATE_URL:
                continue
            for _, sub in _extensions(ext, "x"):
                if sub.get("url") == "timezone":
                    return ZoneInfo(str(sub.get("valueCode")))
    except (TemplateError, ZoneInfoNotFoundError, ValueError):
        return None
    return None


ElementError = Callable[[str, str], Exception]


def _extensions(
    element: Mapping[str, object], path: str, error: ElementError = TemplateError
) -> Iterator[tuple[int, Mapping[str, object]]]:
    raw = element.get("extension", [])
    if not isinstance(raw, list):
        raise error(f"{path}.extension", "must be an array")
    for index, ext in enumerate(raw):
        if not isinstance(ext, Mapping):
            raise error(f"{path}.extension[{index}]", "must be an object")
        yield index, ext


def group_sub_extensions(
    element: Mapping[str, object],
    path: str,
    allowed: set[str],
    repeating: set[str],
    error: ElementError = TemplateError,
) -> dict[str, list[tuple[str, Mapping[str, object]]]]:
    """Group sub-extensions by url, rejecting unknown and repeated ones so typos surface early.

    Shared by every complex extension we parse (templates, visit types); ``error`` builds the
    caller's own exception from (element path, message)."""
    groups: dict[str, list[tuple[str, Mapping[str, object]]]] = {}
    for index, sub in _extensions(element, path, error):
        sub_path = f"{path}.extension[{index}]"
        url = sub.get("url")
        if not isinstance(url, str) or url not in allowed:
            raise error(
                f"{sub_path}.url", f"unknown element {url!r} (expected one of {sorted(allowed)})"
            )
        if url in groups and url not in repeating:
            raise error(sub_path, f"{url} may appear only once")
        groups.setdefault(url, []).append((sub_path, sub))
    return groups


def _value(sub: Mapping[str, object], path: str, kind: str) -> object:
    key = "value" + kind
    if key in sub:
        return sub[key]
    others = [k for k in sub if k.startswith("value")]
    found = f"found {others[0]}" if others else "no value given"
    raise TemplateError(f"{path}.{key}", f"required ({found})")


def _parse_template(ext: Mapping[str, object], path: str) -> Template:
    groups = group_sub_extensions(ext, path, _TEMPLATE_ELEMENTS, _REPEATING_ELEMENTS)

    if "timezone" not in groups:
        raise TemplateError(path, "timezone is required")
    tz_path, tz_ext = groups["timezone"][0]
    tz = _parse_zone(_value(tz_ext, tz_path, "Code"), f"{tz_path}.valueCode")

    weekly = tuple(
        _parse_available_time(sub, sub_path) for sub_path, sub in groups.get("availableTime", [])
    )

    slot = _int_element(groups, "slotMinutes", "PositiveInt", 1, DEFAULT_SLOT_MINUTES)
    alignment = _int_element(groups, "alignmentMinutes", "PositiveInt", 1, slot)
    before = _int_element(groups, "bufferBeforeMinutes", "UnsignedInt", 0, 0)
    after = _int_element(groups, "bufferAfterMinutes", "UnsignedInt", 0, 0)
    capacity = _int_element(groups, "capacity", "PositiveInt", 1, 1)

    blocks: list[tuple[datetime, datetime]] = []
    for sub_path, sub in groups.get("notAvailable", []):
        block = _parse_not_available(sub, sub_path, tz)
        if block is not None:
            blocks.append(block)

    valid_from: datetime | None = None
    valid_to: datetime | None = None
    if "validPeriod" in groups:
        vp_path, vp = groups["validPeriod"][0]
        period = _value(vp, vp_path, "Period")
        if not isinstance(period, Mapping):
            raise TemplateError(f"{vp_path}.valuePeriod", "must be a Period object")
        valid_from, valid_to = _parse_period(period, f"{vp_path}.valuePeriod", tz)

    return Template(
        tz=tz,
        weekly=weekly,
        slot_minutes=slot,
        alignment_minutes=alignment,
        buffer_before=timedelta(minutes=before),
        buffer_after=timedelta(minutes=after),
        capacity=capacity,
        not_available=tuple(sorted(blocks)),
        valid_from=valid_from,
        valid_to=valid_to,
    )


def _parse_zone(value: object, path: str) -> ZoneInfo:
    if not isinstance(value, str) or not value:
        raise TemplateError(path, "must be an IANA time-zone name such as America/New_York")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TemplateError(path, f"unknown IANA time zone {value!r}") from exc


def _int_element(
    groups: dict[str, list[tuple[str, Mapping[str, object]]]],
    name: str,
    kind: str,
    minimum: int,
    default: int,
) -> int:
    if name not in groups:
        return default
    sub_path, sub = groups[name][0]
    value = _value(sub, sub_path, kind)
    # bool is an int subclass; JSON true must not pass for 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TemplateError(
            f"{sub_path}.value{kind}", f"must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _parse_available_time(
    element: Mapping[str, object], path: str
) -> tuple[frozenset[int], time, time]:
    groups = group_sub_extensions(
        element,
        path,
        {"daysOfWeek", "availableStartTime", "availableEndTime", "allDay"},
        {"daysOfWeek"},
    )
    days: set[int] = set()
    for sub_path, sub in groups.get("daysOfWeek", []):
        code = _value(sub, sub_path, "Code")
        if not isinstance(code, str) or code not in DAY_CODES:
            raise TemplateError(
                f"{sub_path}.valueCode",
                f"unknown day {code!r} (expected mon|tue|wed|thu|fri|sat|sun)",
            )
        days.add(DAY_CODES[code])
    if not days:
        # An availableTime without days would either mean "never" or "every day"; refuse to guess.
        raise TemplateError(path, "daysOfWeek is required")

    all_day = False
    if "allDay" in groups:
        sub_path, sub = groups["allDay"][0]
        flag = _value(sub, sub_path, "Boolean")
        if not isinstance(flag, bool):
            raise TemplateError(f"{sub_path}.valueBoolean", "must be true or false")
        all_day = flag
    if all_day:
        if "availableStartTime" in groups or "availableEndTime" in groups:
            raise TemplateError(path, "allDay excludes availableStartTime/availableEndTime")
        return frozenset(days), _MIDNIGHT, _MIDNIGHT

    bounds: list[time] = []
    for name in ("availableStartTime", "availableEndTime"):
        if name not in groups:
            raise TemplateError(path, f"{name} is required (or allDay true)")
        sub_path, sub = groups[name][0]
        bounds.append(_parse_time(_value(sub, sub_path, "Time"), f"{sub_path}.valueTime"))
    return frozenset(days), bounds[0], bounds[1]


def _parse_time(value: object, path: str) -> time:
    match = _TIME_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise TemplateError(path, f"{value!r} is not a FHIR time (hh:mm:ss)")
    hour, minute, second, fraction = match.groups()
    micro = int((fraction or "0").ljust(6, "0")[:6])
    return time(int(hour), int(minute), int(second), micro)


def _parse_not_available(
    element: Mapping[str, object], path: str, tz: ZoneInfo
) -> tuple[datetime, datetime] | None:
    groups = group_sub_extensions(element, path, {"description", "during"}, set())
    if "description" in groups:
        sub_path, sub = groups["description"][0]
        if not isinstance(_value(sub, sub_path, "String"), str):
            raise TemplateError(f"{sub_path}.valueString", "must be a string")
    if "during" not in groups:
        raise TemplateError(path, "during is required")
    sub_path, sub = groups["during"][0]
    period = _value(sub, sub_path, "Period")
    if not isinstance(period, Mapping):
        raise TemplateError(f"{sub_path}.valuePeriod", "must be a Period object")
    start, end = _parse_period(period, f"{sub_path}.valuePeriod", tz)
    if start is None and end is None:
        raise TemplateError(f"{sub_path}.valuePeriod", "start or end is required")
    lo = start if start is not None else _FAR_PAST.replace(tzinfo=UTC)
    hi = end if end is not None else _FAR_FUTURE.replace(tzinfo=UTC)
    return (lo, hi) if lo < hi else None


def _parse_period(
    period: Mapping[str, object], path: str, tz: ZoneInfo | None
) -> tuple[datetime | None, datetime | None]:
    start = _parse_bound(period.get("start"), f"{path}.start", tz, is_end=False)
    end = _parse_bound(period.get("end"), f"{path}.end", tz, is_end=True)
    if start is not None and end is not None and end < start:
        raise TemplateError(path, "end is before start")
    return start, end


def _parse_bound(value: object, path: str, tz: ZoneInfo | None, *, is_end: bool) -> datetime | None:
    """Parse a FHIR dateTime; partial dates cover their whole year/month/day in the local zone."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TemplateError(path, "must be a dateTime string")
    if "T" in value:
        if _DATETIME_RE.fullmatch(value) is None:
            raise TemplateError(path, f"{value!r} is not a dateTime with a time-zone offset")
        try:  # fromisoformat truncates FHIR's up-to-nine fraction digits to microseconds
            return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError as exc:
            raise TemplateError(path, f"{value!r} is not a valid dateTime") from exc
    match = _DATE_RE.fullmatch(value)
    if match is None:
        raise TemplateError(path, f"{value!r} is not a FHIR date or dateTime")
    year, month, day = int(match.group(1)), match.group(2), match.group(3)
    try:
        if day is not None:
            first = date(year, int(month or 1), int(day))
            after = first + _DAY
        elif month is not None:
            first = date(year, int(month), 1)
            after = date(year + (first.month == 12), first.month % 12 + 1, 1)
        else:
            first = date(year, 1, 1)
            after = date(year + 1, 1, 1)
    except ValueError as exc:
        raise TemplateError(path, f"{value!r} is not a valid date") from exc
    local = datetime.combine(after if is_end else first, _MIDNIGHT)
    return local.replace(tzinfo=tz or UTC).astimezone(UTC)


# --------------------------------------------------------------------------- expansion


def _utc(value: datetime, name: str) -> datetime:
    """Normalise to the one UTC tzinfo object: CPython then compares without offset lookups."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def _utc_of_local(tz: ZoneInfo, local: datetime) -> datetime:
    return local - _local_offset(tz, local, 0)


def _offset_at(tz: ZoneInfo, instant: datetime) -> timedelta:
    local = tz.fromutc(instant.replace(tzinfo=tz))
    offset = local.utcoffset()
    assert offset is not None  # ZoneInfo always answers for an aware local time
    return offset


def _local_offset(tz: ZoneInfo, local: datetime, fold: int) -> timedelta:
    offset = local.replace(tzinfo=tz, fold=fold).utcoffset()
    assert offset is not None
    return offset


def _constant_offset_segments(
    tz: ZoneInfo, lo: datetime, hi: datetime
) -> list[tuple[datetime, datetime, timedelta]]:
    """Split [lo, hi) (naive UTC) where the zone's offset changes.

    Only reached on the rare days with a change, so an hourly probe plus bisection is cheap and
    avoids depending on zoneinfo internals for the transition list.
    """
    segments: list[tuple[datetime, datetime, timedelta]] = []
    seg_start, seg_offset, probe_from = lo, _offset_at(tz, lo), lo
    while probe_from < hi:
        probe = min(probe_from + _HOUR, hi)
        if _offset_at(tz, probe) == seg_offset:
            probe_from = probe
            continue
        low, high = probe_from, probe
        while high - low > _MICROSECOND:
            mid = low + (high - low) // 2
            if _offset_at(tz, mid) == seg_offset:
                low = mid
            else:
                high = mid
        segments.append((seg_start, high, seg_offset))
        seg_start, seg_offset, probe_from = high, _offset_at(tz, high), high
    segments.append((seg_start, hi, seg_offset))
    return segments


def _window_runs(
    tz: ZoneInfo, local_start: datetime, local_end: datetime
) -> list[list[tuple[datetime, datetime, datetime]]]:
    """Real-time extent of one local window, as runs of contiguous pieces.

    Each piece is (start, end, grid anchor) in naive UTC with one constant offset; touching pieces
    form a run, and a unit may span pieces inside a run but never a gap between runs.
    """
    offsets = (
        _local_offset(tz, local_start, 0),
        _local_offset(tz, local_start, 1),
        _local_offset(tz, local_end, 0),
        _local_offset(tz, local_end, 1),
    )
    first = offsets[0]
    if offsets[1] == first and offsets[2] == first and offsets[3] == first:
        anchor = local_start - first
        return [[(anchor, local_end - first, anchor)]]

    runs: list[list[tuple[datetime, datetime, datetime]]] = []
    lo, hi = local_start - max(offsets), local_end - min(offsets)
    for seg_start, seg_end, offset in _constant_offset_segments(tz, lo, hi):
        piece_start = max(seg_start, local_start - offset)
        piece_end = min(seg_end, local_end - offset)
        if piece_start >= piece_end:
            continue
        piece = (piece_start, piece_end, local_start - offset)
        if runs and runs[-1][-1][1] == piece_start:
            runs[-1].append(piece)
        else:
            runs.append([piece])
    return runs


# Calendars in one zone with the same hours share these conversions across calendars and
# requests; an entry is a few datetimes, so the bound keeps memory small.
@lru_cache(maxsize=1 << 16)
def _utc_window(
    tz: ZoneInfo, local_start: datetime, local_end: datetime
) -> tuple[tuple[datetime, tuple[tuple[datetime, datetime, datetime], ...]], ...]:
    """_window_runs as UTC-aware (run end, pieces), computed once per zone and window."""
    return tuple(
        (
            run[-1][1].replace(tzinfo=UTC),
            tuple(
                (start.replace(tzinfo=UTC), end.replace(tzinfo=UTC), anchor.replace(tzinfo=UTC))
                for start, end, anchor in run
            ),
        )
        for run in _window_runs(tz, local_start, local_end)
    )


@lru_cache(maxsize=1 << 16)
def _day_floor(tz: ZoneInfo, local: datetime) -> datetime:
    return (_utc_of_local(tz, local) - _BACKWARD_SLACK).replace(tzinfo=UTC)


def _merged(intervals: Sequence[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(
        (_utc(s, "notAvailable start"), _utc(e, "notAvailable end")) for s, e in intervals
    ):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


class UnitCursor:
    """The iterator iter_units returns: ascending units that can also jump ahead.

    Works one local day at a time and holds back units until no later day can produce an earlier
    one, so output is sorted even with overlapping weekly entries, overnight windows and DST days,
    while the work done stays proportional to how far the consumer reads. `skip_to` lets a caller
    that knows a resource is busy until some instant leap over whole days without producing them.
    """

    __slots__ = (
        "_align",
        "_blocked",
        "_blocked_i",
        "_day",
        "_first_open",
        "_floor",
        "_hi",
        "_last",
        "_lo",
        "_pending",
        "_slot",
        "_template",
    )

    def __init__(self, t: Template, start: datetime, end: datetime) -> None:
        lo, hi = _utc(start, "start"), _utc(end, "end")
        if t.valid_from is not None:
            lo = max(lo, _utc(t.valid_from, "valid_from"))
        if t.valid_to is not None:
            hi = min(hi, _utc(t.valid_to, "valid_to"))
        self._template = t
        self._lo, self._hi = lo, hi
        self._slot = timedelta(minutes=t.slot_minutes)
        self._align = timedelta(minutes=t.alignment_minutes)
        self._blocked = _merged(t.not_available)
        self._blocked_i = 0
        self._pending: list[datetime] = []
        self._last: datetime | None = None
        self._first_open = min((open_at for _, open_at, _ in t.weekly), default=_MIDNIGHT)
        if lo >= hi or not t.weekly:
            self._day = date.max
            self._floor = hi  # nothing to generate: the first __next__ stops
        else:
            # Two days back: an overnight window of an earlier day can reach into the first day.
            self._set_day(lo.astimezone(t.tz).date() - 2 * _DAY)

    def _set_day(self, day: date) -> None:
        self._day = day
        # No window of `day` or later starts before this instant: local readings only run
        # backwards at a fall-back change, and never by more than _BACKWARD_SLACK.
        self._floor = _day_floor(self._template.tz, datetime.combine(day, self._first_open))

    def __iter__(self) -> UnitCursor:
        return self

    def __next__(self) -> tuple[datetime, datetime]:
        blocked, slot = self._blocked, self._slot
        while True:
            pending = self._pending  # _generate and skip_to may replace the list
            while pending and pending[0] < self._floor:
                unit = heapq.heappop(pending)
                if unit == self._last:
                    continue
                self._last = unit
                unit_end = unit + slot
                i = self._blocked_i
                while i < len(blocked) and blocked[i][1] <= unit:
                    i += 1
                self._blocked_i = i
                if i < len(blocked) and blocked[i][0] < unit_end:
                    continue
                return unit, unit_end
            if self._floor >= self._hi:
                raise StopIteration
            self._generate(self._day)
            self._set_day(self._day + _DAY)

    def skip_to(self, when: datetime) -> None:
        """Drop every unit starting before `when`, generating none of the days in between."""
        when = _utc(when, "when")
        if when <= self._lo:
            return
        self._lo = when
        if self._pending and self._pending[0] < when:
            self._pending = [unit for unit in self._pending if unit >= when]
            heapq.heapify(self._pending)
        target = when.astimezone(self._template.tz).date() - 2 * _DAY
        if target > self._day and self._floor < self._hi:
            self._set_day(target)

    def _generate(self, day: date) -> None:
        t, lo, hi, slot, align = self._template, self._lo, self._hi, self._slot, self._align
        weekday = day.weekday()
        units: list[datetime] = []
        for days, open_at, close_at in t.weekly:
            if weekday not in days:
                continue
            local_start = datetime.combine(day, open_at)
            local_end = datetime.combine(day + _DAY if close_at <= open_at else day, close_at)
            for run_end, pieces in _utc_window(t.tz, local_start, local_end):
                limit = min(run_end, hi)
                for piece_start, piece_end, anchor in pieces:
                    # First grid point at or after max(piece start, lo): ceil division.
                    unit = anchor - ((anchor - max(piece_start, lo)) // align) * align
                    while unit < piece_end and unit + slot <= limit:
                        units.append(unit)
                        unit += align
        if not units:
            return
        if self._pending:
            for unit in units:
                heapq.heappush(self._pending, unit)
        else:  # the usual case: a sorted list already is a heap, and sorting it is linear
            units.sort()
            self._pending = units


def iter_units(t: Template, start: datetime, end: datetime) -> UnitCursor:
    """Lazily yield bookable units [s, e) fully inside [start, end), ascending, UTC-aware.

    Units lie on the template's grid, within its weekly hours read in its own zone (see the module
    docstring for daylight-saving days), inside validPeriod and outside notAvailable.
    """
    return UnitCursor(t, start, end)


# --------------------------------------------------------------------------- write validation

_WEEK = 7 * 24 * 60


def _week_spans(weekly: tuple[tuple[frozenset[int], time, time], ...]
                ) -> list[tuple[int, int, int]]:
    """(availableTime index, start, end) in minutes of the week (Monday 00:00 = 0), overnight
    and all-day windows included, split where they wrap past Sunday midnight."""
    out = []
    for n, (days, open_at, close_at) in enumerate(weekly):
        start_min = open_at.hour * 60 + open_at.minute
        end_min = close_at.hour * 60 + close_at.minute
        length = end_min - start_min if end_min > start_min else end_min - start_min + 24 * 60
        for day in days:
            s = day * 24 * 60 + start_min
            e = s + length
            out.append((n, s, min(e, _WEEK)))
            if e > _WEEK:
                out.append((n, 0, e - _WEEK))
    return out


def _overlapping_hours(a: Template, b: Template) -> bool:
    if a.tz.key != b.tz.key:
        return False  # compared in different zones the hours cannot be matched up statically
    if (a.valid_to is not None and b.valid_from is not None and a.valid_to <= b.valid_from) or (
            b.valid_to is not None and a.valid_from is not None and b.valid_to <= a.valid_from):
        return False
    return any(s1 < e2 and s2 < e1 for _, s1, e1 in _week_spans(a.weekly)
               for _, s2, e2 in _week_spans(b.weekly))


def template_problems(schedule: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    """What makes a Schedule's templates unusable, as (element path, message), for the write
    rules: everything ``parse_templates`` and ``horizon`` refuse (raised as TemplateError), plus
    rules across elements: hours of one template that overlap each other, templates of one
    Schedule whose hours overlap, and templates that disagree on capacity or buffers (those
    belong to the resource, see ``capacity``)."""
    templates = parse_templates(schedule)
    horizon(schedule)
    paths = [f"Schedule.extension[{i}]" for i, ext in _extensions(schedule, "Schedule")
             if ext.get("url") == AVAILABILITY_TEMPLATE_URL]
    for t, path in zip(templates, paths, strict=True):
        spans = _week_spans(t.weekly)
        for i, (n1, s1, e1) in enumerate(spans):
            for n2, s2, e2 in spans[i + 1:]:
                if s1 < e2 and s2 < e1:
                    first, second = sorted({n1, n2}) if n1 != n2 else (n1, n1)
                    yield (path, f"availableTime {first} and {second} overlap; give each hour "
                           "once (use capacity for parallel bookings)")
                    break
            else:
                continue
            break
    for i, (a, pa) in enumerate(zip(templates, paths, strict=True)):
        for b, pb in zip(templates[i + 1:], paths[i + 1:], strict=True):
            if (a.capacity, a.buffer_before, a.buffer_after) != (
                    b.capacity, b.buffer_before, b.buffer_after):
                yield (pb, f"capacity and buffers differ from those of {pa}; they belong to "
                       "the resource, so every template of a Schedule must declare the same")
            elif _overlapping_hours(a, b):
                yield (pb, f"its hours overlap those of {pa}; give each hour once")


def schedule_zone(schedule: Mapping[str, object]) -> ZoneInfo | None:
    """The zone a Schedule's availability is written in, when it says (reminders and
    calendar entries show its visits in it when nothing closer to the patient says)."""
    return _first_zone(schedule)
