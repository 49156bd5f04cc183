"""``Subscription/{id}/$events`` (Subscriptions R5 Backport): the kept events of one
Subscription by number, for a subscriber catching up on what it missed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..context import RequestContext
from ..errors import FhirError
from ..resources.subscription import CONTENTS, content
from ..service import subscription_events as events
from ..service.services import Services
from .base import Inputs, Operation, Outcome, one
from .definition import operation
from .subscription_status import subscription

DEFINITION = operation("subscription-events")


@dataclass(frozen=True, slots=True)
class EventsRequest:
    id: str
    since: int | None
    until: int | None
    content: str | None


def _number(values: Inputs, name: str) -> int | None:
    raw = one(values, name)
    if raw is None:
        return None
    try:
        number = int(str(raw))
    except ValueError:
        number = -1
    if number < 1:
        raise FhirError(400, "invalid", f"parameter {name!r}: an event number (1 or more)",
                        expression=[name])
    return number


def parse(values: Inputs, instance: str | None) -> EventsRequest:
    if instance is None:
        raise FhirError(400, "invalid", "$events is called on one Subscription")
    wanted = one(values, "content")
    if wanted is not None and wanted not in CONTENTS:
        raise FhirError(400, "invalid", f"parameter 'content': one of {', '.join(CONTENTS)}",
                        expression=["content"])
    return EventsRequest(instance, _number(values, "eventsSinceNumber"),
                         _number(values, "eventsUntilNumber"), wanted)


async def run(services: Services, ctx: RequestContext, request: EventsRequest) -> Outcome:
    sub = await subscription(services, ctx, request.id)
    total = await events.counted(services.store, request.id)
    until = min(request.until or total, total)
    since = request.since or max(1, until - events.MAX_PER_QUERY + 1)
    shown = await events.events(services.store, request.id, since, until)
    kind = request.content or content(sub)
    resources: dict[str, dict[str, Any]] = {}
    if kind == "full-resource":
        for e in shown:
            type_, _, id_ = e.focus.partition("/")
            rec = await services.resources.vread(ctx, type_, id_, str(e.version))
            resources[f"{e.focus}/{e.version}"] = orjson.loads(rec.body or b"{}")
    bundle = events.notification(sub, ctx.base_url.rstrip("/"), "query-event", total, shown,
                                 kind, resources)
    return Outcome((bundle,), single=True)


OPERATION = Operation(DEFINITION, "Subscription", (("instance", ("GET", "POST")),), parse, run)
