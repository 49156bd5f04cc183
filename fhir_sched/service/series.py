"""Recurring series through ``$book``: booking every occurrence, and changing "this and
following" ones, each occurrence through the one write pipeline.

Every occurrence is an ordinary Appointment write (``put_in_unit``), so the booking guard
claims its time and applies its visit type's rules, referral visits included, exactly as for
one booking; a series is only many of them in one atomic unit. An occurrence the guard refuses
drops the claims it took on the way (``Unit.release``) and is reported; then either the whole
unit is given up (all-or-nothing, the default) or the rest commit (``book-free``).

A refused occurrence is reported with the nearest free times for the same resources, found by
``$find`` once the unit is over (a unit never waits on a search of that size), and in
``book-free`` mode offered as proposals already linked into the series, so booking one by
reference puts it in its place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ..context import RequestContext
from ..errors import FhirError
from ..query import Cond, Entry, Query
from ..scheduling.capacity import schedules_of
from ..scheduling.extensions import set_ext
from ..scheduling.guard import patient_actors, resource_actors
from ..scheduling.recurrence import (
    CHANGED,
    ORIGINATING,
    RECURRENCE_ID,
    Occurrence,
    expand,
    number_of,
    occurrence,
    origin_of,
    pattern_of,
    template_of,
    with_zone,
)
from ..scheduling.templates import TemplateError, horizon, parse_templates
from ..scheduling.visit_types import codings
from ..storage.base import DocumentStore, Unit
from ..timeutil import parse_instant
from .find import FindRequest, FindService
from .resources import ResourceService, Saved, new_id

MODES = ("all-or-nothing", "book-free")
SCOPES = ("this", "this-and-following")
# Refused occurrences that get nearest alternatives looked up (one $find each); the rest are
# reported without, so a series that collides everywhere stays a bounded request.
MAX_WITH_ALTERNATIVES = 10
ALTERNATIVES_PER_OCCURRENCE = 2
_AROUND = timedelta(days=3)  # how far either side of a refused time alternatives are sought
# Statuses a "this and following" change carries along (the rest are history).
_FOLLOWING = frozenset({"proposed", "pending", "booked", "waitlist"})


@dataclass(frozen=True, slots=True)
class Refused:
    occurrence: Occurrence
    error: FhirError
    alternatives: tuple[dict[str, Any], ...] = ()


@dataclass(slots=True)
class SeriesResult:
    zone: str  # the series' time zone: what the front desk reads times in
    saved: list[tuple[Saved, dict[str, Any]]] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)

    def issues(self, severity: str) -> list[dict[str, Any]]:
        return [_issue(r, self.zone, severity) for r in self.refused]


Compose = Callable[[Any], Awaitable[tuple[dict[str, Any], str]]]
Before = Callable[[Unit], Awaitable[None]]


def starts_series(appointment: dict[str, Any]) -> bool:
    """A booking whose Appointment carries a pattern and is not yet one of its occurrences."""
    return template_of(appointment) is not None and number_of(appointment) is None


def refusable(exc: FhirError) -> bool:
    """An answer about this occurrence's time or rules, not about the request as a whole."""
    return exc.status in (409, 422) and exc.code in ("conflict", "business-rule", "duplicate")


class SeriesBooking:
    def __init__(self, resources: ResourceService, find: FindService | None,
                 max_occurrences: int) -> None:
        self.resources = resources
        self.store: DocumentStore = resources.store
        self.find = find
        self.max_occurrences = max_occurrences

    # -- a new series ------------------------------------------------------------------------
    async def book(self, ctx: RequestContext, compose: Compose, checked: dict[str, Any],
                   before: Before, mode: str) -> SeriesResult:
        zone, until = await self.window(checked)
        pattern = pattern_of(checked, zone)
        occs = expand(pattern, parse_instant(checked["start"]), parse_instant(checked["end"]),
                      until, self.max_occurrences)
        template = with_zone(template_of(checked) or {}, pattern.zone)
        if checked.get("slot"):
            raise FhirError(422, "business-rule", "a series cannot name Slots: each occurrence "
                            "needs time of its own; book it on availability templates, or "
                            "book each Slot", expression=["Appointment.slot"])

        async def run(unit: Unit) -> SeriesResult:
            await before(unit)
            base, first_id = await compose(unit)
            if base != checked:
                base = self.resources.prepare("Appointment", base, first_id)
            out = SeriesResult(str(pattern.zone.key))
            origin: str | None = None
            for occ in occs:
                id_ = first_id if origin is None else new_id()
                body = occurrence(base, occ, origin, template)
                try:
                    saved = await self.resources.put_in_unit(unit, ctx, "Appointment", id_, body)
                except FhirError as exc:
                    if not refusable(exc):
                        raise
                    await unit.release("Appointment", id_)
                    out.refused.append(Refused(occ, exc))
                    continue
                origin = origin or f"Appointment/{id_}"
                await self.resources.audit_operation(unit, ctx, "$book", saved, body)
                out.saved.append((saved, body))
            if out.refused and (mode == "all-or-nothing" or not out.saved):
                raise _refusal(out, len(occs), mode)
            return out

        try:
            result = await self.resources.atomic(run)
        except _SeriesRefused as refused:
            with_alts = await self._alternatives(ctx, checked, refused.result.refused, None)
            raise _refusal(SeriesResult(refused.result.zone, [], with_alts), len(occs),
                           mode).error from None
        origin = f"Appointment/{result.saved[0][0].record.id}" if result.saved else None
        result.refused = await self._alternatives(ctx, checked, result.refused, origin)
        return result

    async def window(self, appointment: dict[str, Any]) -> tuple[str, datetime | None]:
        """(the zone a pattern without one is read in, the end of the planning horizon): the
        first template zone among the resources' Schedules, and the earliest end any of them
        plans to; a series is never expanded past what its resources can be booked for."""
        zone: str | None = None
        until: datetime | None = None
        for actor in resource_actors(appointment):
            page = await self.store.search(schedules_of(actor))
            latest: datetime | None = None
            bounded = True
            for _id, body in sorted(page.rows):
                sched = orjson.loads(body)
                if sched.get("active") is False:
                    continue
                try:
                    templates = parse_templates(sched)
                    _lo, hi = horizon(sched)
                except TemplateError:
                    continue
                if zone is None and templates:
                    zone = str(templates[0].tz.key)
                if hi is None:
                    bounded = False
                elif latest is None or hi > latest:
                    latest = hi
            if bounded and latest is not None and (until is None or latest < until):
                until = latest
        return zone or "UTC", until

    # -- "this and following" ----------------------------------------------------------------
    async def following(self, ctx: RequestContext, target_id: str, compose: Compose,
                        checked: dict[str, Any]) -> SeriesResult:
        """Cancel or move one occurrence and every later one still to come, in one unit; a
        move keeps each one's wall-clock shift in the series' zone. All or nothing: a move
        that cannot take every occurrence along leaves the series as it was."""
        rec = await self.store.get("Appointment", target_id)
        if rec is None or rec.deleted or rec.body is None:
            raise FhirError(404, "not-found", f"Appointment/{target_id} is not known",
                            severity="fatal")
        stored = orjson.loads(rec.body)
        origin = origin_of(stored)
        if origin is None:
            raise FhirError(422, "business-rule", f"series-scope this-and-following: "
                            f"Appointment/{target_id} is not an occurrence of a series",
                            expression=["series-scope"])
        zone = await self._series_zone(origin)
        cancelling = checked.get("status") == "cancelled"

        async def run(unit: Unit) -> SeriesResult:
            base, id_ = await compose(unit)
            if base != checked:
                base = self.resources.prepare("Appointment", base, id_)
            current = await unit.get("Appointment", id_)
            if current is None or current.body is None or current.deleted:
                raise FhirError(404, "not-found", f"Appointment/{id_} is not known")
            old = orjson.loads(current.body)
            shift = _shift(old, base, zone)
            out = SeriesResult(zone)
            saved = await self.resources.put_in_unit(unit, ctx, "Appointment", id_, base)
            await self.resources.audit_operation(unit, ctx, "$book", saved, base)
            out.saved.append((saved, base))
            for member in await self._later(unit, origin, id_, old["start"]):
                body = (_cancelled(member, base.get("cancelationReason")) if cancelling
                        else _moved(member, shift, zone))
                try:
                    done = await self.resources.put_in_unit(unit, ctx, "Appointment",
                                                            member["id"], body)
                except FhirError as exc:
                    if not refusable(exc):
                        raise
                    occ = Occurrence(number_of(member) or 0, *(
                        parse_instant(body[k]) for k in ("start", "end")))
                    out.refused.append(Refused(occ, exc))
                    continue
                await self.resources.audit_operation(unit, ctx, "$book", done, body)
                out.saved.append((done, body))
            if out.refused:
                raise _refusal(out, len(out.saved) + len(out.refused), "all-or-nothing")
            return out

        try:
            return await self.resources.atomic(run)
        except _SeriesRefused as refused:
            with_alts = await self._alternatives(ctx, checked, refused.result.refused, None)
            planned = len(refused.result.refused) + len(refused.result.saved)
            raise _refusal(SeriesResult(zone, [], with_alts), planned,
                           "all-or-nothing").error from None

    async def _later(self, unit: Unit, origin: str, target_id: str, after: str
                     ) -> list[dict[str, Any]]:
        """The series' occurrences after ``after`` still to come, in time order."""
        origin_id = origin.split("/", 1)[1]
        ids = await unit.find_ids(Query("Appointment", (Entry(
            "originating-appointment", (Cond("val", "=", origin),)),),
            count=self.max_occurrences + 1), limit=self.max_occurrences + 1)
        since = parse_instant(after)
        out = []
        for aid in {origin_id, *ids} - {target_id}:
            rec = await unit.get("Appointment", aid)
            if rec is None or rec.deleted or rec.body is None:
                continue
            body = orjson.loads(rec.body)
            start = body.get("start")
            if (body.get("status") in _FOLLOWING and isinstance(start, str)
                    and parse_instant(start) > since):
                out.append(body)
        return sorted(out, key=lambda b: parse_instant(b["start"]))

    async def _series_zone(self, origin: str) -> str:
        rec = await self.store.get("Appointment", origin.split("/", 1)[1])
        if rec is not None and rec.body is not None and not rec.deleted:
            body = orjson.loads(rec.body)
            if template_of(body) is not None:
                try:
                    return str(pattern_of(body, "UTC").zone.key)
                except FhirError:
                    pass
            return (await self.window(body))[0]
        return "UTC"

    # -- nearest alternatives ----------------------------------------------------------------
    async def _alternatives(self, ctx: RequestContext, appointment: dict[str, Any],
                            refused: list[Refused], origin: str | None) -> list[Refused]:
        if self.find is None:
            return refused
        out = []
        for n, r in enumerate(refused):
            if n >= MAX_WITH_ALTERNATIVES:
                out.append(r)
                continue
            found = await self._nearest(ctx, appointment, r.occurrence)
            if origin is not None:
                found = [_linked(p, r.occurrence.number, origin) for p in found]
                await self.find.proposals.keep(found)
            out.append(Refused(r.occurrence, r.error, tuple(found)))
        return out

    async def _nearest(self, ctx: RequestContext, appointment: dict[str, Any],
                       occ: Occurrence) -> list[dict[str, Any]]:
        assert self.find is not None
        now = datetime.now(UTC)
        lo = max(occ.start - _AROUND, now)
        hi = occ.end + _AROUND
        if hi <= lo:
            return []
        actors = resource_actors(appointment)
        tokens = [f"{s}|{c}" if s else c for concept in appointment.get("serviceType") or []
                  for s, c in codings(concept)]
        req = FindRequest(
            start=lo, end=hi, visit_type=tokens[:1],
            practitioner=[a for a in actors if a.startswith(("Practitioner/",
                                                             "PractitionerRole/"))],
            location=[a for a in actors if a.startswith("Location/")],
            patient=patient_actors(appointment), count=100)
        try:
            found = (await self.find.find(ctx, req)).proposals
        except FhirError:
            return []
        found.sort(key=lambda p: abs((parse_instant(p["start"]) - occ.start).total_seconds()))
        return found[:ALTERNATIVES_PER_OCCURRENCE]


class _SeriesRefused(Exception):
    """Raised out of a series' unit (so it rolls back) carrying what was refused."""

    def __init__(self, result: SeriesResult, error: FhirError) -> None:
        super().__init__(error.diagnostics)
        self.result = result
        self.error = error


def _refusal(result: SeriesResult, planned: int, mode: str) -> _SeriesRefused:
    first = result.refused[0].error
    n = len(result.refused)
    what = ("nothing was booked (series-mode all-or-nothing; book-free books the rest)"
            if mode == "all-or-nothing" else "none of its occurrences is free")
    error = FhirError(first.status, first.code, f"{n} of {planned} occurrences of this series "
                      f"cannot be booked, so {what}", expression=first.expression,
                      details=first.details,
                      issues=result.issues("error"))
    return _SeriesRefused(result, error)


def _issue(r: Refused, zone: str, severity: str) -> dict[str, Any]:
    local = r.occurrence.start.astimezone(ZoneInfo(zone))
    first = r.error.outcome()["issue"][0]
    text = (f"occurrence {r.occurrence.number} ({local.strftime('%a %Y-%m-%d %H:%M')} {zone}):"
            f" {first['diagnostics']}")
    if r.alternatives:
        times = ", ".join(parse_instant(p["start"]).astimezone(ZoneInfo(zone)).strftime(
            "%a %Y-%m-%d %H:%M") + (f" ({p['id']})" if p.get("id") else "")
            for p in r.alternatives)
        text += f"; nearest free: {times}"
    issue: dict[str, Any] = {"severity": severity, "code": first["code"], "diagnostics": text,
                             "expression": [f"Appointment.extension('{RECURRENCE_ID}')"]}
    if "details" in first:
        issue["details"] = first["details"]
    return issue


def _linked(proposal: dict[str, Any], number: int, origin: str) -> dict[str, Any]:
    """A proposal for a refused occurrence, as that occurrence of the series (off pattern)."""
    out = {k: v for k, v in proposal.items() if k != "id"}
    out = set_ext(out, RECURRENCE_ID, {"valuePositiveInt": number})
    out = set_ext(out, ORIGINATING, {"valueReference": {"reference": origin}})
    return set_ext(out, CHANGED, {"valueBoolean": True})


def _shift(old: dict[str, Any], new: dict[str, Any], zone: str) -> tuple[timedelta, timedelta]:
    """(wall-clock shift of the start, new length) of a moved occurrence."""
    tz = ZoneInfo(zone)
    old_start = parse_instant(old["start"]).astimezone(tz).replace(tzinfo=None)
    new_start = parse_instant(new["start"]).astimezone(tz).replace(tzinfo=None)
    length = parse_instant(new["end"]) - parse_instant(new["start"])
    return new_start - old_start, length


def _moved(member: dict[str, Any], shift: tuple[timedelta, timedelta], zone: str
           ) -> dict[str, Any]:
    tz = ZoneInfo(zone)
    delta, length = shift
    wall = parse_instant(member["start"]).astimezone(tz).replace(tzinfo=None) + delta
    start = wall.replace(tzinfo=tz)
    out = {k: v for k, v in member.items() if k != "meta"}
    out["start"] = start.isoformat(timespec="seconds")
    out["end"] = (start + length).isoformat(timespec="seconds")
    if "minutesDuration" in out:
        out["minutesDuration"] = int(length.total_seconds() // 60)
    return out


def _cancelled(member: dict[str, Any], reason: Any) -> dict[str, Any]:
    out = {k: v for k, v in member.items() if k != "meta"}
    out["status"] = "cancelled"
    if reason is not None:
        out["cancelationReason"] = reason
    for p in out.get("participant") or []:
        if isinstance(p, dict):
            p["status"] = "declined"
    return out

