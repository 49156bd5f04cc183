"""The engagement jobs one process runs, built from the settings: the reminder planner and the
delivery worker, with the channels that are configured (none configured: no jobs, and no
reminders are planned, since nothing could send them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import time, timedelta
from urllib.parse import urlsplit

from ..scheduling.notices import parse_leads
from ..service.booking import BookingService
from ..service.find import FindService
from ..service.resources import ResourceService
from ..settings import Settings
from .channels import Channel, Email, Sms, Webhook
from .delivery import Delivery
from .links import Signer, load_key
from .planner import Planner
from .reminders import quiet_hours
from .socket_hub import Hub
from .subscriptions import Notifier
from .waitlist import Offerer


@dataclass
class Engagement:
    """``signer`` is shared by the delivery worker (signing links) and the link pages
    (checking them): one key, loaded from the store once. ``hub`` holds the websocket
    Subscriptions bound in this process: the door adds sockets, the job delivers to them."""

    resources: ResourceService
    settings: Settings
    channels: dict[str, Channel] = field(default_factory=dict)
    find: FindService | None = None
    booking: BookingService | None = None
    _signer: Signer | None = None
    hub: Hub = field(init=False)

    def __post_init__(self) -> None:
        self.hub = Hub(self.resources.store, base=self.fhir_base(),
                       max_sockets=self.settings.websocket_max,
                       max_bindings=self.settings.websocket_max_bindings)

    async def signer(self) -> Signer:
        if self._signer is None:
            self._signer = Signer(await load_key(self.resources.store,
                                                 self.settings.link_secret))
        return self._signer

    def link_base(self) -> str:
        s = self.settings
        if s.public_base:
            return s.public_base.rstrip("/").removesuffix(s.base_path.rstrip("/"))
        return f"http://{s.host}:{s.port}"

    def fhir_base(self) -> str:
        s = self.settings
        return s.public_base.rstrip("/") if s.public_base else (
            f"http://{s.host}:{s.port}{s.base_path}")

    def jobs(self) -> tuple[Callable[[], Awaitable[None]], ...]:
        s = self.settings
        notifier = Notifier(self.resources, base=self.fhir_base(),
                            max_attempts=s.subscription_max_attempts,
                            retry_seconds=float(s.subscription_retry_seconds),
                            on_progress=self.hub.wake)
        jobs: tuple[Callable[[], Awaitable[None]], ...] = (notifier.run, self.hub.run)
        if self.find is not None:
            jobs += (Offerer(self.resources, self.find, offer_seconds=s.waitlist_offer_seconds,
                             channels=tuple(self.channels)).run,)
        if not self.channels:
            return jobs
        leads, quiet = leads_and_quiet(s)
        planner = Planner(self.resources, leads=leads, channels=tuple(self.channels),
                          quiet=quiet)
        base = self.link_base()
        delivery = Delivery(self.resources, self.channels, signer=self.signer, link_base=base,
                            uid_domain=urlsplit(base).hostname or "fhir-sched.invalid",
                            organizer=s.smtp_from, max_attempts=s.delivery_max_attempts,
                            retry_seconds=float(s.delivery_retry_seconds),
                            concurrency=s.delivery_concurrency,
                            lease_seconds=float(s.delivery_lease_seconds))
        return (*jobs, planner.run, delivery.run)


def engagement(resources: ResourceService, settings: Settings, find: FindService | None = None,
               booking: BookingService | None = None) -> Engagement:
    channels: dict[str, Channel] = {}
    if settings.smtp_host:
        domain = urlsplit(f"//{settings.smtp_from.rpartition('@')[2]}").hostname
        timeout = min(10.0, settings.delivery_lease_seconds / 4)
        channels["email"] = Email(settings.smtp_host, settings.smtp_port,
                                  settings.smtp_from or "fhir-sched@localhost",
                                  security=settings.smtp_security, user=settings.smtp_user,
                                  password=settings.smtp_password,
                                  connections=max(1, settings.delivery_concurrency),
                                  domain=domain or "fhir-sched.invalid", timeout=timeout)
    if settings.sms_url:
        channels["sms"] = Sms(settings.sms_url, settings.sms_token, settings.sms_from, timeout)
    if settings.webhook_url:
        channels["webhook"] = Webhook(settings.webhook_url, settings.webhook_secret, timeout)
    return Engagement(resources, settings, channels, find, booking)


def leads_and_quiet(settings: Settings) -> tuple[tuple[timedelta, ...], tuple[time, time] | None]:
    """The server-wide reminder settings, checked at start: a bad ``FHIR_SCHED_REMINDERS`` or
    ``FHIR_SCHED_QUIET_HOURS`` stops the server with the reason rather than leaving patients
    unreminded."""
    try:
        leads = parse_leads(settings.reminders)
    except ValueError as exc:
        raise SystemExit(f"FHIR_SCHED_REMINDERS: {exc}") from None
    try:
        quiet = quiet_hours(settings.quiet_hours)
    except ValueError as exc:
        raise SystemExit(f"FHIR_SCHED_QUIET_HOURS: {exc}") from None
    return leads, quiet
