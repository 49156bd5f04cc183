"""Each Subscription's events and the notification Bundles that carry them (Subscriptions R5
Backport IG 1.1.0, R4 form): kept in the store so numbers never skip or repeat across
restarts and processes, and so ``$events`` can hand back what a subscriber missed.

A subscription's events are numbered from 1 in the unit that reads the change causing them
(``engage/subscriptions.py``), together with the feed cursor: a crash repeats a whole batch or
none of it. The last ``KEEP`` events of each subscription are kept for ``$events``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..ids import unique_id
from ..storage.base import DocumentStore, Unit
from ..timeutil import now_instant

STATUS_PROFILE = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                  "backport-subscription-status-r4")
KEEP = 1000
MAX_PER_QUERY = 100


def _key(sub: str, what: str) -> str:
    return f"sub/{sub}/{what}"


def _event_key(sub: str, number: int) -> str:
    return _key(sub, f"event/{number:012d}")


@dataclass(frozen=True, slots=True)
class Event:
    number: int
    timestamp: str
    focus: str  # Type/id
    version: int
    topic: str


async def count(unit: Unit, sub: str) -> int:
    kept = await unit.mark_get(_key(sub, "count"))
    return int(kept) if kept else 0


async def append(unit: Unit, sub: str, topic: str, focus: str, version: int) -> int:
    """Number and keep one event; its number."""
    number = await count(unit, sub) + 1
    await unit.mark_put(_key(sub, "count"), str(number))
    await unit.mark_put(_event_key(sub, number), orjson.dumps(
        {"t": now_instant(), "f": focus, "v": version, "topic": topic}).decode())
    if number > KEEP:
        await unit.mark_delete(_event_key(sub, number - KEEP))
    return number


async def sent(unit: Unit, sub: str) -> int:
    kept = await unit.mark_get(_key(sub, "sent"))
    return int(kept) if kept else 0


async def mark_sent(unit: Unit, sub: str, number: int) -> None:
    await unit.mark_put(_key(sub, "sent"), str(number))


async def events(store: DocumentStore, sub: str, since: int, until: int) -> list[Event]:
    """Kept events numbered ``since`` to ``until`` (at most ``MAX_PER_QUERY``)."""
    until = min(until, since + MAX_PER_QUERY - 1)

    async def run(unit: Unit) -> list[Event]:
        out = []
        for number in range(max(1, since), until + 1):
            kept = await unit.mark_get(_event_key(sub, number))
            if kept is not None:
                e = orjson.loads(kept)
                out.append(Event(number, e["t"], e["f"], int(e["v"]), e["topic"]))
        return out

    return await store.atomic(run)


async def counted(store: DocumentStore, sub: str) -> int:
    async def run(unit: Unit) -> int:
        return await count(unit, sub)

    return int(await store.atomic(run))


def status_resource(sub: dict[str, Any], base: str, kind: str, total: int,
                    shown: Sequence[Event] = (), content: str = "id-only",
                    error: str | None = None) -> dict[str, Any]:
    """The SubscriptionStatus, as the R4 backport's Parameters."""
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/"
                                                                  f"{sub['id']}"}},
        {"name": "topic", "valueCanonical": sub.get("criteria")},
        {"name": "status", "valueCode": sub.get("status")},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(total)},
    ]
    for e in shown:
        part: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(e.number)},
                                      {"name": "timestamp", "valueInstant": e.timestamp}]
        if content != "empty":
            part.append({"name": "focus", "valueReference": {"reference": f"{base}/{e.focus}"}})
        params.append({"name": "notification-event", "part": part})
    if error:
        params.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {"resourceType": "Parameters", "id": unique_id(),
            "meta": {"profile": [STATUS_PROFILE]}, "parameter": params}


def notification(sub: dict[str, Any], base: str, kind: str, total: int,
                 shown: Sequence[Event] = (), content: str = "id-only",
                 resources: dict[str, dict[str, Any]] | None = None,
                 bundle_type: str = "history") -> dict[str, Any]:
    """A notification Bundle: the status first, then each event's focus (its URL for
    ``id-only``, the resource as it was at the event for ``full-resource``)."""
    status = status_resource(sub, base, kind, total, shown, content)
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{status['id']}", "resource": status,
        "request": {"method": "GET", "url": f"Subscription/{sub['id']}/$status"},
        "response": {"status": "200"}}]
    if content != "empty":
        for e in shown:
            entry: dict[str, Any] = {"fullUrl": f"{base}/{e.focus}",
                                     "request": {"method": "PUT", "url": e.focus},
                                     "response": {"status": "200"}}
            body = (resources or {}).get(f"{e.focus}/{e.version}")
            if content == "full-resource" and body is not None:
                entry["resource"] = body
            entries.append(entry)
    if bundle_type == "searchset":
        entries = [{"fullUrl": entries[0]["fullUrl"], "resource": status,
                    "search": {"mode": "match"}}]
    return {"resourceType": "Bundle", "id": unique_id(), "type": bundle_type,
            "timestamp": now_instant(), "entry": entries}
