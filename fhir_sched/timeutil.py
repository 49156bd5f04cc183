"""FHIR date/time values as UTC instants and ranges.

FHIR dates carry their precision: ``2026-03`` means the whole month. Search and indexing treat
every value as the inclusive range it denotes, in microseconds since the epoch (UTC), so that
comparisons are integer comparisons in any store. Values without an offset at time precision are
refused where FHIR requires one; bare dates are taken as UTC days (documented in the README).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

_DT = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,18}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)


def to_us(dt: datetime) -> int:
    return (dt - EPOCH) // US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def format_instant(dt: datetime) -> str:
    """UTC instant with millisecond precision, the form used in meta.lastUpdated."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def now_instant() -> str:
    return format_instant(datetime.now(UTC))


def parse_instant(value: str) -> datetime:
    """A dateTime with time and offset, as an aware datetime. Raises ValueError otherwise."""
    m = _DT.match(value)
    if not m or m["H"] is None:
        raise ValueError(f"{value!r} is not a date-time with a time")
    if m["tz"] is None:
        raise ValueError(f"{value!r} has no time-zone offset")
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def date_range(value: str, *, require_offset: bool = False) -> tuple[int, int]:
    """The inclusive [lo, hi] microsecond range that a FHIR date/dateTime/instant denotes."""
    m = _DT.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a FHIR date or dateTime")
    y = int(m["y"])
    if m["m"] is None:
        lo = datetime(y, 1, 1, tzinfo=UTC)
        return to_us(lo), to_us(datetime(y + 1, 1, 1, tzinfo=UTC)) - 1
    mo = int(m["m"])
    if m["d"] is None:
        lo = datetime(y, mo, 1, tzinfo=UTC)
        nxt = datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=UTC)
        return to_us(lo), to_us(nxt) - 1
    d = int(m["d"])
    if m["H"] is None:
        lo = datetime(y, mo, d, tzinfo=UTC)
        return to_us(lo), to_us(lo + timedelta(days=1)) - 1
    if m["tz"] is None:
        if require_offset:
            raise ValueError(f"{value!r} has a time but no time-zone offset")
        tz: tzinfo = UTC
    else:
        parsed_tz = UTC if m["tz"] == "Z" else datetime.strptime(m["tz"], "%z").tzinfo
        assert parsed_tz is not None
        tz = parsed_tz
    sec = int(m["S"] or 0)
    frac = m["f"] or ""
    micro = int((frac + "000000")[:6]) if frac else 0
    start = datetime(y, mo, d, int(m["H"]), int(m["M"]), sec, micro, tzinfo=tz)
    if m["S"] is None:
        width = timedelta(minutes=1)
    elif not frac:
        width = timedelta(seconds=1)
    else:
        width = timedelta(microseconds=10 ** (6 - min(len(frac), 6)))
    return to_us(start), to_us(start + width) - 1
