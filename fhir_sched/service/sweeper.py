"""The sweeper: cancels expired holds and frees their Slots, on a timer; and, when the clinic
asks for it (``FHIR_SCHED_NOSHOW_GRACE_MINUTES``), marks as no-shows the bookings nobody
arrived for within that grace after their start.

Correctness never waits for it (an expired hold's claims stop counting the moment it expires);
it keeps the data tidy for readers and makes the cancellation visible in the change feed. A
no-show goes through the write pipeline like any status change, so its time, its seats and
its referral visit are given back.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson

from ..context import RequestContext
from ..errors import FhirError
from ..logsafe import describe
from ..metrics import HOLDS_EXPIRED
from ..query import Cond, Entry, Query
from ..scheduling.extensions import hold_expiry
from ..storage.base import Unit
from ..timeutil import now_instant, to_us
from .booking import BookingService

log = logging.getLogger("fhir_sched.sweeper")
PENDING = Query("Appointment", (Entry("status", (Cond("val", "=", "pending"),)),))
SWEEP_BATCH = 500


class Sweeper:
    def __init__(self, booking: BookingService, every_seconds: int,
                 noshow_grace: timedelta | None = None) -> None:
        self.booking = booking
        self.store = booking.store
        self.every_seconds = every_seconds
        self.noshow_grace = noshow_grace

    async def mark_no_shows(self) -> int:
        """Bookings still ``booked`` past their start plus the grace become ``noshow``."""
        if self.noshow_grace is None:
            return 0
        cutoff = to_us(datetime.now(UTC) - self.noshow_grace)
        page = await self.store.search(Query("Appointment", (
            Entry("status", (Cond("val", "=", "booked"),)),
            Entry("date", (Cond("lo", "<", cutoff),))), count=SWEEP_BATCH))
        ctx = RequestContext.system("no-show")
        done = 0
        for id_, _body in page.rows:
            async def mark(unit: Unit, appt_id: str = id_) -> bool:
                rec = await unit.get("Appointment", appt_id)
                if rec is None or rec.deleted or rec.body is None:
                    return False
                appt = orjson.loads(rec.body)
                if appt.get("status") != "booked":  # arrived meanwhile
                    return False
                appt["status"] = "noshow"
                appt.pop("meta", None)
                await self.booking.resources.put_in_unit(unit, ctx, "Appointment", appt_id,
                                                         appt, if_match=rec.version)
                return True

            try:
                done += await self.booking.resources.atomic(mark)
            except FhirError as exc:  # changed under us: the next sweep looks again
                log.info("no-show sweep skipped Appointment/%s: %s", id_, exc.diagnostics)
        return done

    async def sweep(self) -> int:
        """Cancel expired holds and free their Slots. Correctness never waits for this (an
        expired hold's claims stop counting at once); it keeps the data tidy for readers."""
        ctx = RequestContext.system("sweeper")
        page = await self.store.search(replace(PENDING, count=500))
        now = now_instant()
        done = 0
        for id_, body in page.rows:
            appt = orjson.loads(body)
            exp = hold_expiry(appt)
            if exp is None or exp > now:
                continue
            async def cancel(unit: Unit, appt_id: str = id_) -> None:
                await self.booking.cancel_in_unit(unit, ctx, appt_id)

            try:
                await self.booking.resources.atomic(cancel)
                done += 1
                HOLDS_EXPIRED.inc()
            except FhirError as exc:  # changed under us: the next sweep looks again
                log.info("sweeper skipped Appointment/%s: %s", id_, exc.diagnostics)
        return done

    async def pending_count(self) -> int:
        """Appointments in status pending (holds; expired ones not yet swept included)."""
        page = await self.store.search(replace(PENDING, total=True, count_only=True))
        return page.total or 0

    async def run(self) -> None:
        """Sweep every ``every_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(self.every_seconds)
            try:
                n = await self.sweep()
                if n:
                    log.info("sweeper cancelled %d expired holds", n)
                n = await self.mark_no_shows()
                if n:
                    log.info("sweeper marked %d bookings as no-shows", n)
            except Exception as exc:  # the sweeper must outlive a passing store outage
                log.error("sweeper run failed: %s", describe(exc))


