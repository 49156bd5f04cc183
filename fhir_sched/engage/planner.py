"""The reminder planner: follows the change feed and keeps each booking's reminders (its
CommunicationRequests) equal to what ``reminders.plan`` says it is owed.

It reads forward from a cursor kept in the store, and writes the reminders of a batch of
changes and the new cursor in ONE unit, after checking the cursor is still where it read it:
several server processes may run it, and a crash anywhere repeats at most a batch, which the
deterministic ids make harmless. The planner reads each appointment as it is now (not as the
change had it), so a batch holding a booking and its cancellation plans for the cancellation.

Per appointment, against the reminders already stored (found by ``based-on``):
- owed and not there: created; owed and there at another time (a reschedule): moved;
- there and no longer owed (cancelled, no-show, moved closer than the lead): revoked;
- cancelled or moved after an email with a calendar invitation went out: a cancellation or an
  updated invitation is owed at once, by email, so the patient's calendar follows.
Every write goes through the one write pipeline as the system, so it is audited and in the
feed like any other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ..context import RequestContext
from ..query import Cond, Entry, Query
from ..scheduling.booking_rules import clinic_zone
from ..scheduling.guard import booked_visit_type, patient_actors, resource_actors
from ..scheduling.templates import schedule_zone
from ..service.resources import ResourceService
from ..storage.base import Record, Unit
from ..timeutil import parse_instant
from . import reminders as r
from .follow import Cursor, body_of, forever

log = logging.getLogger("fhir_sched.engage.reminders")

CURSOR = "engage/reminder-planner"
CTX = RequestContext.system("reminders")
MAX_PER_APPOINTMENT = 100  # notices read per booking: the rules allow 10 leads
QUIET_SECONDS = 0.3  # the feed still for this long: no burst of writes under way
MAX_LAG_SECONDS = 30.0  # planning never falls further behind the feed than this


class Planner:
    def __init__(self, resources: ResourceService, *, leads: Sequence[timedelta],
                 channels: Sequence[str], quiet: Any, batch: int = 100,
                 poll_seconds: float = 0.2) -> None:
        self.resources = resources
        self.store = resources.store
        self.leads = tuple(leads)
        self.channels = tuple(channels)  # configured on this server
        self.quiet = quiet
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.cursor = Cursor(self.store, CURSOR)
        self._head = (0, 0.0)  # the newest change seen, and when it was first seen

    def _defer(self, changes: Sequence[Record], head: int, now: datetime) -> bool:
        """Whether to wait: bookings are coming in (the feed moved within ``QUIET_SECONDS``,
        and not only by the server's own jobs) and the oldest change not planned for is
        younger than ``MAX_LAG_SECONDS``. Reminders are due hours ahead, so planning them a
        moment later costs nothing, while planning them during a burst of bookings would take
        the store's writer from the bookings. Under load that never pauses, planning still
        runs once the lag reaches its bound, so it never falls further behind than that."""
        clock = time.monotonic()
        if head != self._head[0]:
            self._head = (head, clock)
        if clock - self._head[1] >= QUIET_SECONDS:
            return False
        if all(c.origin.door == "system" for c in changes):
            return False
        return now - parse_instant(changes[0].updated) < timedelta(seconds=MAX_LAG_SECONDS)

    async def run(self) -> None:
        await forever(self.step, "reminder planning", log, self.poll_seconds,
                      lambda: self.cursor.settle(False, 0))

    async def step(self) -> int:
        """Plan for the next batch of changes; how many changes were read."""
        start, changes = await self.cursor.read(self.batch)
        if not changes:
            return 0
        end = changes[-1].seq
        now = datetime.now(UTC)
        if self._defer(changes, await self.store.last_position(), now):
            return 0
        appointments = list(dict.fromkeys(c.id for c in changes if c.type == "Appointment"))
        if not appointments and not self.cursor.skip(end):
            return len(changes)

        async def run(unit: Unit) -> bool:
            if not await self.cursor.advance(unit, start, end):
                return False  # another process planned these: read on from where it got
            for appointment_id in appointments:
                await self._reconcile(unit, appointment_id, now)
            return True

        self.cursor.settle(await self.resources.atomic(run), end)
        return len(changes)

    # -- one appointment -------------------------------------------------------------------
    async def _reconcile(self, unit: Unit, appointment_id: str, now: datetime) -> None:
        rec = await unit.get("Appointment", appointment_id, decides=False)
        appt = body_of(rec)
        stored = [orjson.loads(body) for _id, body in await unit.find_bodies(Query(
            "CommunicationRequest", (Entry("based-on", (Cond(
                "val", "=", f"Appointment/{appointment_id}"),), unique=True),),
            count=MAX_PER_APPOINTMENT), MAX_PER_APPOINTMENT)]
        active = {r.key_of(b): b for b in stored
                  if b.get("status") == "active" and r.kind_of(b) == "reminder" and r.key_of(b)}
        owed: list[r.Planned] = []
        patients = patient_actors(appt) if appt else []
        if appt is not None and patients and self.channels:
            owed = await self._owed(unit, appointment_id, appt, patients[0], now)
        for planned in owed:
            have = active.pop(planned.key, None)
            if have is None:
                assert rec is not None and appt is not None
                body = r.request_body(planned, appointment_id, patients[0], appt["start"], now,
                                      zone=planned.zone)
                rid = r.request_id(planned.key, rec.version)
                if await unit.get("CommunicationRequest", rid) is None:
                    await self._put(unit, rid, body)
            elif (parse_instant(str(have.get("occurrenceDateTime"))) != planned.due
                  or r.channels_of(have) != planned.channels
                  or have.get("subject") != {"reference": patients[0]}):
                assert appt is not None
                fresh = r.request_body(planned, appointment_id, patients[0], appt["start"], now,
                                       zone=planned.zone)
                await self._put(unit, have["id"], {
                    **have, **{k: fresh[k] for k in ("occurrenceDateTime", "medium",
                                                     "extension", "note", "subject",
                                                     "recipient")}})
        for stale in active.values():
            if r.is_due(stale, now) and appt is not None and appt.get("status") in r.REMINDED:
                continue  # due now and still owed: the delivery worker has it in hand
            await self._put(unit, stale["id"], {**stale, "status": "revoked"})
        if rec is not None and appt is not None and patients:
            await self._follow_invitation(unit, appointment_id, rec.version, appt, patients[0],
                                          stored, now)

    async def _owed(self, unit: Unit, appointment_id: str, appt: dict[str, Any], patient: str,
                    now: datetime) -> list[r.Planned]:
        booked = await booked_visit_type(unit, appt)
        notices = booked[0].notices if booked else None
        leads = self.leads if notices is None or notices.leads is None else notices.leads
        if not leads:
            return []
        body = body_of(await unit.get("Patient", patient.split("/", 1)[1], decides=False))
        channels = r.reachable(body, self.channels, notices.channels if notices else ())
        if not channels:
            return []
        zone = r.patient_zone(body, await self._clinic_zone(unit, appt, booked))
        return r.plan(appointment_id, appt, leads, channels, zone, self.quiet, now)

    async def _clinic_zone(self, unit: Unit, appt: dict[str, Any], booked: Any) -> ZoneInfo:
        if booked is not None:
            zone = clinic_zone(booked[1])
            if zone.key != "UTC":
                return zone
        for actor in resource_actors(appt)[:4]:
            for sid in await unit.find_ids(Query("Schedule", (Entry("actor", (Cond(
                    "val", "=", actor),), unique=True),)), limit=1, decides=False):
                found = schedule_zone(body_of(await unit.get("Schedule", sid, decides=False))
                                      or {})
                if found is not None:
                    return found
        return ZoneInfo("UTC")

    async def _follow_invitation(self, unit: Unit, appointment_id: str, version: int,
                                 appt: dict[str, Any], patient: str,
                                 stored: list[dict[str, Any]], now: datetime) -> None:
        """A calendar that holds the visit (an email reminder carried the invitation) is
        told when it is cancelled or moved: one notice per such change, by email."""
        if "email" not in self.channels:
            return
        sent = [b for b in stored if b.get("status") == "completed" and "email" in
                r.channels_of(b) and r.kind_of(b) in ("reminder", "update")]
        if not sent:
            return
        last_start = r.visit_start(max(sent, key=lambda b: str(b.get("authoredOn", ""))))
        if appt.get("status") in ("cancelled", "noshow", "entered-in-error"):
            kind = "cancellation"
        elif appt.get("status") in r.REMINDED and last_start and appt.get("start") and (
                parse_instant(last_start) != parse_instant(str(appt["start"]))):
            kind = "update"
        else:
            return
        if any(r.kind_of(b) == kind and b.get("status") in ("active", "completed")
               and r.visit_start(b) == str(appt.get("start")) for b in stored):
            return
        zone = str(r.patient_zone(sent[-1], ZoneInfo("UTC")).key)  # as the reminder had it
        planned = r.Planned(f"{appointment_id}/{kind}", ("email",), timedelta(0), now, zone)
        rid = r.request_id(planned.key, version)
        if await unit.get("CommunicationRequest", rid) is None:
            await self._put(unit, rid, r.request_body(planned, appointment_id, patient,
                                                      str(appt.get("start")), now, kind, zone))

    async def _put(self, unit: Unit, id_: str, body: dict[str, Any]) -> None:
        await self.resources.put_in_unit(unit, CTX, "CommunicationRequest", id_, body,
                                         check_refs=False, authorize=False)
