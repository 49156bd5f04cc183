"""The scheduling service: $find, $hold and $book on top of the resource service.

``find`` gathers what the pure availability engine needs (calendars, templates, busy time) and
turns its options into proposed Appointments. Busy time is read from the booking guard's claims,
so what $find offers is exactly what $book will accept. ``hold`` and ``book`` are ordinary writes
through the resource service: the guard, validation and change log apply to them as to any PUT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import orjson

from ..context import RequestContext
from ..errors import FhirError, bad_request, not_found
from ..query import AnyOf, Cond, Entry, Expr, Query
from ..search.parse import parse_param
from ..service.resources import ResourceService, Saved, new_id
from ..settings import Settings
from ..storage.base import Record, Unit
from ..timeutil import format_instant, now_instant, parse_instant
from .availability import (
    Busy,
    Need,
    Option,
    ResourceCalendar,
    VisitType,
    VisitTypeError,
    codings,
    find_options,
    parse_resource_kind,
    parse_visit_types,
)
from .extensions import HOLD_EXPIRES, hold_expiry, set_ext
from .guard import GRID, claim_prefix
from .status import TAKING
from .templates import Template, TemplateError, horizon, iter_units, parse_templates

log = logging.getLogger("fhir_sched.scheduling")
MAX_WINDOW = timedelta(days=366)
DEFAULT_COUNT = 10
MAX_COUNT = 100
_SCAN = 100_000
# $find reads busy time for the first _FIRST_SPAN of the window, then _GROWTH times as much each
# round (see SchedulingService._search).
_FIRST_SPAN = timedelta(days=1)
_GROWTH = 4
_SCHEDULE_CACHE = 4096
_PART_ROLE = {"Practitioner": "PPRF", "PractitionerRole": "PPRF", "Location": "LOC"}


class _Reader(Protocol):
    """What composing an operation's body reads: an atomic unit, or the store outside one."""

    async def get(self, type_: str, id_: str) -> Record | None: ...


@dataclass(slots=True)
class FindRequest:
    start: datetime
    end: datetime
    specialty: list[str] = field(default_factory=list)
    visit_type: list[str] = field(default_factory=list)
    practitioner: list[str] = field(default_factory=list)
    organization: list[str] = field(default_factory=list)
    location: list[str] = field(default_factory=list)
    location_string: list[str] = field(default_factory=list)
    patient: list[str] = field(default_factory=list)
    timing: dict[str, Any] | None = None
    count: int = DEFAULT_COUNT


@dataclass(slots=True)
class _Calendar:
    schedule: dict[str, Any]
    actor: str
    templates: list[Template]
    zone: ZoneInfo
    calendar: ResourceCalendar


@dataclass(frozen=True, slots=True)
class _ScheduleInfo:
    schedule: dict[str, Any]
    actors: tuple[str, ...]
    specialty: tuple[tuple[str | None, str], ...]
    kind: tuple[tuple[str | None, str], ...]
    templates: list[Template]
    horizon: tuple[datetime | None, datetime | None]
    zone: ZoneInfo


def _schedule_filter(need: Need) -> tuple[Expr, ...]:
    """The store-side part of a need: actor type, and the specialty when one is asked for (so
    the store, through its index, returns a specialty's Schedules rather than all of them).
    ``Need.accepts`` still checks everything on what comes back."""
    where: list[Expr] = [Entry("actor", (Cond("sys", "=", need.actor_type),))]
    entries = tuple(Entry("specialty", (Cond("val", "=", code),) + (
        (Cond("sys", "=", system),) if system is not None else ()))
        for system, code in need.specialty)
    if len(entries) == 1:
        where.insert(0, entries[0])  # an equality entry first lets the store drive from it
    elif entries:
        where.append(AnyOf(entries))
    return tuple(where)


def _token_codings(tokens: list[str]) -> tuple[tuple[str | None, str], ...]:
    out = []
    for t in tokens:
        system, _, code = t.rpartition("|") if "|" in t else ("", "", t)
        out.append((system or None, code))
    return tuple(out)


def _iso_in(dt: datetime, zone: ZoneInfo) -> str:
    return dt.astimezone(zone).isoformat()


class SchedulingService:
    def __init__(self, resources: ResourceService, settings: Settings) -> None:
        self.resources = resources
        self.store = resources.store
        self.settings = settings
        self._schedules: dict[bytes, _ScheduleInfo | None] = {}

    # -- $find -------------------------------------------------------------------------
    async def find(self, ctx: RequestContext, req: FindRequest) -> list[dict[str, Any]]:
        self.resources.authorizer.check(ctx, "operation:find", "Appointment")
        if req.end <= req.start:
            raise bad_request("end must be after start", ["end"])
        if req.end - req.start > MAX_WINDOW:
            raise bad_request("the window may span at most 365 days", ["end"])
        visit, needs = await self._needs(req)
        groups = await self._candidates(req, needs, defined=visit is not None)
        if any(not g for g in groups):
            return []
        duration = visit.duration if visit else timedelta(
            minutes=min((c.templates[0].slot_minutes for g in groups for c in g if c.templates),
                        default=30))
        avoid = await self._patient_busy(req)
        zone = groups[0][0].zone
        prefer = _timing_preference(req.timing, zone)
        options = await self._search(groups, req, duration, avoid, prefer)
        by_key = {c.actor: c for g in groups for c in g}
        return [self._proposal(o, by_key, visit, req, n) for n, o in enumerate(options)]

    async def _search(self, groups: list[list[_Calendar]], req: FindRequest,
                      duration: timedelta, avoid: list[tuple[datetime, datetime]],
                      prefer: Callable[[datetime], bool] | None) -> list[Option]:
        """Earliest options, reading busy time only as far ahead as the answer needs.

        Loading a year of claims for every candidate costs far more than computing on them, and
        the answer usually lies in the first days. So the search runs on a leading part of the
        window, and grows it (reading only the new part) until the options found provably equal
        those of the whole window: ``count`` of them, the last starting at least ``margin``
        before the part's end, so that no option straddling the end could sort before it (an
        option's units, buffers and busy time all lie within ``margin`` of its start).
        """
        cals = [[c.calendar for c in g] for g in groups]
        unique = list({id(c): c for g in groups for c in g}.values())
        margin = _margin(unique, duration)
        pad = _pad(unique)
        loaded = req.start - pad
        # Start the first part at the first open template hour, so a window opening on a
        # weekend or a holiday does not spend its first round on closed days.
        upto = min(_first_open(unique, req.start, req.end) + _FIRST_SPAN, req.end)
        first = True
        while True:
            await self._load(unique, loaded, upto + pad, first=first)
            loaded, first = upto + pad, False
            options = await asyncio.to_thread(
                find_options, cals, req.start, upto, duration, req.count, avoid, prefer)
            if upto >= req.end or (
                    len(options) >= req.count and options[-1].start + margin <= upto
                    and (prefer is None or all(prefer(o.start) for o in options))):
                return options
            upto = min(req.start + (upto - req.start) * _GROWTH, req.end)

    async def _needs(self, req: FindRequest) -> tuple[VisitType | None, list[Need]]:
        specialty = _token_codings(req.specialty)
        if req.visit_type:
            services = await self.store.search(Query("HealthcareService", count=1000))
            types: list[VisitType] = []
            for _id, body in services.rows:
                try:
                    types.extend(parse_visit_types(orjson.loads(body)))
                except VisitTypeError:
                    continue  # a broken definition elsewhere must not break every $find
            for token in req.visit_type:  # ORed in order of preference
                for vt in types:
                    if vt.matches_token(token):
                        needs = [Need(n.actor_type, n.specialty or (
                            specialty if n.actor_type in _PART_ROLE and n.actor_type != "Location"
                            else ()), n.kind) for n in vt.needs]
                        return vt, needs
        return None, [Need("Practitioner", specialty)]

    async def _candidates(self, req: FindRequest, needs: list[Need],
                          defined: bool = True) -> list[list[_Calendar]]:
        locations = list(req.location)
        if req.location_string or req.organization:
            locations += await self._locations(req)
            if not locations:
                return [[] for _ in needs]
        groups: list[list[_Calendar]] = []
        seen: dict[tuple[str, str], _Calendar] = {}  # one calendar per Schedule and actor
        for need in needs:
            page = await self.store.search(Query("Schedule", _schedule_filter(need),
                                                 count=10_000))
            cands: list[tuple[tuple[int, str], _Calendar]] = []
            for _sid, body in page.rows:
                info = self._schedule_info(body)
                if info is None:
                    continue
                sched, actors = info.schedule, info.actors
                actor = next((a for a in actors if a.startswith(need.actor_type + "/")), None)
                if actor is None or not need.accepts(need.actor_type, info.specialty, info.kind):
                    continue
                rank = 0
                if need.actor_type in ("Practitioner", "PractitionerRole") and req.practitioner:
                    if actor not in req.practitioner:
                        continue
                    rank = req.practitioner.index(actor)
                if locations:
                    if need.actor_type == "Location":
                        if actor not in locations:
                            continue
                        rank = locations.index(actor)
                    elif any(a.startswith("Location/") for a in actors) and not any(
                            a in locations for a in actors):
                        continue
                if not self._serves(sched, req, defined):
                    continue
                known = seen.get((sched["id"], actor))
                if known is None:
                    cal = ResourceCalendar(actor, sched["id"], info.templates, info.horizon,
                                           [], [])
                    known = seen[(sched["id"], actor)] = _Calendar(
                        sched, actor, info.templates, info.zone, cal)
                cands.append(((rank, sched["id"]), known))
            cands.sort(key=lambda c: c[0])
            groups.append([c for _, c in cands])
        return groups

    def _schedule_info(self, body: bytes) -> _ScheduleInfo | None:
        """What $find needs of a stored Schedule, parsed once per stored version.

        Keyed by the stored bytes, which carry ``meta.versionId``: an update is a new key, so
        the cache can never serve a stale template. None for an inactive or unusable one.
        """
        if body in self._schedules:
            return self._schedules[body]
        sched = orjson.loads(body)
        info: _ScheduleInfo | None = None
        if sched.get("active") is not False:
            try:
                templates = parse_templates(sched)
                bounds = horizon(sched)
            except TemplateError:
                templates = None
            if templates is not None:
                info = _ScheduleInfo(
                    sched,
                    tuple(a.get("reference", "") for a in sched.get("actor") or []
                          if isinstance(a, dict)),
                    tuple(c for s in sched.get("specialty") or [] for c in codings(s)),
                    parse_resource_kind(sched), templates, bounds,
                    templates[0].tz if templates else ZoneInfo("UTC"))
        if len(self._schedules) >= _SCHEDULE_CACHE:
            self._schedules.pop(next(iter(self._schedules)))
        self._schedules[body] = info
        return info

    @staticmethod
    def _serves(sched: dict[str, Any], req: FindRequest, defined: bool = True) -> bool:
        """A schedule that lists service types only offers those; one that lists none offers
        any visit type its actor is matched for. A visit type no HealthcareService defines is
        offered only by schedules that list it: otherwise an unknown (or mistyped) code would
        match every calendar on the server."""
        listed = [c for s in sched.get("serviceType") or [] for c in codings(s)]
        if not req.visit_type:
            return True
        if not listed:
            return defined
        wanted = _token_codings(req.visit_type)
        return any(code == c and (system is None or system == s)
                   for system, code in wanted for s, c in listed)

    async def _locations(self, req: FindRequest) -> list[str]:
        where: list[Expr] = []
        for text in req.location_string:
            where.append(AnyOf(tuple(e for e in (
                parse_param("Location", "name", text), parse_param("Location", "address", text))
                if e is not None)))
        if req.organization:
            where.append(AnyOf(tuple(Entry("organization", (Cond("val", "=", o),))
                                     for o in req.organization)))
        page = await self.store.search(Query("Location", tuple(where), count=1000))
        return [f"Location/{i}" for i, _ in page.rows]

    async def _load(self, calendars: list[_Calendar], lo: datetime, hi: datetime,
                    first: bool) -> None:
        """Append busy time and explicit Slots of [lo, hi) to each calendar.

        Claims are keyed by unit start, so consecutive ranges never repeat one; Slots are taken
        by overlap on the first load and by start afterwards, for the same reason. Everything
        appended starts at or after everything already there, so each busy list stays sorted.
        """
        by_sched = {f"Schedule/{c.schedule['id']}": c for c in calendars}
        slots_by_sched: dict[str, list[dict[str, Any]]] = {}
        if by_sched:
            span: tuple[Expr, ...] = (
                Entry("start", (Cond("lo", "<", _us(hi)),)),
                Entry("end", (Cond("hi", ">", _us(lo)),)) if first
                else Entry("start", (Cond("lo", ">=", _us(lo)),)))
            q = Query("Slot", (
                AnyOf(tuple(Entry("schedule", (Cond("val", "=", r),)) for r in sorted(by_sched))),
                *span), count=_SCAN)
            for _id, body in (await self.store.search(q)).rows:
                slot = orjson.loads(body)
                ref = (slot.get("schedule") or {}).get("reference", "")
                slots_by_sched.setdefault(ref, []).append(slot)
        now = now_instant()
        stamps: dict[str, datetime] = {}  # unit instants are shared by every calendar
        bounds = (format_instant(lo), format_instant(hi))
        claimed = await asyncio.gather(*(self._claimed(c.actor, bounds, now, stamps)
                                         for c in calendars))
        for c, busy in zip(calendars, claimed, strict=True):
            cal = c.calendar
            capacity = c.templates[0].capacity if c.templates else 1
            free: list[tuple[datetime, datetime, int, str]] = []
            for slot in slots_by_sched.get(f"Schedule/{c.schedule['id']}", []):
                s, e = parse_instant(slot["start"]), parse_instant(slot["end"])
                if slot.get("status") == "free":
                    free.append((s, e, capacity, slot["id"]))
                elif slot.get("status") in ("busy", "busy-unavailable"):
                    busy.append(Busy(s, e, capacity))
            busy.sort(key=lambda b: b.start)
            free.sort()
            cal.busy.extend(busy)
            cal.free_slots.extend(free)

    async def _claimed(self, actor: str, bounds: tuple[str, str], now: str,
                       stamps: dict[str, datetime]) -> list[Busy]:
        """The guard's claims on ``actor`` between two format_instant bounds, as busy intervals.

        Runs of consecutive units with the same count become one interval: the same load for
        the engine, a fraction of the objects (a 30-minute booking is six unit claims).
        """
        prefix = claim_prefix(actor)
        rows = await self.store.claims_between(prefix + bounds[0], prefix + bounds[1])
        plen = len(prefix)
        counts: dict[str, int] = {}  # key order is time order: format_instant is fixed-width
        for key, expires in rows:
            if expires is not None and expires <= now:
                continue  # an expired hold no longer takes time
            unit = key[plen:key.index("|", plen)]
            counts[unit] = counts.get(unit, 0) + 1
        out: list[Busy] = []
        run_start: datetime | None = None
        run_end: datetime | None = None
        run_count = 0
        for unit, n in counts.items():
            start = stamps.get(unit)
            if start is None:
                start = stamps[unit] = datetime.fromisoformat(unit)
            if run_start is not None and start == run_end and n == run_count:
                run_end = start + GRID
                continue
            if run_start is not None and run_end is not None:
                out.append(Busy(run_start, run_end, run_count))
            run_start, run_end, run_count = start, start + GRID, n
        if run_start is not None and run_end is not None:
            out.append(Busy(run_start, run_end, run_count))
        return out

    async def _patient_busy(self, req: FindRequest) -> list[tuple[datetime, datetime]]:
        if not req.patient:
            return []
        q = Query("Appointment", (
            AnyOf(tuple(Entry("patient", (Cond("val", "=", p),)) for p in req.patient)),
            AnyOf(tuple(Entry("status", (Cond("val", "=", s),)) for s in sorted(TAKING))),
            Entry("date", (Cond("lo", "<", _us(req.end)),)),
            Entry("end", (Cond("hi", ">", _us(req.start)),)),
        ), count=_SCAN)
        now = now_instant()
        out = []
        for _id, body in (await self.store.search(q)).rows:
            appt = orjson.loads(body)
            exp = hold_expiry(appt) if appt.get("status") == "pending" else None
            if exp is not None and exp <= now:
                continue
            out.append((parse_instant(appt["start"]), parse_instant(appt["end"])))
        return sorted(out)

    def _proposal(self, opt: Option, by_key: dict[str, _Calendar], visit: VisitType | None,
                  req: FindRequest, n: int) -> dict[str, Any]:
        zone = by_key[opt.resources[0]].zone
        appt: dict[str, Any] = {"resourceType": "Appointment", "status": "proposed"}
        contained, slot_refs = [], []
        for k, (key, slot_id) in enumerate(zip(opt.resources, opt.slot_ids, strict=True)):
            if slot_id is not None:
                slot_refs.append({"reference": f"Slot/{slot_id}"})
            else:
                cid = f"slot{k}"
                contained.append({
                    "resourceType": "Slot", "id": cid,
                    "schedule": {"reference": f"Schedule/{by_key[key].schedule['id']}"},
                    "status": "free", "start": _iso_in(opt.start, zone),
                    "end": _iso_in(opt.end, zone)})
                slot_refs.append({"reference": f"#{cid}"})
        if contained:
            appt["contained"] = contained
        if visit is not None:
            coding = {"code": visit.code}
            if visit.system:
                coding["system"] = visit.system
            if visit.display:
                coding["display"] = visit.display
            appt["serviceType"] = [{"coding": [coding]}]
        if req.specialty:
            appt["specialty"] = [{"coding": [_coding(t)]} for t in req.specialty[:1]]
        appt["start"] = _iso_in(opt.start, zone)
        appt["end"] = _iso_in(opt.end, zone)
        appt["minutesDuration"] = int((opt.end - opt.start).total_seconds() // 60)
        appt["slot"] = slot_refs
        appt["requestedPeriod"] = [{"start": _iso_in(req.start, zone),
                                    "end": _iso_in(req.end, zone)}]
        participants = [{"actor": {"reference": p}, "required": "required",
                         "status": "needs-action"} for p in req.patient]
        participants += [{"actor": {"reference": key}, "required": "required",
                          "status": "needs-action"} for key in opt.resources]
        appt["participant"] = participants
        return appt

    # -- $hold ---------------------------------------------------------------------------
    async def hold(self, ctx: RequestContext, appt_ref: str | None,
                   appt: dict[str, Any] | None) -> tuple[Saved, str]:
        self.resources.authorizer.check(ctx, "operation:hold", "Appointment")
        expires = format_instant(datetime.now(UTC) + timedelta(seconds=self.settings.hold_seconds))
        fresh = new_id()

        async def compose(reader: _Reader) -> tuple[dict[str, Any], str]:
            base, id_ = await self._target(reader, appt_ref, appt, fresh)
            if base.get("status") not in ("proposed", "pending", None):
                raise FhirError(409, "conflict", f"only a proposed appointment can be held; this"
                                f" one is {base.get('status')}", severity="fatal")
            held = _strip_template_slots(base)
            held["status"] = "pending"
            held = set_ext(held, HOLD_EXPIRES, {"valueInstant": expires})
            for p in held.get("participant") or []:
                p["status"] = "tentative"
            return {**held, "id": id_}, id_

        checked = await self._prevalidate(compose)

        async def run(unit: Unit) -> Saved:
            held, id_ = await compose(unit)
            if held != checked:
                held = self.resources.prepare("Appointment", held, id_)
            return await self.resources.put_in_unit(unit, ctx, "Appointment", id_, held)

        return await self.resources.atomic(run), expires

    # -- $book ---------------------------------------------------------------------------
    async def book(self, ctx: RequestContext, appt_ref: str | None,
                   appt: dict[str, Any] | None, patients: list[dict[str, Any]],
                   patient_refs: list[str], cancelled: str | None,
                   comment: str | None) -> Saved:
        self.resources.authorizer.check(ctx, "operation:book", "Appointment")
        fresh = new_id()
        pids = [p.get("id") or new_id() for p in patients]

        async def compose(reader: _Reader) -> tuple[dict[str, Any], str]:
            base, id_ = await self._target(reader, appt_ref, appt, fresh)
            status = base.get("status")
            if appt is None and status == "cancelled":
                # By reference alone $book means "book it": a released or swept hold cannot be
                # revived that way (its time may be someone else's by now). Cancelling stays
                # possible by sending the resource with status cancelled.
                raise FhirError(409, "conflict", f"Appointment/{id_} is cancelled (released, "
                                "or its hold expired); find and hold a new time",
                                severity="fatal")
            result = _strip_template_slots(base)
            if status == "cancelled":
                result = set_ext(result, HOLD_EXPIRES, None)
                for p in result.get("participant") or []:
                    p["status"] = "declined"
            elif status in ("proposed", "pending", "booked", None):
                result["status"] = "booked"
                result = set_ext(result, HOLD_EXPIRES, None)
                for p in result.get("participant") or []:
                    p["status"] = "accepted"
            else:
                raise FhirError(422, "business-rule", f"$book cannot act on an appointment "
                                f"with status {status}", expression=["Appointment.status"])
            refs = [*patient_refs, *(f"Patient/{pid}" for pid in pids)]
            present = {(p.get("actor") or {}).get("reference")
                       for p in result.get("participant") or []}
            for ref in refs:
                ref = ref if "/" in ref else f"Patient/{ref}"
                if ref not in present:
                    result.setdefault("participant", []).append(
                        {"actor": {"reference": ref}, "required": "required",
                         "status": "accepted"})
            if comment:
                result["comment"] = f"{result['comment']}\n{comment}" if result.get(
                    "comment") else comment
            result.pop("meta", None)
            return {**result, "id": id_}, id_

        checked = await self._prevalidate(compose)

        async def run(unit: Unit) -> Saved:
            if cancelled is not None:
                await self._cancel(unit, ctx, _id_of(cancelled, "cancelled-appt-id"))
            result, id_ = await compose(unit)
            for patient, pid in zip(patients, pids, strict=True):
                existing = await unit.get("Patient", pid)
                if existing is None or existing.deleted:
                    body = self.resources.prepare("Patient", {**patient, "id": pid}, pid)
                    await self.resources.put_in_unit(unit, ctx, "Patient", pid, body)
            if result != checked:
                result = self.resources.prepare("Appointment", result, id_)
            return await self.resources.put_in_unit(unit, ctx, "Appointment", id_, result)

        return await self.resources.atomic(run)

    async def _prevalidate(
        self, compose: Callable[[_Reader], Awaitable[tuple[dict[str, Any], str]]]
    ) -> dict[str, Any] | None:
        """The body an operation will most likely write, already validated, or None.

        Validation is the costliest step of a booking and needs no lock, yet every booking on
        a store waits for the one in its atomic unit. So the body is composed once from a plain
        read and validated here; inside the unit it is composed again from the unit's reads,
        and validated again only if it came out different (the data changed in between). Any
        error is left for the unit to raise, where it is authoritative.
        """
        try:
            body, id_ = await compose(self.store)
            return self.resources.prepare("Appointment", body, id_)
        except FhirError:
            return None

    async def _cancel(self, unit: Unit, ctx: RequestContext, id_: str) -> None:
        rec = await unit.get("Appointment", id_)
        if rec is None or rec.deleted or rec.body is None:
            raise not_found(f"cancelled-appt-id: Appointment/{id_} is not known")
        old = orjson.loads(rec.body)
        if old.get("status") == "cancelled":
            return
        old["status"] = "cancelled"
        old = set_ext(old, HOLD_EXPIRES, None)
        for p in old.get("participant") or []:  # the contract's table: cancelled -> declined
            if isinstance(p, dict):
                p["status"] = "declined"
        old.pop("meta", None)
        await self.resources.put_in_unit(unit, ctx, "Appointment", id_, old)

    async def _target(self, unit: _Reader, appt_ref: str | None,
                      appt: dict[str, Any] | None, fresh: str) -> tuple[dict[str, Any], str]:
        """The appointment an operation acts on: a stored one, or one given in full (under
        ``fresh`` as its new id when it has none to keep)."""
        if appt_ref is None and appt is None:
            raise bad_request("give appointment-reference (appt-id) or appointment-resource "
                              "(appt-resource)", ["appointment-reference"])
        if appt_ref is not None:
            id_ = _id_of(appt_ref, "appointment-reference")
            rec = await unit.get("Appointment", id_)
            if rec is None or rec.deleted or rec.body is None:
                raise FhirError(404, "not-found", f"Appointment/{id_} is not known",
                                severity="fatal")
            stored = orjson.loads(rec.body)
            if appt is not None:  # modify: the given content wins, the id is the stored one
                stored = {**appt, "id": id_}
            stored.pop("meta", None)
            return stored, id_
        assert appt is not None
        given = dict(appt)
        given.pop("meta", None)
        id_ = given.get("id")
        if id_:
            rec = await unit.get("Appointment", id_)
            if rec is None or rec.deleted:
                id_ = None if given.get("status") == "proposed" else id_
        return given, id_ or fresh

    # -- the sweeper -----------------------------------------------------------------------
    async def sweep(self) -> int:
        """Cancel expired holds and free their Slots. Correctness never waits for this (an
        expired hold's claims stop counting at once); it keeps the data tidy for readers."""
        ctx = RequestContext.system("sweeper")
        q = Query("Appointment", (Entry("status", (Cond("val", "=", "pending"),)),), count=500)
        page = await self.store.search(q)
        now = now_instant()
        done = 0
        for id_, body in page.rows:
            appt = orjson.loads(body)
            exp = hold_expiry(appt)
            if exp is None or exp > now:
                continue
            try:
                await self.resources.atomic(lambda unit, i=id_: self._cancel(unit, ctx, i))
                done += 1
            except FhirError as exc:  # changed under us: the next sweep looks again
                log.info("sweeper skipped Appointment/%s: %s", id_, exc.diagnostics)
        return done

    async def sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_seconds)
            try:
                n = await self.sweep()
                if n:
                    log.info("sweeper cancelled %d expired holds", n)
            except Exception:  # the sweeper must outlive a passing store outage
                log.exception("sweeper run failed")


def _us(dt: datetime) -> int:
    from ..timeutil import to_us

    return to_us(dt)


def _coding(token: str) -> dict[str, str]:
    system, _, code = token.rpartition("|") if "|" in token else ("", "", token)
    return {"system": system, "code": code} if system else {"code": code}


def _id_of(ref: str, name: str) -> str:
    ref = ref.rstrip("/")
    if "/_history/" in ref:
        ref = ref.split("/_history/")[0]
    if ref.startswith("Appointment/") or "/Appointment/" in ref:
        return ref.rsplit("/", 1)[1]
    if "/" not in ref:
        return ref
    raise bad_request(f"{name}: {ref!r} is not an Appointment reference", [name])


def _strip_template_slots(appt: dict[str, Any]) -> dict[str, Any]:
    """Template time is guarded by claims, not Slots: contained Slots from $find are dropped
    when an option is held or booked, real Slot references are kept."""
    out = orjson.loads(orjson.dumps(appt))
    contained = [c for c in out.get("contained") or [] if c.get("resourceType") != "Slot"]
    if contained:
        out["contained"] = contained
    else:
        out.pop("contained", None)
    slots = [s for s in out.get("slot") or [] if not str(s.get("reference", "")).startswith("#")]
    if slots:
        out["slot"] = slots
    else:
        out.pop("slot", None)
    return out


def _margin(calendars: list[_Calendar], duration: timedelta) -> timedelta:
    """How far past an option's start anything deciding it can lie: the visit, one template
    unit (a visit covers whole units), the buffers, plus slack for a daylight-saving shift."""
    widest = timedelta(0)
    for c in calendars:
        for t in c.templates:
            unit = timedelta(minutes=max(t.slot_minutes, t.alignment_minutes))
            widest = max(widest, unit + t.buffer_before + t.buffer_after)
    return duration + widest + timedelta(hours=3)


def _first_open(calendars: list[_Calendar], start: datetime, end: datetime) -> datetime:
    """The earliest template unit any calendar has in [start, end) (``start`` when none)."""
    seen: set[tuple[Template, datetime | None]] = set()
    first = end
    for c in calendars:
        lower = c.calendar.horizon[0]
        for t in c.templates:
            if (t, lower) in seen:
                continue  # many calendars share one set of hours
            seen.add((t, lower))
            unit = next(iter_units(t, max(start, lower) if lower else start, first), None)
            if unit is not None:
                first = unit[0]
    return first if first < end else start


def _pad(calendars: list[_Calendar]) -> timedelta:
    """How much busy time beyond the computed part can matter: an option's buffers reach that
    far before its start and past its end (plus a unit, as claims are keyed by unit start)."""
    widest = timedelta(0)
    for c in calendars:
        for t in c.templates:
            widest = max(widest, t.buffer_before, t.buffer_after)
    return widest + GRID + timedelta(hours=1)


def _timing_preference(timing: dict[str, Any] | None, zone: ZoneInfo):
    """Timing.repeat.dayOfWeek and repeat.when (MORN, AFT, EVE) as a preference predicate."""
    if not timing:
        return None
    repeat = timing.get("repeat") or {}
    days = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
    wanted_days = {days[d] for d in repeat.get("dayOfWeek") or [] if d in days}
    spans = {"MORN": (0, 12), "AFT": (12, 18), "EVE": (18, 24), "NIGHT": (21, 24)}
    wanted_spans = [spans[w] for w in repeat.get("when") or [] if w in spans]
    if not wanted_days and not wanted_spans:
        return None

    def prefer(dt: datetime) -> bool:
        local = dt.astimezone(zone)
        if wanted_days and local.weekday() not in wanted_days:
            return False
        return not wanted_spans or any(a <= local.hour < b for a, b in wanted_spans)

    return prefer
