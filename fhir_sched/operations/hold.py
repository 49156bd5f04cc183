"""``$hold`` (IHE ITI-116): take a proposed option's time as a pending, expiring Appointment."""

from __future__ import annotations

from collections.abc import Iterator
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ..rest.capability import RouteSpec
from ..rest.http import context_for
from ..timeutil import parse_instant
from ._http import inputs, one, result_bundle
from .definition import operation

if TYPE_CHECKING:
    from ..app import Server

DEFINITION = operation("appointment-hold")


def routes(server: Server) -> Iterator[tuple[RouteSpec, Any]]:
    settings = server.settings

    async def handler(request: Request) -> Response:
        ctx = context_for(request, settings.public_base, settings.base_path)
        values = await inputs(request, DEFINITION, settings.max_body_bytes)
        ref = one(values, "appointment-reference")
        if "id" in request.path_params:
            ref = f"Appointment/{request.path_params['id']}"
        saved, expires = await server.scheduling.hold(ctx, ref, one(values,
                                                                     "appointment-resource"))
        assert saved.record.body is not None
        headers = {"Expires": format_datetime(parse_instant(expires), usegmt=True),
                   "ETag": f'W/"{saved.record.version}"'}
        return result_bundle(ctx.base_url, [saved.record.body], headers=headers)

    for path, level in (("/Appointment/$hold", "type"), ("/Appointment/{id}/$hold", "instance")):
        yield (RouteSpec(path, ("POST",), "operation", level, ("Appointment",),
                         DEFINITION.code, DEFINITION.url), handler)
