"""Canonical URLs of our scheduling extensions (declared as StructureDefinitions in
``conformance/``), and small readers for them."""

from __future__ import annotations

from typing import Any

BASE = "https://fhir-sched.org/fhir/StructureDefinition/"
HOLD_EXPIRES = BASE + "hold-expires"
OVERBOOKED = BASE + "overbooked"
# Why staff used the front-desk override (required when it overrides a booking rule).
OVERRIDE_REASON = BASE + "override-reason"
# A booking recorded from a calendar of record although it breaks a rule (repeatable).
BOOKING_FLAG = BASE + "booking-flag"
# On a Schedule: it offers nothing, it only carries blocked time (see admission).
BLOCKED_TIME_ONLY = BASE + "blocked-time-only"


def get_ext(resource: dict[str, Any], url: str) -> dict[str, Any] | None:
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return ext
    return None


def set_ext(resource: dict[str, Any], url: str, value: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``resource`` with extension ``url`` set to ``value`` (removed when None)."""
    return set_exts(resource, url, [] if value is None else [value])


def set_exts(resource: dict[str, Any], url: str, values: list[dict[str, Any]]
             ) -> dict[str, Any]:
    """A copy of ``resource`` whose extensions ``url`` are exactly ``values`` (a repeatable
    extension; none left when ``values`` is empty)."""
    exts = [
        e
        for e in resource.get("extension") or []
        if not (isinstance(e, dict) and e.get("url") == url)
    ]
    exts += [{"url": url, **v} for v in values]
    out = dict(resource)
    if exts:
        out["extension"] = exts
    else:
        out.pop("extension", None)
    return out


def hold_expiry(appointment: dict[str, Any]) -> str | None:
    ext = get_ext(appointment, HOLD_EXPIRES)
    value = ext.get("valueInstant") if ext else None
    return value if isinstance(value, str) else None


def override_reason(appointment: dict[str, Any]) -> str | None:
    ext = get_ext(appointment, OVERRIDE_REASON)
    value = ext.get("valueString") if ext else None
    return value.strip() or None if isinstance(value, str) else None


def overbook_requested(appointment: dict[str, Any]) -> bool:
    ext = get_ext(appointment, OVERBOOKED)
    return bool(ext and ext.get("valueBoolean") is True)
