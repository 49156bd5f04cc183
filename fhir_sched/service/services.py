"""The application services one running server offers its doors, as one value.

Built by ``compose`` (the only place that wires them), handed to REST, operations and (next)
the MLLP listener; nothing here is web-specific.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings
from ..storage.base import DocumentStore
from .audit import AuditLog
from .booking import BookingService
from .bundles import BundleProcessor
from .calendar_feeds import CalendarFeeds
from .eligibility import EligibilityService
from .export_jobs import ExportJobs
from .find import FindService
from .publish import Publisher
from .resources import ResourceService
from .search import SearchService
from .sweeper import Sweeper


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: DocumentStore
    resources: ResourceService
    search: SearchService
    bundles: BundleProcessor
    find: FindService
    booking: BookingService
    sweeper: Sweeper
    audit: AuditLog
    exports: ExportJobs
    eligibility: EligibilityService
    feeds: CalendarFeeds
    publisher: Publisher
