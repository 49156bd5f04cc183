"""``$book`` (IHE ITI-117): book, modify or cancel an appointment, or reschedule atomically."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ..rest.capability import RouteSpec
from ..rest.http import context_for
from ._http import inputs, one, result_bundle
from .definition import operation

if TYPE_CHECKING:
    from ..app import Server

DEFINITION = operation("appointment-book")


def routes(server: Server) -> Iterator[tuple[RouteSpec, Any]]:
    settings = server.settings

    async def handler(request: Request) -> Response:
        ctx = context_for(request, settings.public_base, settings.base_path)
        values = await inputs(request, DEFINITION, settings.max_body_bytes)
        ref = one(values, "appointment-reference")
        if "id" in request.path_params:
            ref = f"Appointment/{request.path_params['id']}"
        saved = await server.scheduling.book(
            ctx, ref, one(values, "appointment-resource"), values.get("patient-resource", []),
            values.get("patient-id", []), one(values, "cancelled-appt-id"),
            one(values, "comment"))
        assert saved.record.body is not None
        return result_bundle(ctx.base_url, [saved.record.body],
                             headers={"ETag": f'W/"{saved.record.version}"'})

    for path, level in (("/Appointment/$book", "type"), ("/Appointment/{id}/$book", "instance")):
        yield (RouteSpec(path, ("POST",), "operation", level, ("Appointment",),
                         DEFINITION.code, DEFINITION.url), handler)
