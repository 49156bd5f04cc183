"""The composition root: builds the running parts for every door and tool.

The server, the demo loader, the CLI and the benchmarks all get their store and services from
``build``, so none of them can end up with a write path that skips a rule: the write rules
(the booking guard among them) are declared with their resource types and run by the one write
pipeline, and the authorization policy is chosen here once. No web imports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from .service.authorization import Authorizer, OpenPolicy
from .service.booking import BookingService
from .service.bundles import BundleProcessor
from .service.find import FindService
from .service.resources import ResourceService
from .service.search import SearchService
from .service.services import Services
from .service.sweeper import Sweeper
from .settings import Settings
from .storage import open_store
from .storage.base import DocumentStore
from .writes import WriteConfig


@dataclass(frozen=True, slots=True)
class Core:
    """Everything a process runs: the services, and the background jobs to start with it."""

    services: Services
    background: tuple[Callable[[], Awaitable[None]], ...]

    @property
    def store(self) -> DocumentStore:
        return self.services.store

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        await self.store.close()


def build(settings: Settings, authorizer: Authorizer | None = None,
          store: DocumentStore | None = None) -> Core:
    store = store or open_store(settings)
    policy = authorizer or OpenPolicy()
    resources = ResourceService(
        store, policy, WriteConfig(past_grace=timedelta(seconds=settings.past_grace_seconds)))
    search = SearchService(store, policy, settings.default_count, settings.max_count)
    booking = BookingService(resources, settings.hold_seconds)
    sweeper = Sweeper(booking, settings.sweep_seconds)
    services = Services(
        settings=settings, store=store, resources=resources, search=search,
        bundles=BundleProcessor(resources, search), find=FindService(store, policy),
        booking=booking, sweeper=sweeper)
    return Core(services, (sweeper.run,))
