"""The server's Prometheus metrics: one registry per process, every metric declared here.

Declared in one place so the names an operator's dashboards and alerts depend on are seen
together and never drift between the doors that feed them. Labels carry only bounded,
non-identifying values (an interaction, a resource type, a status code, an ACK code): never
an id, a query value or a sender's free text, so no metric can hold PHI or grow without bound.

The registry is the process's own, not prometheus-client's global one, so a library that
registers metrics on import cannot change what ``/metrics`` exposes; it still carries the
standard process and Python collectors (memory, CPU, file descriptors, garbage collection).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Coroutine, Iterable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds; a read takes about 0.15 ms of CPU, a booking a few ms, a search up to the budget.
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0, 30.0)

class LoopCounter:
    """A labelled counter for the event loop's own hot path: a dict add per event instead of
    prometheus-client's locked child (which cost ~4% of a read with the histogram beside it).
    Only ever touched from the event-loop thread; ``Fast`` exposes it at scrape time."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount


class LoopHistogram:
    """The histogram counterpart of LoopCounter: per label set, one count per bucket (not
    cumulative until scraped) and the sum."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...],
                 buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.labels, self.buckets = name, doc, labels, buckets
        self.bounds = [*(repr(float(b)) for b in buckets), "+Inf"]  # the "le" label values
        self.series: dict[tuple[str, ...], list[float]] = {}  # counts..., +Inf count, sum

    def observe(self, key: tuple[str, ...], value: float) -> None:
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = [0.0] * (len(self.buckets) + 2)
        row[bisect_left(self.buckets, value)] += 1
        row[-1] += value


class LoopGauge:
    def __init__(self, name: str, doc: str) -> None:
        self.name, self.doc = name, doc
        self.value = 0.0


class _Fast(Collector):
    def __init__(self, *series: LoopCounter | LoopHistogram | LoopGauge) -> None:
        self.series = series

    def collect(self) -> Iterable[Metric]:
        for s in self.series:
            if isinstance(s, LoopCounter):
                counter = CounterMetricFamily(s.name, s.doc, labels=s.labels)
                for key, v in list(s.values.items()):
                    counter.add_metric(key, v)
                yield counter
            elif isinstance(s, LoopHistogram):
                histogram = HistogramMetricFamily(s.name, s.doc, labels=s.labels)
                for key, row in list(s.series.items()):
                    running, cumulative = 0.0, []
                    for bound, n in zip(s.bounds, row[:-1], strict=True):
                        running += n
                        cumulative.append((bound, running))
                    histogram.add_metric(key, cumulative, row[-1])
                yield histogram
            else:
                yield GaugeMetricFamily(s.name, s.doc, value=s.value)


REQUESTS = LoopCounter(
    "fhir_sched_http_requests", "HTTP requests answered, by FHIR interaction, type and status",
    ("interaction", "type", "status"))
REQUEST_SECONDS = LoopHistogram(
    "fhir_sched_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by FHIR interaction",
    ("interaction",), _LATENCY)
DISCONNECTS = LoopCounter(
    "fhir_sched_http_client_disconnects",
    "Requests the client abandoned before the response was sent", ())
IN_FLIGHT = LoopGauge(
    "fhir_sched_http_requests_in_flight", "HTTP requests being handled now")
STORE_SECONDS = LoopHistogram(
    "fhir_sched_store_operation_duration_seconds",
    "Time spent in the store, by operation (search; atomic: a write unit and its commit; a "
    "read by id is the read interaction's own latency)",
    ("store", "operation"), _LATENCY)
LOOP_LAG = LoopHistogram(
    "fhir_sched_event_loop_lag_seconds",
    "How much later than asked a 100 ms timer fired: time the event loop was held",
    (), (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
REGISTRY.register(_Fast(REQUESTS, REQUEST_SECONDS, DISCONNECTS, IN_FLIGHT, STORE_SECONDS,
                        LOOP_LAG))

BOOKING_REFUSALS = Counter(
    "fhir_sched_booking_conflicts",
    "Bookings the guard refused (or, from a calendar of record, recorded with a flag), by rule",
    ("rule", "outcome"), registry=REGISTRY)
ELIGIBILITY_CHECKS = Counter(
    "fhir_sched_eligibility_checks",
    "Eligibility questions put to the checker, by checker (local, http) and verdict "
    "(eligible, not-eligible, unverified: it failed, timed out or answered an error)",
    ("checker", "verdict"), registry=REGISTRY)
STORE_RETRIES = Counter(
    "fhir_sched_store_unit_retries",
    "Units of work run again after losing a race (a write conflict) to another unit",
    ("store",), registry=REGISTRY)
HOLDS_EXPIRED = Counter(
    "fhir_sched_holds_expired", "Expired holds the sweeper cancelled", registry=REGISTRY)
HOLDS_PENDING = Gauge(
    "fhir_sched_holds_pending",
    "Appointments in status pending (holds, expired ones not yet swept included), read at "
    "scrape time", registry=REGISTRY)

HL7V2_MESSAGES = Counter(
    "fhir_sched_hl7v2_messages", "Inbound HL7 v2 messages answered, by event and ACK code",
    ("door", "event", "ack"), registry=REGISTRY)
NOTICES = Counter(
    "fhir_sched_notices",
    "Notice deliveries finished (reminders, cancellations, offers), by channel (email, sms, "
    "webhook), kind and outcome (sent; failed: put on hold for staff; skipped: opted out or "
    "no address)", ("channel", "kind", "outcome"), registry=REGISTRY)
NOTICE_ATTEMPTS = Counter(
    "fhir_sched_notice_attempts",
    "Notice send attempts, by channel and result (ok, retry, failed, in-doubt: an attempt "
    "repeated because a server stopped between sending and recording it)",
    ("channel", "result"), registry=REGISTRY)
SUBSCRIPTION_NOTIFICATIONS = Counter(
    "fhir_sched_subscription_notifications",
    "Subscription notifications POSTed, by type (handshake, heartbeat, event-notification) "
    "and result (ok: a 2xx answer; failed)", ("type", "result"), registry=REGISTRY)
WAITLIST_OFFERS = Counter(
    "fhir_sched_waitlist_offers",
    "Waitlist offers, by outcome: made (a hold placed for a waiting patient), accepted "
    "(booked), declined, expired", ("outcome",), registry=REGISTRY)
WAITLIST_FILL_SECONDS = Histogram(
    "fhir_sched_waitlist_time_to_fill_seconds",
    "From time being freed to its waitlist offer being booked",
    buckets=(10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600), registry=REGISTRY)
HL7V2_OUTBOUND = Counter(
    "fhir_sched_hl7v2_outbound_messages",
    "Outbound SIU deliveries finished, by the subscriber's ACK code (or 'unreachable')",
    ("ack",), registry=REGISTRY)

P = ParamSpec("P")
T = TypeVar("T")

# Known values only, so a label stays bounded whatever arrives on the wire.
HL7V2_EVENTS = frozenset({f"S{n:02d}" for n in range(12, 27)})
ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})


def hl7v2_event_label(event: str) -> str:
    return event if event in HL7V2_EVENTS else "other"


def ack_label(code: str) -> str:
    return code if code in ACK_CODES else "other"


def timed_store(store: str, operation: str) -> Callable[
        [Callable[P, Coroutine[Any, Any, T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Time an adapter coroutine into STORE_SECONDS: a clock read on each side and one
    observe. The adapters' coroutines run on the event loop (their threads do the I/O)."""
    key = (store, operation)
    observe = STORE_SECONDS.observe

    def wrap(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                observe(key, time.perf_counter() - started)
        return run
    return wrap


def render() -> bytes:
    """The exposition text of every metric in the registry."""
    return generate_latest(REGISTRY)
