"""``Practitioner|Location|Patient/{id}/$calendar-link``: a secret iCalendar feed URL for
that calendar, or its revocation (``service/calendar_feeds.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..context import RequestContext
from ..errors import FhirError
from ..service.calendar_feeds import OWNERS
from ..service.services import Services
from .base import Inputs, Operation, Outcome, one
from .definition import operation

DEFINITION = operation("calendar-link")
FEED_PATH = "/ics/"


@dataclass(frozen=True, slots=True)
class LinkRequest:
    type: str
    id: str
    revoke: str | None


def _parser(type_: str) -> Any:
    def parse(values: Inputs, instance: str | None) -> LinkRequest:
        if instance is None:
            raise FhirError(400, "invalid", "$calendar-link is called on one resource")
        revoke = one(values, "revoke")
        return LinkRequest(type_, instance, str(revoke).strip() if revoke is not None else None)

    return parse


def feed_root(services: Services, ctx: RequestContext) -> str:
    base = ctx.base_url.rstrip("/")
    return base.removesuffix(services.settings.base_path.rstrip("/")) + FEED_PATH


async def run(services: Services, ctx: RequestContext, request: LinkRequest) -> Outcome:
    feeds = services.feeds
    if request.revoke is not None:
        token = None if request.revoke == "all" else request.revoke.rstrip("/").rsplit(
            "/", 1)[-1].removesuffix(".ics")
        gone = await feeds.revoke(ctx, request.type, request.id, token)
        param: dict[str, Any] = {"name": "revoked", "valueInteger": gone}
    else:
        token = await feeds.issue(ctx, request.type, request.id)
        param = {"name": "url", "valueUri": f"{feed_root(services, ctx)}{token}.ics"}
    return Outcome(({"resourceType": "Parameters", "parameter": [param]},), single=True)


OPERATIONS = tuple(Operation(DEFINITION, type_, (("instance", ("POST",)),), _parser(type_), run)
                   for type_ in OWNERS)
