"""What the write pipeline hands a per-type write rule, and what a rule may hand back.

Kept apart from the pipeline (``service.resources``) and from the rules (``scheduling``,
declared per type in ``resources/``) so that both depend on it and neither on the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .context import RequestContext
from .storage.base import Unit

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class WriteConfig:
    """The deployment's settings a write rule obeys (from ``Settings``, fixed per process)."""

    # How far in the past a booking may still start (a front desk entering a walk-in late).
    past_grace: timedelta = timedelta(0)
    # The longest a booking that takes time may last: what it claims grows with its length,
    # so a ten-year "appointment" would tie up the writer and gigabytes of memory (issue 13).
    max_appointment: timedelta = timedelta(hours=24)
    # What a calendar of record reports is recorded, not booked here: a wider cap, still a cap.
    max_recorded: timedelta = timedelta(hours=168)
    # A payer's eligibility answer is asked for bookings of visit types needing coverage (an
    # eligibility checker other than the local rules is configured), kept this long, and
    # when none comes in time the booking is refused (True) or booked and flagged (False).
    eligibility_remote: bool = False
    eligibility_ttl: timedelta = timedelta(hours=24)
    eligibility_refuse: bool = False
    # Virtual visits' join links: the URL template a room name fills (empty: no links).
    telehealth_template: str = ""
    # The URL prefixes Subscription endpoints may start with (empty: any).
    subscription_endpoints: tuple[str, ...] = ("https://",)


@dataclass(slots=True)
class WriteEvent:
    """One write as a rule sees it: the previous and the new content (None when absent or
    deleted), inside the atomic unit that will commit it.

    A rule may replace ``new`` with an annotated copy (the guard flags a booking of record that
    breaks a rule); the pipeline stores whatever ``new`` holds when the rule returns."""

    ctx: RequestContext
    type: str
    id: str
    old: Json | None
    new: Json | None
    config: WriteConfig = field(default_factory=WriteConfig)


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A further write a rule needs in the same unit (a Slot following its Appointment). The
    pipeline makes it, through its own rules, so a rule never re-enters the service."""

    type: str
    id: str
    body: Json


WriteRule = Callable[[Unit, WriteEvent], Awaitable[list[FollowUp]]]
