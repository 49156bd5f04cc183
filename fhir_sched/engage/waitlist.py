"""Automatic waitlist offers: when time frees, the best waiting patient is offered it.

A waitlist entry is an R4 Appointment with status ``waitlist``: its patient, the visit type
(``appointmentType`` or ``serviceType``), optionally the practitioners and locations preferred
(as participants), the ``requestedPeriod``s that suit, and ``priority`` (1 first, 9 last; 0 or
none counts as 5).

Two steps, both safe with several server processes on one store:

1. **Freed time is noted.** The change feed is read forward from a cursor; every change that
   gives time back (a booking cancelled, marked a no-show, moved or deleted, a hold expired,
   an offer declined; a Slot freed) is kept as a pending window (its times and resources) in
   the same unit that moves the cursor, so no freed time is lost or noted twice. The same step
   closes an entry whose offer was booked, by whatever door.
2. **Each window gets at most one offer.** Entries are ranked by priority, then waiting time
   (``created``), then preference for the freed resources; for each in turn (at most
   ``MAX_TRIED``) ``$find`` looks for its visit type on the freed resources within the
   window and the entry's periods. The first that fits is held for the patient, through the
   booking guard and its rules (so a referral or coverage rule that refuses this patient
   passes the window to the next), with an offer notice due at once, in ONE unit that also
   removes the pending window; a window already taken by another process makes that unit
   stop, so a freed time never carries two live offers. The hold lasts
   ``FHIR_SCHED_WAITLIST_OFFER_SECONDS``; when it expires (the sweeper cancels it) or is
   declined, the time is freed again and goes to the next entry, the one that let it pass
   being noted on its entry so it is not asked again for that time.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ..context import RequestContext
from ..errors import FhirError
from ..metrics import WAITLIST_FILL_SECONDS, WAITLIST_OFFERS
from ..query import Cond, Entry, Query
from ..scheduling.extensions import HOLD_EXPIRES, hold_expiry, set_ext
from ..scheduling.guard import patient_actors, resource_actors
from ..scheduling.topics import TAKING, WAITLIST_OFFER_URL
from ..service.find import FindRequest, FindService
from ..service.resources import ResourceService, new_id
from ..storage.base import Unit
from ..timeutil import format_instant, parse_instant
from . import reminders as r
from .follow import Cursor, before_and_after, body_of, forever

log = logging.getLogger("fhir_sched.engage.waitlist")

CURSOR = "engage/waitlist"
WINDOWS = "waitlist/freed/"
BASE = "https://fhir-sched.org/fhir/StructureDefinition/"
OFFER_URL = WAITLIST_OFFER_URL  # on an offer: which entry, when the time was freed
PASSED_URL = BASE + "waitlist-passed"  # on an entry: times it let pass (declined, expired)
MAX_TRIED = 20  # entries tried per freed window
MAX_ENTRIES = 1000
MIN_MINUTES = 5  # a window shorter than this, from now, is not worth offering
CTX = RequestContext.system("waitlist")
# Holds are made for the patient with no power to overbook: the guard's capacity and the
# visit type's rules apply to an offer as to any booking.
HOLDER = RequestContext(subject="system/waitlist", door="system")
REASON_SYSTEM = "https://fhir-sched.org/fhir/CodeSystem/waitlist-outcome"


class _Taken(Exception):
    """Another process made this window's offer first."""


@dataclass(frozen=True, slots=True)
class Window:
    key: str
    start: datetime
    end: datetime
    actors: tuple[str, ...]
    freed_at: str
    passed_by: str | None  # the entry whose offer this time was (it declined or let expire)
    outcome: str  # why the time is free: cancelled, expired, declined, moved, ...


def offer_of(appt: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(the entry an offer was made for, when its time was freed), or (None, None)."""
    for ext in (appt or {}).get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == OFFER_URL:
            subs = {s.get("url"): s for s in ext.get("extension") or [] if isinstance(s, dict)}
            entry = (subs.get("entry") or {}).get("valueReference", {}).get("reference")
            return entry, (subs.get("freed") or {}).get("valueInstant")
    return None, None


def _freed(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    if old is None or old.get("status") not in TAKING or not old.get("start"):
        return False
    if new is None or new.get("status") in ("cancelled", "noshow", "entered-in-error"):
        return True
    return new.get("status") in TAKING and (old.get("start"), old.get("end")) != (
        new.get("start"), new.get("end"))


def _priority(entry: dict[str, Any]) -> int:
    value = entry.get("priority")
    return value if isinstance(value, int) and 1 <= value <= 9 else 5


def _passed_key(window: Window) -> str:
    return f"{format_instant(window.start)}|{'|'.join(sorted(window.actors))}"


def _passed(entry: dict[str, Any]) -> set[str]:
    return {str(e.get("valueString")) for e in entry.get("extension") or []
            if isinstance(e, dict) and e.get("url") == PASSED_URL}


def _visit_tokens(appt: dict[str, Any]) -> list[str]:
    out = []
    for concept in [appt.get("appointmentType"), *(appt.get("serviceType") or [])]:
        for coding in (concept or {}).get("coding") or []:
            if coding.get("code"):
                system = coding.get("system")
                out.append(f"{system}|{coding['code']}" if system else str(coding["code"]))
    return list(dict.fromkeys(out))


def _periods(entry: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    out = []
    for p in entry.get("requestedPeriod") or []:
        try:
            start = parse_instant(str(p["start"])) if p.get("start") else datetime.min.replace(
                tzinfo=UTC)
            end = parse_instant(str(p["end"])) if p.get("end") else datetime.max.replace(
                tzinfo=UTC)
        except (ValueError, KeyError):
            continue
        out.append((start, end))
    return out


class Offerer:
    def __init__(self, resources: ResourceService, find: FindService, *,
                 offer_seconds: int, channels: tuple[str, ...], batch: int = 200,
                 poll_seconds: float = 0.1) -> None:
        self.resources = resources
        self.find = find
        self.store = resources.store
        self.offer_seconds = offer_seconds
        self.channels = channels
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.cursor = Cursor(self.store, CURSOR)

    async def step(self) -> int:
        return await self.note_freed() + await self.offer_pending()

    async def run(self) -> None:
        await forever(self.step, "waitlist offering", log, self.poll_seconds,
                      lambda: self.cursor.settle(False, 0))

    async def _anyone_waiting(self) -> bool:
        """Whether any waitlist entry exists: one indexed lookup per batch of changes, in
        place of reading every change's previous version."""
        page = await self.store.search(Query("Appointment", (
            Entry("status", (Cond("val", "=", "waitlist"),)),), count=1))
        return bool(page.rows)

    # -- 1. freed time ---------------------------------------------------------------------
    async def note_freed(self) -> int:
        start, changes = await self.cursor.read(self.batch)
        if not changes:
            return 0
        end = changes[-1].seq
        windows: list[tuple[str, dict[str, Any]]] = []
        closing: list[tuple[str, str, str | None, str]] = []  # (entry, offer, freed, updated)
        # Nobody waiting: no time to offer and no entry to close (an offer's entry waits until
        # its offer is booked), so the batch's changes need not be read at all.
        for rec in changes if await self._anyone_waiting() else ():
            if rec.type not in ("Appointment", "Slot"):
                continue
            old, new = await before_and_after(self.store, rec)
            if rec.type == "Slot":
                if (new or {}).get("status") == "free" and (old or {}).get("status") in (
                        "busy", "busy-tentative") and new:
                    windows.append((f"{WINDOWS}{rec.seq:020d}", {
                        "start": new.get("start"), "end": new.get("end"),
                        "actors": [str((new.get("schedule") or {}).get("reference"))],
                        "freed": rec.updated, "outcome": "slot-freed"}))
                continue
            entry, _freed_at = offer_of(new or old)
            if entry and new and new.get("status") == "booked" and (old or {}).get(
                    "status") != "booked":
                closing.append((entry, rec.id, _freed_at, rec.updated))
            if _freed(old, new):
                assert old is not None
                outcome = ("expired" if entry and (new or {}).get("status") == "cancelled"
                           and _expired(old, rec.updated) else "declined" if entry else
                           str((new or {}).get("status") or "deleted"))
                windows.append((f"{WINDOWS}{rec.seq:020d}", {
                    "start": old["start"], "end": old["end"],
                    "actors": resource_actors(old), "freed": rec.updated,
                    "passed_by": entry, "outcome": outcome}))
                if entry:
                    WAITLIST_OFFERS.labels(outcome).inc()

        if not windows and not closing and not self.cursor.skip(end):
            return len(changes)

        async def run(unit: Unit) -> bool:
            if not await self.cursor.advance(unit, start, end):
                return False
            for key, window in windows:
                await unit.mark_put(key, orjson.dumps(window).decode())
            for entry_ref, offer_id, freed_at, when in closing:
                await self._close(unit, entry_ref, offer_id)
                if freed_at:
                    WAITLIST_FILL_SECONDS.observe(max(0.0, (
                        parse_instant(when) - parse_instant(freed_at)).total_seconds()))
            return True

        moved = await self.resources.atomic(run)
        self.cursor.settle(moved, end)
        if moved:
            for _ in closing:
                WAITLIST_OFFERS.labels("accepted").inc()
        return len(changes)

    async def _close(self, unit: Unit, entry_ref: str, offer_id: str) -> None:
        """An entry whose offer was booked is done: cancelled, saying it was booked."""
        rec = await unit.get("Appointment", entry_ref.split("/", 1)[1])
        entry = body_of(rec)
        if entry is None or entry.get("status") != "waitlist":
            return
        closed = {**entry, "status": "cancelled", "cancelationReason": {
            "coding": [{"system": REASON_SYSTEM, "code": "booked",
                        "display": "Booked from the waitlist"}],
            "text": f"booked from the waitlist as Appointment/{offer_id}"}}
        await self.resources.put_in_unit(unit, CTX, "Appointment", entry["id"], closed,
                                         check_refs=False, authorize=False)

    # -- 2. offers -------------------------------------------------------------------------
    async def offer_pending(self) -> int:
        async def pending(unit: Unit) -> list[tuple[str, str]]:
            return await unit.mark_list(WINDOWS, limit=20)

        found = await self.store.atomic(pending)
        for key, raw in found:
            data = orjson.loads(raw)
            window = Window(key, parse_instant(str(data["start"])),
                            parse_instant(str(data["end"])), tuple(data.get("actors") or ()),
                            str(data.get("freed")), data.get("passed_by"),
                            str(data.get("outcome")))
            await self._offer(window)
        return len(found)

    async def _entries(self, window: Window, now: datetime) -> list[dict[str, Any]]:
        page = await self.store.search(Query("Appointment", (
            Entry("status", (Cond("val", "=", "waitlist"),)),), count=MAX_ENTRIES))
        key = _passed_key(window)
        out = []
        for _id, raw in page.rows:
            entry = orjson.loads(raw)
            if f"Appointment/{entry['id']}" == window.passed_by or key in _passed(entry):
                continue
            if not patient_actors(entry) or not _visit_tokens(entry):
                continue
            periods = _periods(entry)
            if periods and not any(s < window.end and e > max(window.start, now)
                                   for s, e in periods):
                continue
            preferred = set(resource_actors(entry))
            if preferred and not preferred & set(window.actors):
                continue  # wants someone or somewhere else
            out.append(entry)
        return sorted(out, key=lambda e: (_priority(e), str(e.get("created") or e.get(
            "meta", {}).get("lastUpdated", "")), -len(set(resource_actors(e)) & set(
                window.actors))))

    async def _offer(self, window: Window) -> None:
        now = datetime.now(UTC)
        start = max(window.start, now + timedelta(minutes=1))
        candidates = await self._entries(window, now) if (
            window.end - start >= timedelta(minutes=MIN_MINUTES)) else []
        for entry in candidates[:MAX_TRIED]:
            proposal = await self._fit(entry, window, start)
            if proposal is None:
                continue
            async def hold(unit: Unit, e: dict[str, Any] = entry,
                           p: dict[str, Any] = proposal) -> None:
                await self._hold(unit, window, e, p, now)

            try:
                await self.resources.atomic(hold)
            except _Taken:
                return
            except FhirError as exc:  # the guard or a rule refused this patient: next one
                log.info("waitlist entry %s passed over: %s", entry["id"], exc.status)
                continue
            WAITLIST_OFFERS.labels("made").inc()
            return

        async def done(unit: Unit) -> None:
            await unit.mark_delete(window.key)
            await self._note_passed(unit, window)

        await self.resources.atomic(done)

    async def _fit(self, entry: dict[str, Any], window: Window, start: datetime
                   ) -> dict[str, Any] | None:
        end = window.end
        for s, e in _periods(entry) or [(start, end)]:
            lo, hi = max(start, s), min(end, e)
            if hi - lo < timedelta(minutes=MIN_MINUTES):
                continue
            practitioners = [a for a in window.actors
                             if a.startswith(("Practitioner/", "PractitionerRole/"))]
            locations = [a for a in window.actors if a.startswith("Location/")]
            try:
                found = await self.find.find(CTX, FindRequest(
                    start=lo, end=hi, visit_type=_visit_tokens(entry),
                    practitioner=practitioners, location=locations,
                    patient=patient_actors(entry)[:1], count=1))
            except FhirError:
                return None
            if found.proposals:
                return found.proposals[0]
        return None

    async def _hold(self, unit: Unit, window: Window, entry: dict[str, Any],
                    proposal: dict[str, Any], now: datetime) -> None:
        if not await unit.mark_delete(window.key):
            raise _Taken
        await self._note_passed(unit, window)
        expires = format_instant(now + timedelta(seconds=self.offer_seconds))
        offer = {k: v for k, v in proposal.items() if k not in ("id", "meta")}
        offer["status"] = "pending"
        patient = patient_actors(entry)[0]
        participants = [p for p in offer.get("participant") or []
                        if not str(((p or {}).get("actor") or {}).get("reference", ""))
                        .startswith("Patient/")]
        offer["participant"] = [*({**p, "status": "tentative"} for p in participants),
                                {"actor": {"reference": patient}, "required": "required",
                                 "status": "needs-action"}]
        offer = set_ext(offer, HOLD_EXPIRES, {"valueInstant": expires})
        offer["extension"] = [*(offer.get("extension") or []), {"url": OFFER_URL, "extension": [
            {"url": "entry", "valueReference": {"reference": f"Appointment/{entry['id']}"}},
            {"url": "freed", "valueInstant": window.freed_at}]}]
        offer_id = new_id()
        prepared = self.resources.prepare("Appointment", {**offer, "id": offer_id}, offer_id)
        await self.resources.put_in_unit(unit, HOLDER, "Appointment", offer_id, prepared)
        body = body_of(await unit.get("Patient", patient.split("/", 1)[1], decides=False))
        channels = tuple(r.reachable(body, self.channels, ()))
        if channels:
            planned = r.Planned(f"{offer_id}/offer", channels, timedelta(0), now,
                                r.patient_zone(body, ZoneInfo("UTC")).key)
            rid = "off-" + hashlib.sha256(planned.key.encode()).hexdigest()[:40]
            await self.resources.put_in_unit(unit, CTX, "CommunicationRequest", rid,
                                             r.request_body(planned, offer_id, patient,
                                                            str(offer["start"]), now, "offer",
                                                            planned.zone),
                                             check_refs=False, authorize=False)

    async def _note_passed(self, unit: Unit, window: Window) -> None:
        """The entry that let this time pass is not asked about it again."""
        if not window.passed_by:
            return
        rec = await unit.get("Appointment", window.passed_by.split("/", 1)[1])
        entry = body_of(rec)
        if entry is None or entry.get("status") != "waitlist":
            return
        key = _passed_key(window)
        if key in _passed(entry):
            return
        noted = {**entry, "extension": [*(entry.get("extension") or []),
                                        {"url": PASSED_URL, "valueString": key}]}
        await self.resources.put_in_unit(unit, CTX, "Appointment", entry["id"], noted,
                                         check_refs=False, authorize=False)


def _expired(old: dict[str, Any], when: str) -> bool:
    expiry = hold_expiry(old)
    return expiry is not None and parse_instant(expiry) <= parse_instant(when)

