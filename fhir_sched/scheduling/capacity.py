"""The capacity policy: how many bookings a resource takes at once, and its buffers.

Capacity belongs to the resource (a practitioner, a room), not to one of its calendars: the
booking guard claims seats per resource and unit, whatever Schedule an appointment came from.
So the policy of a resource is read from all of its active Schedules by one rule, and both the
guard and ``$find`` call it; Schedule writes that would give one resource two different
policies are refused (``conflicting_policy``), which is what keeps that rule unambiguous.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import orjson

from ..errors import FhirError
from ..query import AnyOf, Cond, Entry, Query
from ..storage.base import Unit
from ..writes import FollowUp, WriteEvent
from .templates import Template, TemplateError, parse_templates


@dataclass(frozen=True, slots=True)
class Policy:
    capacity: int = 1
    buffer_before: timedelta = timedelta(0)
    buffer_after: timedelta = timedelta(0)


DEFAULT = Policy()
# How many active Schedules of one resource its policy is read from (the guard and $find alike).
MAX_SCHEDULES_PER_RESOURCE = 100


def schedules_of(*actors: str) -> Query:
    """The Schedules naming any of ``actors``: one index seek each. Inactive ones are dropped
    by ``resource_policy`` from the bodies the caller reads anyway, which is cheaper than a
    negated condition in the store, and this runs inside every booking's unit."""
    refs = tuple(Entry("actor", (Cond("val", "=", a),)) for a in actors)
    return Query("Schedule", (refs[0] if len(refs) == 1 else AnyOf(refs),),
                 count=MAX_SCHEDULES_PER_RESOURCE * len(actors))


async def unit_policy(unit: Unit, actor: str) -> Policy:
    """A resource's policy as committed in ``unit`` (what the guard enforces): the same rule as
    ``resource_policy``, reading Schedules in id order only until the first that declares one
    (a room named on hundreds of Schedules costs one read, inside every booking's unit)."""
    ids = await unit.find_ids(schedules_of(actor), limit=MAX_SCHEDULES_PER_RESOURCE)
    for sid in sorted(ids):
        rec = await unit.get("Schedule", sid)
        if rec is not None and not rec.deleted and rec.body is not None and _declares(rec.body):
            return stored_schedule_policy(rec.body)
    return DEFAULT


async def unit_schedules(unit: Unit, actor: str) -> list[tuple[str, bytes]]:
    """Every Schedule naming ``actor`` as committed in ``unit``: (id, stored body)."""
    out = []
    for sid in await unit.find_ids(schedules_of(actor), limit=MAX_SCHEDULES_PER_RESOURCE):
        rec = await unit.get("Schedule", sid)
        if rec is not None and not rec.deleted and rec.body is not None:
            out.append((sid, rec.body))
    return out


def template_policy(t: Template) -> Policy:
    return Policy(t.capacity, t.buffer_before, t.buffer_after)


def templates_policy(templates: Iterable[Template]) -> Policy:
    """A Schedule's policy: its templates' (validation makes them agree), else the default."""
    for t in templates:
        return template_policy(t)
    return DEFAULT


@lru_cache(maxsize=4096)
def stored_schedule_policy(body: bytes) -> Policy:
    """The policy of a stored Schedule, parsed once per stored version (the bytes carry
    ``meta.versionId``, so an update is a new cache key)."""
    try:
        return templates_policy(parse_templates(orjson.loads(body)))
    except TemplateError:
        return DEFAULT


def resource_policy(schedules: Iterable[tuple[str, bytes]]) -> Policy:
    """The policy of a resource from its active Schedules (id, stored body): the first one, in
    id order, that declares templates. Every caller passes the same set, so the guard and
    ``$find`` always agree."""
    for _id, body in sorted(schedules):
        if _declares(body):
            return stored_schedule_policy(body)
    return DEFAULT


@lru_cache(maxsize=4096)
def _declares(body: bytes) -> bool:
    """An active Schedule with availability templates: one that sets a policy."""
    try:
        schedule = orjson.loads(body)
        return schedule.get("active") is not False and bool(parse_templates(schedule))
    except TemplateError:
        return False


def conflicting_policy(schedule: Mapping[str, object], others: Iterable[tuple[str, bytes]]
                       ) -> tuple[str, Policy] | None:
    """(id, policy) of another active Schedule of a shared actor whose templates give that actor
    a different policy than ``schedule`` does; None when they agree (or either has none)."""
    try:
        mine = parse_templates(schedule)
    except TemplateError:
        return None
    if not mine:
        return None
    policy = templates_policy(mine)
    for other_id, body in sorted(others):
        if other_id == schedule.get("id") or not _declares(body):
            continue
        theirs = stored_schedule_policy(body)
        if theirs != policy:
            return other_id, theirs
    return None


async def check_schedule_write(unit: Unit, ev: WriteEvent) -> list[FollowUp]:
    """The Schedule write rule: a Schedule may not give a resource a capacity or buffers that
    differ from those its other active Schedules give it (the guard could not tell which one
    an appointment meant). Checked in the write's unit, against committed state."""
    new = ev.new
    if new is None or new.get("active") is False:
        return []
    for n, actor in enumerate(new.get("actor") or []):
        ref = actor.get("reference") if isinstance(actor, dict) else None
        if not isinstance(ref, str) or "/" not in ref or "://" in ref:
            continue
        others = await unit_schedules(unit, ref)
        clash = conflicting_policy({**new, "id": ev.id}, others)
        if clash is not None:
            other, theirs = clash
            raise FhirError(
                422, "business-rule",
                f"Schedule.actor[{n}]: {ref} already has capacity {theirs.capacity} and buffers "
                f"{_minutes(theirs.buffer_before)}/{_minutes(theirs.buffer_after)} min from "
                f"Schedule/{other}; capacity and buffers belong to the resource, so every active "
                "Schedule of it must declare the same", expression=[f"Schedule.actor[{n}]"])
    return []


def _minutes(d: timedelta) -> int:
    return int(d.total_seconds() // 60)
