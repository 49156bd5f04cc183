"""The composition root: builds the running parts for every door and tool.

The server, the demo loader, the CLI and the benchmarks all get their store and services from
``build``, so none of them can end up with a write path that skips a rule: the write rules
(the booking guard among them) are declared with their resource types and run by the one write
pipeline, and the authorization policy is chosen here once. No web imports.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from .auth.policy import SmartPolicy
from .auth.server import SmartAuth
from .engage.setup import Engagement, engagement
from .errors import FhirError
from .hl7v2.bridge import Bridge
from .hl7v2.door import MllpDoor, load_senders
from .hl7v2.inbox import keep_raw_for
from .hl7v2.outbox import Outbound
from .looplag import watch_loop
from .metrics_share import share
from .search.parse import SearchLimits
from .service.audit import AuditLog
from .service.audit import keep_for as keep_audit_for
from .service.authorization import Authorizer
from .service.booking import BookingService
from .service.bundles import BundleProcessor
from .service.calendar_feeds import CalendarFeeds
from .service.cds import CdsHooks
from .service.eligibility import Checker, EligibilityService, HttpChecker, LocalChecker
from .service.export_jobs import ExportJobs
from .service.find import FindService
from .service.measures import warm as warm_measures
from .service.publish import Publisher
from .service.resources import ResourceService
from .service.search import SearchService
from .service.series import SeriesBooking
from .service.services import Services
from .service.sweeper import Sweeper
from .settings import Settings
from .storage import open_store
from .storage.base import DocumentStore
from .writes import WriteConfig

log = logging.getLogger("fhir_sched")

# How long shutdown waits for the background jobs to finish their last round (the audit log's
# final write among them) before it gives up on them and closes the store.
JOB_STOP_SECONDS = 10.0


class Door(Protocol):
    """A listener the process runs beside HTTP (the MLLP door): started after the store, so its
    first message finds the store open, and stopped before it, so no message is cut short."""

    name: str  # for readiness checks

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def ready(self) -> bool:
        """Accepting connections now."""
        ...


@dataclass(frozen=True, slots=True)
class Core:
    """Everything a process runs: the services, the HL7 v2 bridge, the listeners beside HTTP
    and the background jobs to start with it."""

    services: Services
    background: tuple[Callable[[], Awaitable[None]], ...]
    hl7v2: Bridge
    doors: tuple[Door, ...] = ()
    # The embedded SMART server and token check; None when auth is off.
    auth: SmartAuth | None = None
    # Reminders and other notices: their channels, and the signed links messages carry.
    engagement: Engagement | None = None

    @property
    def store(self) -> DocumentStore:
        return self.services.store

    async def start(self) -> None:
        await self.store.start()
        started: list[Door] = []
        try:
            if self.auth is not None:
                await self.auth.start()
            for door in self.doors:
                await door.start()
                started.append(door)
        except BaseException:
            for door in reversed(started):
                await door.stop()
            await self.store.close()
            raise

    async def close(self) -> None:
        for door in reversed(self.doors):
            await door.stop()
        await self.services.exports.close()
        await self.store.close()

    def start_jobs(self) -> list[asyncio.Task[None]]:
        return [asyncio.ensure_future(job()) for job in self.background]


async def stop_jobs(tasks: list[asyncio.Task[None]], patience: float = JOB_STOP_SECONDS) -> None:
    """Cancel the background jobs and wait until each has finished its cancellation.

    One ``cancel()`` is not enough: on Python 3.11 ``asyncio.wait_for`` drops a cancellation
    that arrives as its inner call completes (CPython gh-86296), and the MongoDB driver awaits
    through it, so a job cancelled mid-write could carry on into its next sleep. Shutdown then
    hung until the supervisor's SIGKILL, and the audit entries still queued were lost. A job
    still running 2 s after the first cancel is cancelled again every half second, for up to
    ``patience`` seconds (the 2 s first: a job's own cleanup, such as the outbound sender
    handing its endpoints over, is not cut short by a second cancel while it runs).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    pending = {t for t in tasks if not t.done()}
    wait = min(2.0, patience)
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=wait)
        wait = 0.5
        if pending and loop.time() > deadline:
            log.error("%d background job(s) ignored shutdown for %.0f s; closing anyway",
                      len(pending), patience)
            break
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            log.error("background job ended with %s", type(t.exception()).__name__)


def export_directory(settings: Settings) -> Path:
    """Where ``$export`` files go: FHIR_SCHED_EXPORT_DIR, else beside a SQLite store, else in
    the system temp directory (fine for one machine; several must share a directory)."""
    if settings.export_dir:
        return Path(settings.export_dir)
    if settings.store.startswith("sqlite:"):
        from .storage.sqlite import path_from_url

        return Path(path_from_url(settings.store)).resolve().parent / "fhir-sched-exports"
    return Path(tempfile.gettempdir()) / "fhir-sched-exports"


def build(settings: Settings, authorizer: Authorizer | None = None,
          store: DocumentStore | None = None) -> Core:
    store = store or open_store(settings)
    # The scope policy; a context without a token (auth off, MLLP, the server's own jobs)
    # falls back to the open policy's compartment rule inside it.
    policy = authorizer or SmartPolicy()
    resources = ResourceService(
        store, policy, WriteConfig(past_grace=timedelta(seconds=settings.past_grace_seconds),
                                   max_appointment=timedelta(
                                       hours=settings.max_appointment_hours),
                                   max_recorded=timedelta(
                                       hours=settings.max_recorded_appointment_hours),
                                   eligibility_remote=bool(settings.eligibility_url),
                                   eligibility_ttl=timedelta(
                                       minutes=settings.eligibility_cache_minutes),
                                   eligibility_refuse=settings.eligibility_on_failure
                                   == "refuse",
                                   telehealth_template=settings.telehealth_url_template,
                                   subscription_endpoints=("https://", *(
                                       p.strip() for p in settings.subscription_endpoints
                                       .split(",") if p.strip()))))
    search = SearchService(store, policy, settings.default_count, settings.max_count,
                           SearchLimits(settings.search_max_params,
                                        settings.search_max_or_values,
                                        settings.search_max_includes,
                                        settings.search_max_sort_keys))
    booking = BookingService(resources, settings.hold_seconds)
    sweeper = Sweeper(booking, settings.sweep_seconds, timedelta(
        minutes=settings.noshow_grace_minutes) if settings.noshow_grace_minutes > 0 else None)
    audit = AuditLog(store)
    find = FindService(store, policy)
    resources.audit = search.audit = find.audit = audit
    booking.series = SeriesBooking(resources, find, settings.max_series_occurrences)
    checker: Checker = (HttpChecker(settings.eligibility_url, settings.eligibility_token,
                                    settings.eligibility_timeout_ms / 1000)
                        if settings.eligibility_url else LocalChecker())
    eligibility = EligibilityService(resources, checker, settings.eligibility_timeout_ms / 1000)
    if settings.eligibility_url:
        resources.consult = eligibility.for_booking
    cds = tuple(u.strip() for u in settings.cds_services.split(",") if u.strip())
    if cds:
        booking.cds = CdsHooks(store, cds, settings.cds_timeout_ms / 1000)
    services = Services(
        settings=settings, store=store, resources=resources, search=search,
        bundles=BundleProcessor(resources, search, settings.max_bundle_entries), find=find,
        booking=booking, sweeper=sweeper, audit=audit,
        exports=ExportJobs(store, export_directory(settings),
                           timedelta(hours=settings.export_ttl_hours)),
        eligibility=eligibility, feeds=CalendarFeeds(store, policy, audit),
        publisher=Publisher(store, find, settings))
    bridge = Bridge(services, load_senders(settings))
    doors: tuple[Door, ...] = (MllpDoor(settings, bridge),) if settings.mllp_port else ()
    outbound = Outbound(services, application=settings.hl7v2_application,
                        facility=settings.hl7v2_facility,
                        retry_seconds=settings.hl7v2_retry_ms / 1000,
                        max_attempts=max(1, settings.hl7v2_max_attempts))
    async def retention() -> None:
        await keep_raw_for(store, settings.hl7v2_raw_retention_days)

    async def audit_retention() -> None:
        await keep_audit_for(store, settings.audit_retention_days)

    auth = SmartAuth(store, settings) if settings.auth == "smart" else None
    engage = engagement(resources, settings, find, booking)
    jobs: tuple[Callable[[], Awaitable[None]], ...] = (sweeper.run, outbound.run, retention,
                                                       audit_retention, audit.run, watch_loop,
                                                       *engage.jobs())
    if auth is not None:
        jobs += (auth.follow_revocations,)
    if settings.kpi_warm_days > 0:

        async def warm_kpis() -> None:
            try:
                await warm_measures(store, settings.kpi_warm_days)
            except FhirError as exc:  # too many visits: reports then read their own periods
                log.warning("KPI warm-up skipped: %s", exc.diagnostics)

        jobs += (warm_kpis,)
    if settings.metrics_dir:
        directory = Path(settings.metrics_dir)

        async def share_metrics() -> None:
            await share(directory)

        jobs += (share_metrics,)
    return Core(services, jobs, bridge, doors, auth, engage)
