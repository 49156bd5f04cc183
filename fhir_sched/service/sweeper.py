"""The sweeper: cancels expired holds and frees their Slots, on a timer.

Correctness never waits for it (an expired hold's claims stop counting the moment it expires);
it keeps the data tidy for readers and makes the cancellation visible in the change feed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import orjson

from ..context import RequestContext
from ..errors import FhirError
from ..logsafe import describe
from ..metrics import HOLDS_EXPIRED
from ..query import Cond, Entry, Query
from ..scheduling.extensions import hold_expiry
from ..storage.base import Unit
from ..timeutil import now_instant
from .booking import BookingService

log = logging.getLogger("fhir_sched.sweeper")
PENDING = Query("Appointment", (Entry("status", (Cond("val", "=", "pending"),)),))


class Sweeper:
    def __init__(self, booking: BookingService, every_seconds: int) -> None:
        self.booking = booking
        self.store = booking.store
        self.every_seconds = every_seconds

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
            except Exception as exc:  # the sweeper must outlive a passing store outage
                log.error("sweeper run failed: %s", describe(exc))


