"""Subscription topics (Subscriptions R5 Backport IG 1.1.0 for R4): what a subscriber can ask
to be told about, as a table. Each topic names the change that triggers it, per resource type,
as a test of the previous and the new content, and the filters a subscription may narrow it
with; the notifier (``engage/subscriptions.py``) runs the tests over the change feed.

Filters are ``Type?param=value`` (the backport ``filter-criteria`` extension): ``patient``,
``practitioner``, ``location`` and ``service`` (a HealthcareService) compare with the
Appointment's participants; on a Slot, ``schedule``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

BASE = "https://fhir-sched.org/fhir/SubscriptionTopic/"
# On a hold the waitlist made for a waiting patient (``engage/waitlist.py``).
WAITLIST_OFFER_URL = "https://fhir-sched.org/fhir/StructureDefinition/waitlist-offer"
Test = Callable[[Mapping[str, Any] | None, Mapping[str, Any] | None], bool]
TAKING = frozenset({"booked", "arrived", "checked-in", "pending"})
FILTERS = {"Appointment": ("patient", "practitioner", "location", "service"),
           "Slot": ("schedule",)}


@dataclass(frozen=True, slots=True)
class Trigger:
    resource: str
    description: str
    test: Test


@dataclass(frozen=True, slots=True)
class Topic:
    code: str
    title: str
    description: str
    triggers: tuple[Trigger, ...]

    @property
    def url(self) -> str:
        return BASE + self.code

    def fires(self, type_: str, old: Mapping[str, Any] | None,
              new: Mapping[str, Any] | None) -> bool:
        return any(t.resource == type_ and t.test(old, new) for t in self.triggers)


def _status(body: Mapping[str, Any] | None) -> str | None:
    return str(body.get("status")) if body else None


def _booked(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    return _status(new) == "booked" and _status(old) != "booked"


def _changed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    if old is None or new is None or _status(new) not in TAKING or _status(old) not in TAKING:
        return False
    keys = ("start", "end", "participant", "slot", "minutesDuration", "serviceType",
            "appointmentType")
    return _status(old) != _status(new) or any(old.get(k) != new.get(k) for k in keys)


def _cancelled(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    return _status(new) == "cancelled" and _status(old) != "cancelled"


def _appointment_freed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Time a booking held is free again: cancelled, a no-show, moved away, or deleted."""
    if _status(old) not in TAKING:
        return False
    if new is None or _status(new) in ("cancelled", "noshow", "entered-in-error"):
        return True
    assert old is not None
    return _status(new) in TAKING and (old.get("start"), old.get("end")) != (
        new.get("start"), new.get("end"))


def _offered(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """A waitlist offer was made: a hold carrying the waitlist-offer extension appeared."""
    return old is None and _status(new) == "pending" and any(
        isinstance(e, Mapping) and e.get("url") == WAITLIST_OFFER_URL
        for e in (new or {}).get("extension") or [])


def _slot_freed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    return _status(new) == "free" and _status(old) in ("busy", "busy-tentative")


TOPICS: tuple[Topic, ...] = (
    Topic("appointment-booked", "Appointment booked",
          "An Appointment became booked (made booked, or moved to booked from another status).",
          (Trigger("Appointment", "status is now booked and was not", _booked),)),
    Topic("appointment-changed", "Appointment changed",
          "A booking still holding its time changed: its time, participants, slots, type or "
          "status among pending, booked, arrived and checked-in.",
          (Trigger("Appointment", "time, participants or status changed", _changed),)),
    Topic("appointment-cancelled", "Appointment cancelled",
          "An Appointment became cancelled.",
          (Trigger("Appointment", "status is now cancelled and was not", _cancelled),)),
    Topic("slot-freed", "Time freed",
          "Bookable time became free: a Slot went from busy to free, or a booking that held "
          "time was cancelled, marked a no-show, moved or deleted (its Appointment is the "
          "focus, with the time it held).",
          (Trigger("Slot", "status is now free and was busy", _slot_freed),
           Trigger("Appointment", "a booking gave its time back", _appointment_freed))),
    Topic("waitlist-offer", "Waitlist offer",
          "Freed time was offered to a waiting patient: a hold for them (the focus, with the "
          "waitlist-offer extension naming their waitlist entry) was placed.",
          (Trigger("Appointment", "a waitlist offer's hold was made", _offered),)),
)
BY_URL: Mapping[str, Topic] = {t.url: t for t in TOPICS}


def parse_filter(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``Type?a=b&c=d`` as (type, [(param, value)]); raises ValueError naming what is wrong."""
    type_, sep, query = text.partition("?")
    if type_ not in FILTERS:
        raise ValueError(f"filters apply to {' or '.join(FILTERS)}, not {type_!r}")
    pairs = []
    for part in query.split("&") if sep else []:
        name, eq, value = part.partition("=")
        if not eq or not value:
            raise ValueError(f"{part!r} is not param=value")
        if name not in FILTERS[type_]:
            raise ValueError(f"{type_} filters are {', '.join(FILTERS[type_])}, not {name!r}")
        pairs.append((name, value))
    return type_, pairs


def _actors(appointment: Mapping[str, Any]) -> set[str]:
    return {str(((p or {}).get("actor") or {}).get("reference"))
            for p in appointment.get("participant") or []}


def matches(type_: str, body: Mapping[str, Any], filters: Mapping[str, list[tuple[str, str]]]
            ) -> bool:
    """Whether a focus passes a subscription's filters: every pair of its type's filter
    must hold; a focus of a type the subscription did not filter passes."""
    wanted = filters.get(type_)
    if not wanted:
        return True
    if type_ == "Slot":
        ref = str((body.get("schedule") or {}).get("reference"))
        return all(value == ref for _name, value in wanted)
    actors = _actors(body)
    for name, value in wanted:
        ok = value in actors
        if name == "service" and not ok:
            ok = any(value == c.get("code") or value.endswith("|" + str(c.get("code")))
                     for concept in body.get("serviceType") or []
                     for c in (concept or {}).get("coding") or [])
        if not ok:
            return False
    return True
