"""What a visit type says about the messages its bookings get: when reminders go out, by which
channels, and whether the visit is virtual (a telehealth join link).

Read from the visit-type extension (``visit_types``) beside its length and booking rules, and
checked on write like them, so a typo in "72 hours" surfaces when the HealthcareService is
saved, not when the first reminder fails to go out. A visit type that says nothing uses the
server's defaults (``FHIR_SCHED_REMINDERS``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

CHANNELS = ("email", "sms", "webhook")
SETTINGS = frozenset({"reminder", "reminderChannel", "virtual"})
REPEATING = frozenset({"reminder", "reminderChannel"})
MAX_LEAD_DAYS = 366
MAX_REMINDERS = 10
# UCUM units a reminder's lead may be given in, as minutes.
_UNITS = {"min": 1, "h": 60, "d": 1440, "wk": 10080}


class NoticeError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Notices:
    """``leads``: how long before the visit each reminder goes out (None: the server's
    default; empty: none at all); ``channels``: the only channels used (empty: every one the
    patient can be reached by); ``virtual``: the visit happens online."""

    leads: tuple[timedelta, ...] | None = None
    channels: tuple[str, ...] = ()
    virtual: bool = False


def lead_of(value: object, path: str) -> timedelta:
    """A Duration in UCUM minutes, hours, days or weeks, more than 0 and at most a year."""
    if not isinstance(value, Mapping):
        raise NoticeError(path, "must be a Duration")
    amount, code = value.get("value"), value.get("code") or value.get("unit")
    if (not isinstance(amount, int | float) or isinstance(amount, bool) or code not in _UNITS
            or value.get("system", "http://unitsofmeasure.org") != "http://unitsofmeasure.org"):
        raise NoticeError(path, "must be a Duration with a value and a UCUM code among "
                          f"{sorted(_UNITS)} (system http://unitsofmeasure.org)")
    lead = timedelta(minutes=float(amount) * _UNITS[str(code)])
    if not timedelta(0) < lead <= timedelta(days=MAX_LEAD_DAYS):
        raise NoticeError(path, f"must be more than 0 and at most {MAX_LEAD_DAYS} days")
    return lead


def parse_notices(groups: Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]]) -> Notices:
    leads: tuple[timedelta, ...] | None = None
    if "reminder" in groups:
        found: list[timedelta] = []
        for path, sub in groups["reminder"]:
            if sub.get("valueBoolean") is False:  # reminders off for this visit type
                if len(groups["reminder"]) > 1:
                    raise NoticeError(path, "false turns reminders off; it stands alone")
                found = []
                break
            found.append(lead_of(sub.get("valueDuration"), f"{path}.valueDuration"))
        if len(found) > MAX_REMINDERS:
            raise NoticeError(groups["reminder"][0][0], f"at most {MAX_REMINDERS} reminders")
        leads = tuple(sorted(set(found), reverse=True))
    channels: list[str] = []
    for path, sub in groups.get("reminderChannel", []):
        code = sub.get("valueCode")
        if code not in CHANNELS:
            raise NoticeError(f"{path}.valueCode", f"must be one of {list(CHANNELS)}, got "
                              f"{code!r}")
        channels.append(str(code))
    virtual = False
    if "virtual" in groups:
        path, sub = groups["virtual"][0]
        if not isinstance(sub.get("valueBoolean"), bool):
            raise NoticeError(f"{path}.valueBoolean", "must be true or false")
        virtual = bool(sub["valueBoolean"])
    return Notices(leads, tuple(dict.fromkeys(channels)), virtual)


def parse_leads(text: str) -> tuple[timedelta, ...]:
    """The server default, ``72h,24h`` (``m``, ``h``, ``d`` suffixes); empty: no reminders."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        unit = {"m": 1, "h": 60, "d": 1440}.get(part[-1])
        try:
            amount = float(part[:-1]) if unit else float("nan")
        except ValueError:
            amount = float("nan")
        if unit is None or not 0 < amount * unit <= MAX_LEAD_DAYS * 1440:
            raise ValueError(f"{part!r} is not a lead time such as 72h, 90m or 2d")
        out.append(timedelta(minutes=amount * unit))
    return tuple(sorted(set(out), reverse=True))
