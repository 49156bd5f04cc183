"""``$find`` (IHE ITI-115, Argonaut ``$find``): proposed appointments, GET or POST."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ..rest.capability import RouteSpec
from ..rest.http import context_for
from ..scheduling.service import DEFAULT_COUNT, MAX_COUNT, FindRequest
from ._http import inputs, one, result_bundle
from .definition import operation

if TYPE_CHECKING:
    from ..app import Server

DEFINITION = operation("appointment-find")


def routes(server: Server) -> Iterator[tuple[RouteSpec, Any]]:
    settings = server.settings

    async def handler(request: Request) -> Response:
        ctx = context_for(request, settings.public_base, settings.base_path)
        values = await inputs(request, DEFINITION, settings.max_body_bytes)
        count = one(values, "_count")
        req = FindRequest(
            start=one(values, "start"),
            end=one(values, "end"),
            specialty=values.get("specialty", []),
            visit_type=values.get("visit-type", []),
            practitioner=values.get("practitioner", []),
            organization=values.get("organization", []),
            location=values.get("location", []),
            location_string=values.get("location-string", []),
            patient=values.get("patient", []),
            timing=one(values, "timing"),
            count=min(MAX_COUNT, DEFAULT_COUNT if count is None else count),
        )
        proposals = await server.scheduling.find(ctx, req)
        return result_bundle(ctx.base_url, proposals)

    spec = RouteSpec("/Appointment/$find", ("GET", "POST"), "operation", "type",
                     ("Appointment",), DEFINITION.code, DEFINITION.url)
    yield spec, handler
