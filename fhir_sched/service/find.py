"""``$find``: free time across several resources, as proposed Appointments.

``FindService.find`` gathers what the pure availability engine needs (calendars, templates, busy
time) and turns its options into proposed Appointments. Busy time is read from the booking
guard's claims (spelled by ``scheduling.claims``) and every resource's capacity and buffers come
from ``scheduling.capacity.resource_policy``, the rule the guard enforces: what $find offers is
exactly what $book will accept.

Rules a client can rely on (also stated in the OperationDefinition and the CapabilityStatement):

- **No past time.** The window is clamped to start at ``now`` (rounded up to the second), never
  refused for lying partly or wholly in the past; a window wholly past has no options.
- **Window.** ``end`` after ``start``, at most ``MAX_WINDOW`` (365 days) apart, as asked.
- **Paging.** Options are deterministic for the same data: earliest start first, then the
  first need's preference order. A page is ``_count`` of them (default 10, at most
  ``MAX_COUNT`` = 100: more is capped with a warning) from ``offset``. The server computes the
  page plus one: when that exhausts the window ``total`` is exact (the whole window's count),
  otherwise it is left out and a ``next`` link given, unless ``_total=accurate`` asks for the
  count, which is made up to ``MAX_TOTAL`` (1000) options (past it: no total, a warning).
  ``_count=0`` counts only, the same way. Paging reaches at most the first ``MAX_TOTAL`` options
  of a window (a narrower window shows later ones). Links carry the whole request
  (``find_cursor``) including the instant the first page was clamped to, so every page of a
  search reads the same option list. When the data changes between pages (a booking, a
  cancellation), each page is computed on the data of its own moment: every option offered is
  free then, but an option can move across a page boundary and be seen twice or not at all; an
  option whose start has passed since the first page is left out of later pages.
- **Filters.** ``location``, ``location-string`` and ``organization`` place a calendar through
  its Schedule's actors (a Location, a HealthcareService) and, for a Schedule that lists no
  place, through the active PractitionerRoles of its practitioner (their location, their
  organization, and the location and providing organization of the HealthcareServices they
  serve). A practitioner with no such role is not offered under a place filter. At most
  ``MAX_PLACES`` Locations, ``MAX_PLACES`` HealthcareServices and ``MAX_PLACES``
  PractitionerRoles are read per search; a filter that matches more is a 422 too-costly.
- **practitioner=PractitionerRole/x** offers the role's own Schedules and the Schedules of its
  practitioner; of the latter, a Schedule that lists Locations must list one of the role's (when
  the role names any), so the practitioner is offered where that role works.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ..context import RequestContext
from ..errors import FhirError, bad_request
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
from ..timeutil import date_range, format_instant, now_instant, parse_instant, to_us
from .audit import AuditLog
from .audit import entry as audit_entry
from .authorization import Authorizer, Interaction
from .find_rules import narrow
from .proposals import Proposals

MAX_WINDOW = timedelta(days=365)
DEFAULT_COUNT = 10
MAX_COUNT = 100
MAX_TOTAL = 1000  # options counted for a total, and the furthest a page may reach
MAX_PLACES = 1000  # Locations, HealthcareServices and PractitionerRoles read per search
TOTAL_MODES = ("none", "estimate", "accurate")
# What the CapabilityStatement says of $find (the module docstring has the reasons).
LIMITS = (
    f"Never offers time before now (the window is clamped). Window at most {MAX_WINDOW.days} "
    f"days. _count default {DEFAULT_COUNT}, maximum {MAX_COUNT} (more is capped with a "
    "warning entry); _count=0 counts only. Bundle.total is exact when the page plus one "
    "exhausts the window; otherwise it is omitted and a next link given, unless "
    f"_total=accurate, which counts up to {MAX_TOTAL} options. Paging links "
    "(Appointment/$find?_cursor=...) are stateless and reach the first "
    f"{MAX_TOTAL} options of a window. Each proposal has an id, valid for an hour, to pass "
    "to $hold or $book as appointment-reference. Place filters read at most "
    f"{MAX_PLACES} Locations, HealthcareServices and PractitionerRoles.")
_CHUNK = 200  # references per AnyOf sent to the store
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
    offset: int = 0  # options skipped: the page's place in the search
    total: str | None = None  # _total: none | estimate | accurate
    not_before: datetime | None = None  # the first page's clamp instant (from a cursor)
    explain: bool = False  # _explain: say which booking rules narrowed or emptied the window
    # referral-identifier (IHE): the referral the visit is for, as an Identifier
    referral: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FindResult:
    """One page of $find: the proposals, what is known of the whole window, and the request
    as served (count capped, clamp instant fixed) from which the door makes its links."""

    proposals: list[dict[str, Any]]
    request: FindRequest
    total: int | None
    more: bool  # options exist past this page (and paging may reach them)
    warnings: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where and for whom a resource works: from a Schedule's Location or HealthcareService
    actor, or from one of its practitioner's PractitionerRoles."""

    locations: frozenset[str]
    organizations: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Places:
    """The place filters, resolved: the Locations allowed (None: any), the organizations
    allowed (None: any) and the Locations those organizations manage; plus what was read to
    place practitioners (by actor reference)."""

    locations: frozenset[str] | None
    organizations: frozenset[str] | None
    managed: frozenset[str]
    services: dict[str, _Placement]
    roles: dict[str, list[_Placement]]

    def allows(self, p: _Placement) -> bool:
        if self.locations is not None and not p.locations & self.locations:
            return False
        return self.organizations is None or bool(
            p.organizations & self.organizations or p.locations & self.managed)


@dataclass(frozen=True, slots=True)
class Published:
    """One Schedule's calendar as the Slot publisher needs it (``FindService.calendars_of``)."""

    schedule: dict[str, Any]
    actor: str
    calendar: ResourceCalendar
    zone: ZoneInfo
    capacity: int


_BOOKABLE = ("Practitioner", "PractitionerRole", "Device", "Location")


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



# The $find inputs that name a patient or read their records (their appointments, age,
# referrals, Coverages): a public context, which proves no one's identity, may give none.
_PATIENT_INPUTS = (("patient", "patient-reference"), ("insurance", "insurance-reference"),
                   ("referral", "referral-identifier"))


def _no_patient_data(req: FindRequest) -> None:
    """A 403 naming the first patient input of a request without a token: free time is
    public, whose time it is (and whether a patient may book it) is not."""
    for attr, name in _PATIENT_INPUTS:
        if getattr(req, attr):
            raise FhirError(403, "forbidden", f"parameter '{name}' reads a patient's records; "
                            "without a bearer token $find answers only free time, for no "
                            "patient (sign in as the patient to give it)", expression=[name])


class FindService:
    def __init__(self, store: DocumentStore, authorizer: Authorizer) -> None:
        self.store = store
        self.authorizer = authorizer
        self.proposals = Proposals(store)
        self._schedules: dict[bytes, _ScheduleInfo | None] = {}
        self.audit: AuditLog | None = None  # set by compose

    async def find(self, ctx: RequestContext, req: FindRequest) -> FindResult:
        self.authorizer.check(ctx, Interaction.OPERATION, "Appointment", operation="find")
        if ctx.public:
            _no_patient_data(req)
        if ctx.patient is not None:
            # a caller confined to one patient finds time for that patient only
            others = [p for p in req.patient if p.removeprefix("Patient/") != ctx.patient
                      .removeprefix("Patient/")]
            if others:
                raise FhirError(403, "forbidden", f"a caller confined to {ctx.patient} may not "
                                f"look for time for {', '.join(others)}")
            if not req.patient:
                req = dataclasses.replace(req, patient=[ctx.patient])
        if req.end <= req.start:
            raise bad_request("end must be after start", ["end"])
        if req.end - req.start > MAX_WINDOW:
            raise bad_request(f"the window may span at most {MAX_WINDOW.days} days", ["end"])
        if req.count < 0:
            raise bad_request("parameter '_count' must not be negative", ["_count"])
        if req.offset < 0 or req.offset > MAX_TOTAL:
            raise bad_request(f"a $find page starts at most {MAX_TOTAL} options in (asked: "
                              f"{req.offset}); narrow the window", ["_cursor"])
        if req.total is not None and req.total not in TOTAL_MODES:
            raise bad_request(f"parameter '_total' must be one of {', '.join(TOTAL_MODES)}",
                              ["_total"])
        warnings: list[dict[str, Any]] = []
        if req.count > MAX_COUNT:
            warnings.append(_warning(f"_count {req.count} is more than this server's maximum; "
                                     f"pages hold {MAX_COUNT} options", "_count"))
            req = dataclasses.replace(req, count=MAX_COUNT)
        now = datetime.now(UTC)
        if req.not_before is None:  # the first page: fix the clamp for every later page
            req = dataclasses.replace(req, not_before=_second_up(now))
        assert req.not_before is not None
        lo = max(req.start, req.not_before)
        counting = req.count == 0 or req.total == "accurate"
        want = max(req.offset + req.count + 1, MAX_TOTAL + 1 if counting else 0)
        options: list[Option] = []
        visit: VisitType | None = None
        offered_by: tuple[str, dict[str, Any]] | None = None
        by_key: dict[str, _Calendar] = {}
        if lo < req.end:
            visit, needs, offered_by = await self._needs(req)
            hi = req.end
            if visit is not None and offered_by is not None and visit.rules.any:
                # what the visit type's rules leave (find_rules), judged from the clamp
                # instant so every page of one search sees the same window
                cut = await narrow(self.store, ctx, req.patient, visit, offered_by[1],
                                   req.not_before, lo, hi, req.insurance, req.referral)
                lo, hi = cut.lo, cut.hi
                if req.explain:
                    warnings.extend(cut.issues())
            groups = await self._candidates(req, needs, defined=visit is not None)
            if all(groups) and lo < hi:
                duration = visit.duration if visit else timedelta(minutes=min(
                    (c.templates[0].slot_minutes for g in groups for c in g if c.templates),
                    default=30))
                avoid = await self._patient_busy(req)
                prefer = _timing_preference(req.timing, groups[0][0].zone)
                options = await self._search(groups, lo, hi, duration, want, avoid, prefer)
                by_key = {c.actor: c for g in groups for c in g}
        exhausted = len(options) < want
        total = len(options) if exhausted and req.total != "none" else None
        if counting and not exhausted and req.total != "none":
            warnings.append(_warning(f"more than {MAX_TOTAL} options in the window: the total "
                                     "is not counted; narrow the window to count them",
                                     "_total" if req.count else "_count"))
        page = [o for o in options[req.offset:req.offset + req.count] if o.start >= now]
        proposals = [self._proposal(o, by_key, visit, req, offered_by) for o in page]
        await self.proposals.keep(proposals)
        more = len(options) > req.offset + req.count
        if more and req.count and req.offset + req.count >= MAX_TOTAL:
            more = False
            warnings.append(_warning(f"paging stops at {MAX_TOTAL} options; narrow the window "
                                     "(start later) to see the options after these", "_cursor"))
        if self.audit is not None:
            # a query of free time, for the patient it was for: what was offered is not PHI,
            # the parameters' values are not recorded (as for a search)
            patient = f"Patient/{req.patient[0].removeprefix('Patient/')}" if req.patient else None
            self.audit.later(audit_entry(ctx.through("operation"), "$find", entity="Appointment",
                                         patient=patient, detail=f"{len(proposals)} offered"))
        return FindResult(proposals, req, total, more, warnings)

    async def calendars_of(self, rows: list[tuple[str, bytes]], lo: datetime, hi: datetime
                           ) -> list[Published]:
        """Each usable Schedule of ``rows`` with its resource's calendar over [lo, hi): busy
        time from the guard's claims, the resource's capacity and buffers by the guard's rule,
        and the Schedule's stored Slots. What the Slot publisher computes free time from, read
        exactly as ``$find`` reads it, so both answer alike.

        The calendar is the Schedule's bookable resource's: its Practitioner (or
        PractitionerRole), else its Device, else its Location; a Schedule of only a
        HealthcareService has none and is left out.
        """
        cals: list[_Calendar] = []
        for _sid, body in rows:
            info = self._schedule_info(body)
            if info is None:
                continue
            actor = next((a for t in _BOOKABLE for a in info.actors if a.startswith(t + "/")),
                         None)
            if actor is None:
                continue
            cal = ResourceCalendar(actor, info.schedule["id"], info.templates, info.horizon,
                                   [], [])
            cals.append(_Calendar(info.schedule, actor, info.templates, info.zone, cal))
        await self._apply_policies(cals)
        for n in range(0, len(cals), _CHUNK):
            chunk = cals[n:n + _CHUNK]
            pad = _pad(chunk)
            await self._load(chunk, lo - pad, hi + pad, first=True)
        return [Published(c.schedule, c.actor, c.calendar, c.zone, c.policy.capacity)
                for c in cals]

    async def _search(self, groups: list[list[_Calendar]], start: datetime, end: datetime,
                      duration: timedelta, count: int, avoid: list[tuple[datetime, datetime]],
                      prefer: Callable[[datetime], bool] | None) -> list[Option]:
        """The first ``count`` options of [start, end), reading busy time only as far ahead as
        the answer needs.

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
        loaded = start - pad
        # Start the first part at the first open template hour, so a window opening on a
        # weekend or a holiday does not spend its first round on closed days.
        upto = min(_first_open(unique, start, end) + _FIRST_SPAN, end)
        first = True
        while True:
            await self._load(unique, loaded, upto + pad, first=first)
            loaded, first = upto + pad, False
            options = await asyncio.to_thread(
                find_options, cals, start, upto, duration, count, avoid, prefer)
            if upto >= end or (
                    len(options) >= count and options[-1].start + margin <= upto
                    and (prefer is None or all(prefer(o.start) for o in options))):
                return options
            upto = min(start + (upto - start) * _GROWTH, end)

    async def _needs(self, req: FindRequest) -> tuple[
            VisitType | None, list[Need], tuple[str, dict[str, Any]] | None]:
        """The visit type asked for, what it needs, and the HealthcareService offering it."""
        specialty = _token_codings(req.specialty)
        if req.visit_type:
            services = await self.store.search(Query("HealthcareService", count=1000))
            types: list[tuple[VisitType, tuple[str, dict[str, Any]]]] = []
            for id_, body in services.rows:
                service = orjson.loads(body)
                try:
                    types.extend((vt, (id_, service)) for vt in parse_visit_types(service))
                except VisitTypeError:
                    continue  # a broken definition elsewhere must not break every $find
            for token in req.visit_type:  # ORed in order of preference
                for vt, offered_by in types:
                    if vt.matches_token(token):
                        needs = [Need(n.actor_type, n.specialty or (
                            specialty if n.actor_type in _PART_ROLE and n.actor_type != "Location"
                            else ()), n.kind) for n in vt.needs]
                        return vt, needs, offered_by
        return None, [Need("Practitioner", specialty)], None

    async def _candidates(self, req: FindRequest, needs: list[Need],
                          defined: bool = True) -> list[list[_Calendar]]:
        places = await self._places(req) if (
            req.location or req.location_string or req.organization) else None
        wanted = await self._wanted_practitioners(req)
        roles_asked = sorted(a for a in wanted if a.startswith("PractitionerRole/"))
        groups: list[list[_Calendar]] = []
        seen: dict[tuple[str, str], _Calendar] = {}  # one calendar per Schedule and actor
        for need in needs:
            rows = list((await self.store.search(Query("Schedule", _schedule_filter(need),
                                                       count=10_000))).rows)
            person = need.actor_type in ("Practitioner", "PractitionerRole")
            if person and roles_asked and need.actor_type == "Practitioner":
                # practitioner=PractitionerRole/x: the role's own Schedules serve this need
                for chunk in _chunks(roles_asked):
                    rows += (await self.store.search(Query("Schedule", (AnyOf(tuple(
                        Entry("actor", (Cond("val", "=", r),)) for r in chunk)),),
                        count=10_000))).rows
            if places is not None and person:
                places = await self._place_people(places, rows, need)
            cands: list[tuple[tuple[int, str], _Calendar]] = []
            for _sid, body in rows:
                info = self._schedule_info(body)
                if info is None:
                    continue
                sched, actors = info.schedule, info.actors
                types = (need.actor_type, "PractitionerRole") if person else (need.actor_type,)
                actor = next((a for t in types for a in actors if a.startswith(t + "/")), None)
                if actor is None or not need.accepts(need.actor_type, info.specialty, info.kind):
                    continue
                rank = 0
                if person and wanted:
                    if actor not in wanted:
                        continue
                    rank, role_places = wanted[actor]
                    listed = {a for a in actors if a.startswith("Location/")}
                    if role_places and listed and not listed & role_places:
                        continue  # this practitioner's calendar elsewhere than the role asked
                if places is not None and not self._placed(places, actor, actors):
                    continue
                if need.actor_type == "Location" and req.location:
                    rank = req.location.index(actor) if actor in req.location else len(
                        req.location)
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
            groups.append(list({id(c): c for _, c in cands}.values()))
        await self._apply_policies(list(seen.values()))
        return groups

    async def _wanted_practitioners(self, req: FindRequest
                                    ) -> dict[str, tuple[int, frozenset[str]]]:
        """``practitioner`` as actor -> (preference rank, Locations a role confines it to).

        A PractitionerRole stands for itself and for its practitioner at the role's Locations
        (none listed: anywhere); a practitioner named directly is not confined."""
        wanted: dict[str, tuple[int, frozenset[str]]] = {}
        for rank, ref in enumerate(req.practitioner):
            if ref not in wanted or wanted[ref][1]:
                wanted[ref] = (rank, frozenset())
        roles = [r for r in req.practitioner if r.startswith("PractitionerRole/")]
        for ref in roles[:MAX_COUNT]:
            rec = await self.store.get("PractitionerRole", ref.split("/", 1)[1])
            if rec is None or rec.deleted or rec.body is None:
                continue
            role = orjson.loads(rec.body)
            who = _ref(role.get("practitioner"))
            if not who or not _active(role):
                continue
            rank = wanted[ref][0]
            locs = frozenset(_refs(role.get("location")))
            if who not in wanted:
                wanted[who] = (rank, locs)
            elif wanted[who][1]:
                old_rank, old_locs = wanted[who]
                wanted[who] = (min(rank, old_rank), old_locs | locs if locs else frozenset())
        return wanted

    @staticmethod
    def _placed(places: _Places, actor: str, actors: tuple[str, ...]) -> bool:
        """Whether a Schedule's calendar lies within the place filters: its listed Locations or
        HealthcareServices decide; with none listed, the actor's own placement (a Location is
        its own place; a person is placed by PractitionerRoles)."""
        listed = [_Placement(frozenset({a}), frozenset()) for a in actors
                  if a.startswith("Location/")]
        listed += [places.services[a] for a in actors
                   if a.startswith("HealthcareService/") and a in places.services]
        if any(a.startswith("HealthcareService/") for a in actors) or listed:
            return any(places.allows(p) for p in listed)
        return any(places.allows(p) for p in places.roles.get(actor, []))

    async def _places(self, req: FindRequest) -> _Places:
        """The place filters as sets of references, read with bounded queries."""
        locations: set[str] | None = None
        if req.location or req.location_string:
            locations = set(req.location)
            if req.location_string:
                where = AnyOf(tuple(e for text in req.location_string for e in (
                    parse_param("Location", "name", text),
                    parse_param("Location", "address", text)) if e is not None))
                locations |= {f"Location/{i}" for i, _ in await self._bounded(
                    Query("Location", (where,)), "Locations match location-string")}
        orgs = frozenset(req.organization) if req.organization else None
        managed: set[str] = set()
        for chunk in _chunks(sorted(orgs or ())):
            managed |= {f"Location/{i}" for i, _ in await self._bounded(Query("Location", (
                AnyOf(tuple(Entry("organization", (Cond("val", "=", o),)) for o in chunk)),)),
                "Locations belong to the organization")}
        # HealthcareServices at the allowed places (or of the organizations)
        services: dict[str, _Placement] = {}
        keys = ([("location", sorted(locations))] if locations is not None else
                [("organization", sorted(orgs or ())), ("location", sorted(managed))])
        for param, refs in keys:
            for chunk in _chunks(refs):
                for i, body in await self._bounded(Query("HealthcareService", (AnyOf(tuple(
                        Entry(param, (Cond("val", "=", r),)) for r in chunk)),)),
                        "HealthcareServices match the place filters"):
                    hs = orjson.loads(body)
                    if hs.get("active") is not False:
                        services[f"HealthcareService/{i}"] = _Placement(
                            frozenset(_refs(hs.get("location"))),
                            frozenset(_refs([hs.get("providedBy")])))
        return _Places(frozenset(locations) if locations is not None else None, orgs,
                       frozenset(managed), services, {})

    async def _place_people(self, places: _Places, rows: list[tuple[str, bytes]],
                            need: Need) -> _Places:
        """Read the PractitionerRoles that could place the people of these Schedules who have
        no place on their Schedule: the roles at the allowed places (by location, by service,
        or by organization), so what is read is bounded by the filter, not by the server."""
        people: set[str] = set()
        for _sid, body in rows:
            info = self._schedule_info(body)
            if info is None or any(a.startswith(("Location/", "HealthcareService/"))
                                   for a in info.actors):
                continue
            people |= {a for a in info.actors if a.startswith(("Practitioner/",
                                                                "PractitionerRole/"))}
        people -= set(places.roles)
        if not people:
            return places
        keys: list[tuple[str, list[str]]] = [("service", sorted(places.services))]
        if places.locations is not None:
            keys.append(("location", sorted(places.locations)))
        else:
            keys += [("organization", sorted(places.organizations or ())),
                     ("location", sorted(places.managed))]
        roles = dict(places.roles)
        for person in people:
            roles.setdefault(person, [])
        found: dict[str, dict[str, Any]] = {}
        for param, refs in keys:
            for chunk in _chunks(refs):
                for i, body in await self._bounded(Query("PractitionerRole", (AnyOf(tuple(
                        Entry(param, (Cond("val", "=", r),)) for r in chunk)),)),
                        "PractitionerRoles match the place filters"):
                    found[i] = orjson.loads(body)
        if len(found) > MAX_PLACES:
            raise _too_costly("PractitionerRoles match the place filters")
        for rid, role in found.items():
            if not _active(role):
                continue
            mine = [_Placement(frozenset(_refs(role.get("location"))),
                               frozenset(_refs([role.get("organization")])))]
            for hs in _refs(role.get("healthcareService")):
                at = places.services.get(hs)
                if at is not None:
                    mine.append(_Placement(at.locations or mine[0].locations,
                                           at.organizations | mine[0].organizations))
            for who in (f"PractitionerRole/{rid}", _ref(role.get("practitioner"))):
                if who in roles:
                    roles[who] = [*roles[who], *mine]
        return dataclasses.replace(places, roles=roles)

    async def _bounded(self, query: Query, what: str) -> list[tuple[str, bytes]]:
        page = await self.store.search(dataclasses.replace(query, count=MAX_PLACES + 1))
        if len(page.rows) > MAX_PLACES:
            raise _too_costly(what)
        return list(page.rows)

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
                  req: FindRequest, offered_by: tuple[str, dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
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
            if offered_by is not None:
                # which service's visit type this is, so booking it meets that visit type's
                # rules (the guard reads it here; as a participant it would take capacity)
                appt["supportingInformation"] = [
                    {"reference": f"HealthcareService/{offered_by[0]}"}]
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


def _too_costly(what: str) -> FhirError:
    return FhirError(422, "too-costly", f"more than {MAX_PLACES} {what}; narrow the search "
                     "(a location, a practitioner, a specialty)",
                     expression=["location-reference"])


def _chunks(refs: list[str]) -> list[list[str]]:
    return [refs[i:i + _CHUNK] for i in range(0, len(refs), _CHUNK)]


def _ref(value: Any) -> str:
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) else ""


def _refs(values: Any) -> list[str]:
    return [r for r in (_ref(v) for v in values or [] if v) if r]


def _active(role: dict[str, Any]) -> bool:
    """A PractitionerRole in force: not marked inactive, and its period not over."""
    if role.get("active") is False:
        return False
    end = (role.get("period") or {}).get("end")
    if isinstance(end, str):
        try:
            return date_range(end)[1] >= to_us(datetime.now(UTC))
        except ValueError:
            return True
    return True


def _second_up(dt: datetime) -> datetime:
    """``dt`` rounded up to a whole second: the clamp instant a cursor carries exactly."""
    whole = dt.replace(microsecond=0)
    return whole if whole == dt else whole + timedelta(seconds=1)


def _warning(text: str, name: str) -> dict[str, Any]:
    return {"severity": "warning", "code": "informational", "diagnostics": text,
            "expression": [name]}


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
