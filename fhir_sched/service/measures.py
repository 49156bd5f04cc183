"""The scheduling KPIs as FHIR Measures, and ``$evaluate-measure`` over them.

The Measures are definitions the server ships (``conformance/Measure-*.json``), served
read-only beside the OperationDefinitions (``rest/conformance.py``), not a hosted type seeded
at start: what a measure means is this module's code, so a Measure a client could edit would
say one thing while the server computed another, and a definition kept in the store would
need seeding, migrating and guarding against writes for no gain. Each file states its
definition in words and its populations as FHIRPath over each Appointment with environment
variables (``%periodStart``, ``%kept``, ``%openHours``...) that its ``usage`` documents: R4's
JSON schema allows only CQL, FHIRPath and FHIR query there, and FHIRPath says most of it
exactly. ``scheduling/kpis.py`` is what they compute.

Evaluation reads facts:

- visits: the period's Appointments found through the date index and handed over as stored
  bytes (``DocumentStore.in_window``), parsed with orjson in a worker thread (measured faster
  than reading and regrouping their ~15 index entries each), kept
  per period in this process and brought up to date from the change feed, so only the first
  report of a period reads the year; for lead time, when the server first stored those that
  carry no ``created`` (``first_versions``);
- bookable hours from the availability templates of the Schedules (few), and explicit Slots
  from the index for Schedules without templates;
- third next available from ``$find`` itself (``FindService``), so "open" means what a
  patient would be offered;
- filled waitlist entries by one indexed search (cancelled and without a start, few).

The arithmetic runs in a worker thread (``asyncio.to_thread``): the event loop only awaits.
A period is at most ``MAX_PERIOD_DAYS`` long and at most ``MAX_VISITS`` visits are read, each
refused with a 422 that says the limit before any work is done.
"""

from __future__ import annotations

import asyncio
import gc
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from weakref import WeakKeyDictionary

import orjson

from ..conformance_files import load_all
from ..context import RequestContext
from ..errors import FhirError
from ..query import Cond, Entry, Missing, Query
from ..scheduling import kpis
from ..scheduling.kpis import Observation, Result, Visit, Window
from ..scheduling.templates import TemplateError, parse_templates
from ..scheduling.visit_types import VisitTypeError, parse_visit_types
from ..storage.base import DocumentStore, Record
from ..timeutil import format_instant, from_us, parse_instant, to_us
from .authorization import Authorizer, Interaction, forbidden
from .find import FindRequest, FindService

MAX_PERIOD_DAYS = 731  # two years (one of them a leap year)
MAX_VISITS = 2_000_000
MAX_PAIRS = 500  # practitioner x visit type pairs asked of $find for third next available
MAX_SCHEDULES = 5000
TNAA_DAYS = 90  # how far ahead third next available looks
MAX_WAITLIST = 10_000
LIMITS = (f"periodStart to periodEnd at most {MAX_PERIOD_DAYS} days; at most {MAX_VISITS} "
          f"appointments in the period; third next available looks {TNAA_DAYS} days ahead, "
          f"for at most {MAX_PAIRS} practitioner and visit type pairs (name a subject for "
          "more); a 422 says which limit was met")
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
# engage.waitlist.REASON_SYSTEM (engage sits above services): how the waitlist job marks an
# entry closed because its offer was booked; tests/test_kpis.py keeps the two equal.
WAITLIST_OUTCOME = "https://fhir-sched.org/fhir/CodeSystem/waitlist-outcome"
SUBJECT_TYPES = ("Practitioner", "PractitionerRole", "Location", "HealthcareService")
# R4 MeasureReport.subject cannot name a HealthcareService; R5's can, so it travels in the
# cross-version extension then.
R5_SUBJECT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-MeasureReport.subject"
REPORT_TYPES = {"population": "summary", "summary": "summary", "subject": "individual",
                "individual": "individual"}
_PEOPLE = ("Patient/", "RelatedPerson/", "Group/")
_OFFER = re.compile(r"Appointment/([A-Za-z0-9\-.]{1,64})")
_TAKES_TIME = frozenset({"free", "busy", "busy-tentative"})


@cache
def measures() -> dict[str, dict[str, Any]]:
    """id -> the Measure as shipped in ``conformance/``."""
    return {m["id"]: m for m in load_all("Measure-*.json")}


@dataclass(frozen=True, slots=True)
class EvaluateRequest:
    measure: str  # a Measure id
    start: int  # microseconds, inclusive
    end: int  # microseconds, exclusive
    subject: str | None  # Type/id
    report_type: str  # MeasureReport.type: summary | individual


class MeasureService:
    def __init__(self, store: DocumentStore, authorizer: Authorizer, find: FindService,
                 late_cancel_hours: int = 24) -> None:
        self.store = store
        self.authorizer = authorizer
        self.find = find
        self.late_lead_us = late_cancel_hours * 3600 * 1_000_000

    async def evaluate(self, ctx: RequestContext, req: EvaluateRequest) -> dict[str, Any]:
        measure = measures().get(req.measure)
        if measure is None:
            raise FhirError(404, "not-found", f"Measure/{req.measure} is not known; GET "
                            "Measure lists the ones this server evaluates")
        self._authorize(ctx)
        if req.subject is not None:
            await self._subject(ctx, req.subject)
        now = to_us(datetime.now(UTC))
        groups = await self._results(ctx, req, measure, now)
        return _report(measure, req, groups, now)

    def _authorize(self, ctx: RequestContext) -> None:
        """Aggregates over the clinic's appointments: the caller must be allowed to search
        every Appointment. A patient-bound caller (``patient/`` scopes, or a context confined
        to a compartment) never is, nor a scope narrowed by ``?param=value``: a count over
        what it may not see would tell about other patients."""
        self.authorizer.check(ctx, Interaction.SEARCH, "Appointment")
        if ctx.patient is not None:
            raise forbidden(f"a caller confined to {ctx.patient} may not evaluate clinic-wide "
                            "measures")
        grant = ctx.grant
        if grant is not None and not any(
                s.level in ("user", "system") and not s.where and s.covers("Appointment", "s")
                for s in grant.resource):
            raise forbidden("$evaluate-measure aggregates every Appointment: it needs a user/ "
                            "or system/ scope such as user/Appointment.rs (patient/ and "
                            "restricted scopes are not enough)")

    async def _subject(self, ctx: RequestContext, subject: str) -> None:
        type_, _, id_ = subject.partition("/")
        rec = await self.store.get(type_, id_)
        if rec is None or rec.deleted or rec.body is None:
            raise FhirError(404, "not-found", f"subject {subject} is not known",
                            expression=["subject"])
        self.authorizer.check(ctx, Interaction.READ, type_, id_,
                              resource=orjson.loads(rec.body))

    async def _results(self, ctx: RequestContext, req: EvaluateRequest,
                       measure: dict[str, Any], now: int) -> list[tuple[dict[str, Any], Result]]:
        mid = req.measure
        groups: list[dict[str, Any]] = measure.get("group") or [{}]
        if mid == "third-next-available":
            result = kpis.observed(await self._third_next(ctx, req, now))
        elif mid == "waitlist-time-to-fill":
            result = kpis.observed(await self._waitlist(req))
        else:
            visits = await self._period_visits(req)
            result = await self._visit_measure(req, mid, visits, now)
        return [(g, result) for g in groups]

    async def _period_visits(self, req: EvaluateRequest) -> list[Visit]:
        return await period_visits(self.store, req.start, req.end, req.subject)

    async def _visit_measure(self, req: EvaluateRequest, mid: str, visits: list[Visit],
                             now: int) -> Result:
        if mid == "no-show-rate":
            return await asyncio.to_thread(kpis.no_show, visits, now)
        if mid == "cancellation-rate":
            return await asyncio.to_thread(kpis.cancellation, visits)
        if mid == "late-cancellation-rate":
            return await asyncio.to_thread(kpis.cancellation, visits, self.late_lead_us)
        if mid == "lead-time":
            missing = [v.id for v in visits if v.booked_at is None and v.status in kpis.KEPT]
            first = await self.store.first_versions("Appointment", missing) if missing else {}
            if first:
                visits = [replace(v, booked_at=to_us(parse_instant(first[v.id])))
                          if v.id in first else v for v in visits]
            return await asyncio.to_thread(kpis.lead_time, visits)
        if mid in ("fill-rate", "utilisation"):
            windows, kept = await self._windows(req)
            return await asyncio.to_thread(
                lambda: kpis.capacity_use(visits, windows, minutes=mid == "utilisation",
                                          keep=lambda r: kept is None or r in kept))
        raise FhirError(404, "not-found", f"Measure/{mid} has no evaluation here")

    # -- the facts ---------------------------------------------------------------------------
    async def _all(self, query: Query, limit: int) -> list[tuple[str, bytes]]:
        rows: list[tuple[str, bytes]] = []
        after = None
        while True:
            page = await self.store.search(replace(query, count=1000, after=after))
            rows += page.rows
            after = page.next_after
            if after is None or len(rows) >= limit:
                return rows[:limit]

    async def _schedules(self, subject: str | None) -> list[dict[str, Any]]:
        rows = await self._all(Query("Schedule"), MAX_SCHEDULES)
        out = []
        for _id, body in rows:
            schedule = orjson.loads(body)
            if schedule.get("active") is False:
                continue
            actors = _actors(schedule)
            if subject is None or subject in actors:
                out.append(schedule)
        return out

    async def _windows(self, req: EvaluateRequest) -> tuple[list[Window], set[str] | None]:
        """Bookable windows of each scheduled resource (within the subject's Schedules), and
        the resources counted (None: every one)."""
        schedules = await self._schedules(req.subject)
        slot_schedules: dict[str, tuple[list[str], tuple[str, ...]]] = {}
        kept: set[str] = set()
        plans: list[tuple[list[str], tuple[str, ...], list[Any]]] = []
        for schedule in schedules:
            actors = _actors(schedule)
            resources = [a for a in actors if not a.startswith(("HealthcareService/", *_PEOPLE))]
            services = _services_of(schedule, actors)
            kept.update(resources)
            try:
                templates = parse_templates(schedule)
            except TemplateError:
                templates = []
            if templates:
                plans.append((resources, services, templates))
            else:
                slot_schedules[f"Schedule/{schedule.get('id')}"] = (resources, services)
        slots = await self.store.in_window("Slot", "start", req.start, req.end,
                                           MAX_VISITS + 1) if slot_schedules else []

        def build() -> list[Window]:
            out: list[Window] = []
            for resources, services, templates in plans:
                for t in templates:
                    for a, b in kpis.template_windows(t, req.start, req.end):
                        strata = ((), (), services, kpis.iso_week(a))
                        out.extend(Window(r, a, b, t.capacity, t.slot_minutes, strata)
                                   for r in resources)
            for _id, start, body in slots:
                slot = orjson.loads(body)
                found = slot_schedules.get(str((slot.get("schedule") or {}).get("reference")))
                end = _us(slot.get("end"))
                if found is None or slot.get("status") not in _TAKES_TIME or end is None:
                    continue
                minutes = max(1, (end - start) // kpis.MINUTE_US)
                strata = ((), (), found[1], kpis.iso_week(start))
                out.extend(Window(r, start, end, 1, minutes, strata) for r in found[0])
            return out

        windows = await asyncio.to_thread(build)
        return windows, (kept if req.subject is not None else None)

    async def _third_next(self, ctx: RequestContext, req: EvaluateRequest, now: int
                          ) -> list[Observation]:
        """IHI third next available, per practitioner and visit type: days from the request
        day (the later of periodStart's day and today) to the third open time ``$find``
        offers, looking ``TNAA_DAYS`` ahead. A pair with no open time at all is not a pair
        (the practitioner does not give that visit); one with fewer than three is excluded."""
        day = max(from_us(req.start), from_us(now)).date()
        asked = max(from_us(req.start), from_us(now))
        if to_us(asked) >= req.end:
            return []
        practitioners: list[str] = []
        for schedule in await self._schedules(req.subject):
            practitioners += [a for a in _actors(schedule)
                              if a.startswith(kpis.PRACTITIONER_TYPES)]
        practitioners = sorted(set(practitioners))
        tokens: list[str] = []
        offered = Query("HealthcareService", (Missing("visit-type", False),))
        for _id, body in await self._all(offered, 1000):
            try:
                kinds = parse_visit_types(orjson.loads(body))
            except VisitTypeError:
                continue
            tokens += [f"{vt.system}|{vt.code}" if vt.system else vt.code for vt in kinds
                       if any(n.actor_type in ("Practitioner", "PractitionerRole")
                              for n in vt.needs)]
        pairs = [(p, t) for p in practitioners for t in sorted(set(tokens))]
        if len(pairs) > MAX_PAIRS:
            raise FhirError(422, "too-costly", f"third next available for {len(pairs)} "
                            f"practitioner and visit type pairs (at most {MAX_PAIRS}); name a "
                            "subject", expression=["subject"])
        gate = asyncio.Semaphore(4)
        week = kpis.iso_week(to_us(asked))

        async def one(practitioner: str, token: str) -> Observation | None:
            async with gate:
                found = await self.find.find(ctx, FindRequest(
                    start=asked, end=asked + timedelta(days=TNAA_DAYS), visit_type=[token],
                    practitioner=[practitioner], count=3))
            starts = [parse_instant(str(p["start"])) for p in found.proposals]
            if not starts:
                return None
            return Observation(kpis.days_to_third(day, starts),
                               ((practitioner,), (), (token,), week))

        got = await asyncio.gather(*(one(p, t) for p, t in pairs))
        return [o for o in got if o is not None]

    async def _waitlist(self, req: EvaluateRequest) -> list[Observation]:
        """Entries the waitlist job closed because their offer was booked, filled within the
        period: days from the entry's ``created`` (else its first storing) to that booking."""
        rows = await self._all(Query("Appointment", (
            Entry("status", (Cond("val", "=", "cancelled"),)), Missing("date"))), MAX_WAITLIST)
        filled: list[tuple[dict[str, Any], int, str | None]] = []
        for _id, body in rows:
            entry = orjson.loads(body)
            reason = entry.get("cancelationReason") or {}
            if not any(c.get("system") == WAITLIST_OUTCOME and c.get("code") == "booked"
                       for c in reason.get("coding") or [] if isinstance(c, dict)):
                continue
            when = to_us(parse_instant(entry["meta"]["lastUpdated"]))
            if req.start <= when < req.end:
                named = _OFFER.search(str(reason.get("text") or ""))
                filled.append((entry, when, named.group(1) if named else None))
        first = await self.store.first_versions(
            "Appointment", [e["id"] for e, _, _ in filled if not e.get("created")])
        out: list[Observation] = []
        for entry, when, offer_id in filled:
            created = entry.get("created") or first.get(entry["id"])
            if not created:
                continue
            offer: dict[str, Any] = {}
            if offer_id is not None:
                rec = await self.store.get("Appointment", offer_id)
                offer = orjson.loads(rec.body) if rec is not None and rec.body else {}
            actors = _actors(offer) or _actors(entry)
            if req.subject is not None and req.subject not in actors:
                continue
            strata = _strata(actors, _visit_services(offer or entry, actors), when)
            out.append(Observation((when - to_us(parse_instant(str(created)))) / kpis.DAY_US,
                                   strata))
        return out


# -- facts out of stored bodies, kept per period -------------------------------------------------
@dataclass(slots=True)
class _Facts:
    """A period's visits by id, as of change-feed ``position``. Never changed once shared: an
    update makes a new one, so a report computing over the old one in a worker thread is
    never disturbed."""

    position: int
    visits: dict[str, Visit]


# store -> (period start, end) -> facts, oldest first. About 240 bytes a visit (measured:
# 59 MB for a year of 250,000), so at most two periods are kept.
_FACTS: WeakKeyDictionary[Any, dict[tuple[int, int], _Facts]] = WeakKeyDictionary()
_KEEP = 2
_DELTA = 20_000
_ALL_FACTS = frozenset({"end", "created", "updated"})


async def period_visits(store: DocumentStore, lo: int, hi: int, subject: str | None
                        ) -> list[Visit]:
    """The visits starting in [lo, hi) (the subject's only, if one is named), from the facts
    this process keeps for the last ``_KEEP`` windows read: a kept window that covers the
    period serves it (the warm window read at start covers every period of the last year),
    brought up to date from the change feed when it has moved (a parse per changed
    appointment); the period is read afresh when nothing covers it or more than ``_DELTA``
    changes came since. A dashboard asks every measure of one period in a row; only the first
    pays for reading the year, and with the warm window not even that one."""
    periods = _FACTS.setdefault(store, {})
    key = next((k for k in reversed(periods) if k[0] <= lo and hi <= k[1]), (lo, hi))
    head = await store.last_position()
    facts = periods.pop(key, None)
    if facts is not None and facts.position < head:
        changes = await store.changes_since(facts.position, _DELTA)
        facts = None if len(changes) >= _DELTA else await asyncio.to_thread(
            _advanced, facts, changes, key[0], key[1])
    if facts is None:
        key = (lo, hi)
        rows = await store.in_window("Appointment", "date", key[0], key[1], MAX_VISITS + 1)
        if len(rows) > MAX_VISITS:
            raise FhirError(422, "too-costly", f"more than {MAX_VISITS} appointments in the "
                            "period; ask for a shorter one", expression=["periodEnd"])
        read = await asyncio.to_thread(_visits, rows, None, _ALL_FACTS)
        facts = _Facts(head, {v.id: v for v in read})
    periods[key] = facts
    while len(periods) > _KEEP:
        periods.pop(next(iter(periods)))
    kept, whole = facts.visits, key == (lo, hi)
    if subject is None and whole:
        return list(kept.values())
    return await asyncio.to_thread(lambda: [
        v for v in kept.values() if (whole or lo <= v.start < hi)
        and (subject is None or subject in v.resources)])


async def warm(store: DocumentStore, days_back: int, days_ahead: int = 90) -> None:
    """Read the window of the last ``days_back`` days to ``days_ahead`` ahead once, soon
    after start (a background job), so the first report of any period in it, a year's
    included, is served from memory rather than paying ~2 s for reading and parsing a year
    of appointments. Memory: about 240 bytes a visit."""
    if days_back <= 0:
        return
    await asyncio.sleep(2)  # after the server has settled and answers its first requests
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    await period_visits(store, to_us(today - timedelta(days=days_back)),
                        to_us(today + timedelta(days=days_ahead)), None)


def _advanced(facts: _Facts, changes: Sequence[Record], lo: int, hi: int) -> _Facts:
    """``facts`` with ``changes`` applied: each changed Appointment replaced by its new
    version when that still starts in the period, dropped otherwise (moved out, deleted)."""
    visits = dict(facts.visits)
    position = facts.position
    for rec in changes:
        position = max(position, rec.seq)
        if rec.type != "Appointment":
            continue
        visits.pop(rec.id, None)
        if rec.deleted or rec.body is None:
            continue
        start = _us(orjson.loads(rec.body).get("start"))
        if start is not None and lo <= start < hi:
            for v in _visits([(rec.id, start, rec.body)], None):
                visits[v.id] = v
    return _Facts(position, visits)


# -- facts out of index entries and bodies ------------------------------------------------------
def _us(value: Any) -> int | None:
    """A FHIR instant or dateTime as microseconds (a date or a time without offset read in
    UTC), None when absent or unreadable: facts read from stored bodies are not re-validated.
    Integer arithmetic on the fields (a float timestamp drifts a microsecond by 2100), cheaper
    than ``to_us``'s timedelta arithmetic on the hot path."""
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    seconds = (dt.toordinal() - _EPOCH_DAY) * 86_400 + dt.hour * 3600 + dt.minute * 60 \
        + dt.second
    offset = dt.utcoffset()
    if offset:
        seconds -= offset.days * 86_400 + offset.seconds
    return seconds * 1_000_000 + dt.microsecond


def _visits(rows: Sequence[tuple[str, int, bytes]], subject: str | None,
            needs: frozenset[str] = frozenset({"end", "created", "updated"})) -> list[Visit]:
    """The visit facts of stored Appointment bodies, in a worker thread. The hot loop of a
    year's report: what a visit's participants and visit types make of it (its resources and
    strata) is worked out once per distinct combination, since a clinic has few, and the
    cyclic garbage collector is held off while the facts pile up (each of its passes would
    walk every fact made so far)."""
    out: list[Visit] = []
    append = out.append
    loads = orjson.loads
    weeks: dict[int, str] = {}
    ends: dict[str, int | None] = {}
    strata_of: dict[tuple[Any, int], kpis.Strata] = {}
    want_end, want_created, want_updated = ("end" in needs, "created" in needs,
                                            "updated" in needs)
    shapes: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[tuple[str, ...], kpis.Strata]] = {}
    with _no_gc():
        for id_, start, body in rows:
            appt = loads(body)
            refs = []
            for part in appt.get("participant") or ():
                actor = part.get("actor") if isinstance(part, dict) else None
                ref = actor.get("reference") if isinstance(actor, dict) else None
                if isinstance(ref, str) and ref and not ref.startswith(_PEOPLE):
                    refs.append(ref)
            tokens = []
            for concept in (appt.get("appointmentType"), *(appt.get("serviceType") or ())):
                for coding in (concept.get("coding") or ()) if isinstance(concept, dict) else ():
                    code = coding.get("code") if isinstance(coding, dict) else None
                    if code:
                        system = coding.get("system")
                        tokens.append(f"{system}|{code}" if system else str(code))
            key = (tuple(refs), tuple(tokens))
            shape = shapes.get(key)
            if shape is None:
                shape = shapes[key] = _shape(*key)
            resources, (pr, lo, sv, _w) = shape
            if subject is not None and subject not in resources:
                continue
            day = start // kpis.DAY_US
            strata = strata_of.get((key, day))
            if strata is None:
                week = weeks.get(day)
                if week is None:
                    week = weeks[day] = kpis.iso_week(start)
                strata = strata_of[key, day] = (pr, lo, sv, week)
            # Only what some measure reads: the end and the booking of kept visits (the end
            # memoised: visits at one time share it), the time of a cancelled one's last change
            status = str(appt.get("status") or "")
            kept = status in kpis.KEPT
            end = created = None
            if kept and want_end:
                raw = appt.get("end")
                end = ends.get(raw, _UNSET) if isinstance(raw, str) else None
                if end is _UNSET:
                    end = ends[raw] = _us(raw)
            if kept and want_created:
                created = _us(appt.get("created"))
            updated = _us((appt.get("meta") or {}).get("lastUpdated")) if (
                want_updated and status == "cancelled") else None
            append(Visit(id_, start, end, status, start if updated is None else updated,
                         created, resources, strata))
    return out


def _shape(refs: tuple[str, ...], tokens: tuple[str, ...]
           ) -> tuple[tuple[str, ...], kpis.Strata]:
    """A visit's resources and its strata but the week, from its non-people participants and
    its visit type codes."""
    resources = tuple(dict.fromkeys(refs))
    services = tuple(dict.fromkeys((*(r for r in resources
                                      if r.startswith("HealthcareService/")), *tokens)))
    return resources, (tuple(r for r in resources if r.startswith(kpis.PRACTITIONER_TYPES)),
                       tuple(r for r in resources if r.startswith("Location/")), services, "")


_UNSET: Any = object()
_EPOCH_DAY = datetime(1970, 1, 1).toordinal()
_GC_HOLD = threading.Lock()
_gc_holders = 0


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic collector off while any report builds its facts (counted: reports may run
    side by side in worker threads); reference counting still frees everything acyclic."""
    global _gc_holders
    with _GC_HOLD:
        _gc_holders += 1
        if _gc_holders == 1:
            gc.disable()
    try:
        yield
    finally:
        with _GC_HOLD:
            _gc_holders -= 1
            if _gc_holders == 0:
                gc.enable()


def _strata(actors: Sequence[str], services: Sequence[str], when: int) -> kpis.Strata:
    return (tuple(a for a in actors if a.startswith(kpis.PRACTITIONER_TYPES)),
            tuple(a for a in actors if a.startswith("Location/")), tuple(services),
            kpis.iso_week(when))


def _actors(resource: dict[str, Any]) -> list[str]:
    """References of a Schedule's actors or an Appointment's participants."""
    out = []
    for item in resource.get("actor") or [p.get("actor") for p in resource.get(
            "participant") or [] if isinstance(p, dict)]:
        ref = item.get("reference") if isinstance(item, dict) else None
        if isinstance(ref, str) and ref:
            out.append(ref)
    return out


def _tokens(concepts: Sequence[Any]) -> list[str]:
    out = []
    for concept in concepts:
        for coding in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(coding, dict) and coding.get("code"):
                system = coding.get("system")
                out.append(f"{system}|{coding['code']}" if system else str(coding["code"]))
    return out


def _services_of(schedule: dict[str, Any], actors: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([a for a in actors if a.startswith("HealthcareService/")]
                               + _tokens(schedule.get("serviceType") or [])))


def _visit_services(appt: dict[str, Any], actors: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([a for a in actors if a.startswith("HealthcareService/")]
                               + _tokens([appt.get("appointmentType"),
                                          *(appt.get("serviceType") or [])])))


# -- the MeasureReport --------------------------------------------------------------------------
def _population(counts: kpis.Counts) -> list[dict[str, Any]]:
    return [{"code": {"coding": [{"system": POPULATION_SYSTEM, "code": code}]}, "count": n}
            for code, n in counts.populations.items()]


def _score(scoring: str, method: str, counts: kpis.Counts) -> dict[str, Any] | None:
    if scoring == "continuous-variable":
        value = kpis.aggregate(counts, method)
        return None if value is None else {"value": round(value, 4), "unit": "days",
                                           "system": "http://unitsofmeasure.org", "code": "d"}
    value = kpis.ratio(counts)
    return None if value is None else {"value": round(value, 6)}


def _report(measure: dict[str, Any], req: EvaluateRequest,
            groups: list[tuple[dict[str, Any], Result]], now: int) -> dict[str, Any]:
    scoring = measure["scoring"]["coding"][0]["code"]
    out_groups = []
    for group, result in groups:
        method = (group.get("code") or {}).get("text") or "mean"  # median | mean
        g: dict[str, Any] = {"population": _population(result.total)}
        if group.get("id"):
            g["id"] = group["id"]
        if group.get("code"):
            g["code"] = group["code"]
        score = _score(scoring, str(method), result.total)
        if score is not None:
            g["measureScore"] = score
        g["stratifier"] = []
        for code in kpis.STRATIFIERS:
            strata = []
            for key, counts in sorted(result.strata[code].items()):
                stratum: dict[str, Any] = {"value": {"text": key},
                                           "population": _population(counts)}
                s = _score(scoring, str(method), counts)
                if s is not None:
                    stratum["measureScore"] = s
                strata.append(stratum)
            g["stratifier"].append({"code": [{"text": code}], "stratum": strata})
        out_groups.append(g)
    report: dict[str, Any] = {
        "resourceType": "MeasureReport", "status": "complete", "type": req.report_type,
        "measure": f"{measure['url']}|{measure['version']}",
        "date": format_instant(from_us(now)),
        "period": {"start": format_instant(from_us(req.start)),
                   "end": format_instant(from_us(req.end - 1))},
        "improvementNotation": measure["improvementNotation"],
        "group": out_groups,
    }
    if req.subject is not None:
        if req.subject.startswith("HealthcareService/"):
            report["extension"] = [{"url": R5_SUBJECT,
                                    "valueReference": {"reference": req.subject}}]
        else:
            report["subject"] = {"reference": req.subject}
    return report
