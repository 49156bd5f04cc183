"""``Subscription/{id}/$status`` (Subscriptions R5 Backport): the SubscriptionStatus of one
Subscription, its events counted in the store (``service/subscription_events.py``)."""

from __future__ import annotations

from typing import Any

import orjson

from ..context import RequestContext
from ..errors import FhirError
from ..service import subscription_events as events
from ..service.services import Services
from .base import Inputs, Operation, Outcome
from .definition import operation

DEFINITION = operation("subscription-status")


def parse(values: Inputs, instance: str | None) -> str:
    if instance is None:
        raise FhirError(400, "invalid", "$status is called on one Subscription")
    return instance


async def subscription(services: Services, ctx: RequestContext, id_: str) -> dict[str, Any]:
    """The Subscription, read as the caller (its scopes and compartment decide)."""
    rec = await services.resources.read(ctx, "Subscription", id_)
    body: dict[str, Any] = orjson.loads(rec.body or b"{}")
    return body


async def run(services: Services, ctx: RequestContext, id_: str) -> Outcome:
    sub = await subscription(services, ctx, id_)
    total = await events.counted(services.store, id_)
    bundle = events.notification(sub, ctx.base_url.rstrip("/"), "query-status", total,
                                 bundle_type="searchset")
    bundle["total"] = 1
    return Outcome((bundle,), single=True)


OPERATION = Operation(DEFINITION, "Subscription", (("instance", ("GET", "POST")),), parse, run)
