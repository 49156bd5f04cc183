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
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

REGISTRY = CollectorRegistry(auto_describe=True)
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds; a read takes about 0.15 ms of CPU, a booking a few ms, a search up to the budget.
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0, 30.0)

REQUESTS = Counter(
    "fhir_sched_http_requests", "HTTP requests answered, by FHIR interaction, type and status",
    ("interaction", "type", "status"), registry=REGISTRY)
REQUEST_SECONDS = Histogram(
    "fhir_sched_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by FHIR interaction",
    ("interaction",), buckets=_LATENCY, registry=REGISTRY)
DISCONNECTS = Counter(
    "fhir_sched_http_client_disconnects",
    "Requests the client abandoned before the response was sent", registry=REGISTRY)
IN_FLIGHT = Gauge(
    "fhir_sched_http_requests_in_flight", "HTTP requests being handled now", registry=REGISTRY)

BOOKING_REFUSALS = Counter(
    "fhir_sched_booking_conflicts",
    "Bookings the guard refused (or, from a calendar of record, recorded with a flag), by rule",
    ("rule", "outcome"), registry=REGISTRY)
HOLDS_EXPIRED = Counter(
    "fhir_sched_holds_expired", "Expired holds the sweeper cancelled", registry=REGISTRY)
HOLDS_PENDING = Gauge(
    "fhir_sched_holds_pending",
    "Appointments in status pending (holds, expired ones not yet swept included), read at "
    "scrape time", registry=REGISTRY)

STORE_SECONDS = Histogram(
    "fhir_sched_store_operation_duration_seconds",
    "Time spent in the store, by operation (get, search, atomic: a write unit and its commit)",
    ("store", "operation"), buckets=_LATENCY, registry=REGISTRY)

HL7V2_MESSAGES = Counter(
    "fhir_sched_hl7v2_messages", "Inbound HL7 v2 messages answered, by event and ACK code",
    ("door", "event", "ack"), registry=REGISTRY)
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
    """Time an adapter coroutine into STORE_SECONDS (the child is bound once, here, so a
    call pays for one clock read on each side and one observe)."""
    child = STORE_SECONDS.labels(store, operation)

    def wrap(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                child.observe(time.perf_counter() - started)
        return run
    return wrap


def render() -> bytes:
    """The exposition text of every metric in the registry."""
    return generate_latest(REGISTRY)


def value(name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's current value (0 when absent): what tests and the demo read."""
    got: Any = REGISTRY.get_sample_value(name, labels or {})
    return float(got or 0.0)
