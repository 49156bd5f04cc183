"""``$find``: free time across several resources, as proposed Appointments.

``FindService.find`` gathers what the pure availability engine needs (calendars, templates, busy
time) and turns its options into proposed Appointments. Busy time is read from the booking
guard's claims (spelled by ``scheduling.claims``) and every resource's capacity and buffers come
from ``scheduling.capacity.resource_policy``, the rule the guard enforces: what $find offers is
exactly what $book will accept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ..context import RequestContext
from ..errors import bad_request
from ..query import AnyOf, Cond, Entry, Expr, Query
from ..scheduling import claims
from ..scheduling.availability import Busy, Option, ResourceCalendar, find_options
from ..scheduling.capacity import Policy, resource_policy, schedules_of, templates_policy
from ..scheduling.extensions import hold_expiry
from ..scheduling.participants import with_actor
from ..scheduling.status import TAKING
from ..scheduling.templates import Template, TemplateError, horizon, iter_units, parse_templates
from ..scheduling.visit_types import (
    Need,
    VisitType,
    VisitTypeError,
    codings,
    parse_resource_kind,
    parse_visit_types,
)
from ..search.parse import parse_param
from ..storage.base import DocumentStore
from ..timeutil import format_instant, now_instant, parse_instant
from .authorization import Authorizer, Interaction

MAX_WINDOW = timedelta(days=366)
DEFAULT_COUNT = 10
MAX_COUNT = 100
_SCAN = 100_000
# $find reads busy time for the first _FIRST_SPAN of the window, then _GROWTH times as much each
# round (see FindService._search).
_FIRST_SPAN = timedelta(days=1)
_GROWTH = 4
_SCHEDULE_CACHE = 4096
_PART_ROLE = {"Practitioner": "PPRF", "PractitionerRole": "PPRF", "Location": "LOC"}



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
    appointment_type: list[str] = field(default_factory=list)  # Argonaut appt-type; copied
    insurance: list[Any] = field(default_factory=list)  # references or Coverage resources


@dataclass(slots=True)
class _Calendar:
    schedule: dict[str, Any]
    actor: str
    templates: list[Template]
    zone: ZoneInfo
    calendar: ResourceCalendar
    policy: Policy = field(default_factory=Policy)


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



class FindService:
    def __init__(self, store: DocumentStore, authorizer: Authorizer) -> None:
        self.store = store
        self.authorizer = authorizer
        self._schedules: dict[bytes, _ScheduleInfo | None] = {}

    async def find(self, ctx: RequestContext, req: FindRequest) -> list[dict[str, Any]]:
        self.authorizer.check(ctx, Interaction.OPERATION, "Appointment", operation="find")
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
        await self._apply_policies(list(seen.values()))
        return groups

    async def _apply_policies(self, calendars: list[_Calendar]) -> None:
        """Give each calendar its resource's capacity and buffers, by the guard's rule
        (``capacity.resource_policy`` over the resource's Schedules) rather than from this
        Schedule alone, so an actor with several Schedules is offered exactly what the guard
        will admit. A calendar with templates already has it: the Schedule write rule keeps
        every active Schedule of a resource on one policy. Only the others (explicit Slots)
        are looked up, in one query."""
        lookup = sorted({c.actor for c in calendars if not c.templates})
        policies: dict[str, Policy] = {}
        if lookup:
            by_actor: dict[str, list[tuple[str, bytes]]] = {a: [] for a in lookup}
            for start in range(0, len(lookup), 500):
                chunk = lookup[start:start + 500]
                for sid, body in (await self.store.search(schedules_of(*chunk))).rows:
                    info = self._schedule_info(body)
                    for a in info.actors if info is not None else ():
                        if a in by_actor:
                            by_actor[a].append((sid, body))
            policies = {a: resource_policy(rows) for a, rows in by_actor.items()}
        for c in calendars:
            c.policy = policies[c.actor] if not c.templates else templates_policy(c.templates)


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
            capacity = c.policy.capacity
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
        prefix = claims.resource_prefix(actor)
        rows = await self.store.claims_between(prefix + bounds[0], prefix + bounds[1])
        plen = len(prefix)
        counts: dict[str, int] = {}  # key order is time order: format_instant is fixed-width
        for key, expires in rows:
            if expires is not None and expires <= now:
                continue  # an expired hold no longer takes time
            unit = claims.unit_of(key, plen)
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
                run_end = start + claims.GRID
                continue
            if run_start is not None and run_end is not None:
                out.append(Busy(run_start, run_end, run_count))
            run_start, run_end, run_count = start, start + claims.GRID, n
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
        if req.appointment_type:
            appt["appointmentType"] = {"coding": [_coding(req.appointment_type[0])]}
        for actor in [*req.patient, *opt.resources]:  # a Device goes where ihe-sched-appt allows
            appt = with_actor(appt, actor)
        return appt


def _us(dt: datetime) -> int:
    from ..timeutil import to_us

    return to_us(dt)


def _coding(token: str) -> dict[str, str]:
    system, _, code = token.rpartition("|") if "|" in token else ("", "", token)
    return {"system": system, "code": code} if system else {"code": code}


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
    return widest + claims.GRID + timedelta(hours=1)


def _timing_preference(timing: dict[str, Any] | None, zone: ZoneInfo
                       ) -> Callable[[datetime], bool] | None:
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
