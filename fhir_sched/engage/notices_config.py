"""The server-wide reminder settings, read once and checked at start: a bad
``FHIR_SCHED_REMINDERS`` or ``FHIR_SCHED_QUIET_HOURS`` stops the server with the reason
rather than leaving patients unreminded."""

from __future__ import annotations

from datetime import time, timedelta

from ..scheduling.notices import parse_leads
from ..settings import Settings
from .reminders import quiet_hours


def leads_and_quiet(settings: Settings) -> tuple[tuple[timedelta, ...], tuple[time, time] | None]:
    try:
        leads = parse_leads(settings.reminders)
    except ValueError as exc:
        raise SystemExit(f"FHIR_SCHED_REMINDERS: {exc}") from None
    try:
        quiet = quiet_hours(settings.quiet_hours)
    except ValueError as exc:
        raise SystemExit(f"FHIR_SCHED_QUIET_HOURS: {exc}") from None
    return leads, quiet
