"""``$find`` (IHE ITI-115, Argonaut ``$find``): proposed appointments, GET or POST."""

from __future__ import annotations

from typing import Any

from ..context import RequestContext
from ..errors import FhirError
from ..service.find import DEFAULT_COUNT, MAX_COUNT, FindRequest
from ..service.services import Services
from .base import Inputs, Operation, Outcome, one
from .definition import operation

DEFINITION = operation("appointment-find")
_DAYS = frozenset({"mon", "tue", "wed", "thu", "fri", "sat", "sun"})
_WHEN = frozenset({"MORN", "AFT", "EVE", "NIGHT"})


def _timing(value: Any) -> dict[str, Any] | None:
    """The ``timing`` preference, checked where it enters: repeat.dayOfWeek and repeat.when
    are the parts $find reads."""
    if value is None:
        return None
    repeat = value.get("repeat", {})
    if not isinstance(repeat, dict):
        raise FhirError(400, "invalid", "parameter 'timing': repeat must be an object",
                        expression=["timing"])
    for key, allowed in (("dayOfWeek", _DAYS), ("when", _WHEN)):
        items = repeat.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise FhirError(400, "invalid", f"parameter 'timing': repeat.{key} must be an array "
                            "of codes", expression=["timing"])
        unknown = sorted(set(items) - allowed)
        if unknown and key == "dayOfWeek":
            raise FhirError(400, "invalid", f"parameter 'timing': unknown day {unknown[0]!r} "
                            f"(expected {'|'.join(sorted(_DAYS))})", expression=["timing"])
    timing: dict[str, Any] = value
    return timing


def parse(values: Inputs, _instance: str | None) -> FindRequest:
    count = one(values, "_count")
    return FindRequest(
        start=one(values, "start"),
        end=one(values, "end"),
        specialty=values.get("specialty", []),
        visit_type=values.get("visit-type", []),
        practitioner=values.get("practitioner", []),
        organization=values.get("organization", []),
        location=values.get("location", []),
        location_string=values.get("location-string", []),
        patient=values.get("patient", []),
        timing=_timing(one(values, "timing")),
        count=min(MAX_COUNT, DEFAULT_COUNT if count is None else count),
    )


async def run(services: Services, ctx: RequestContext, req: FindRequest) -> Outcome:
    return Outcome(tuple(await services.find.find(ctx, req)))


OPERATION = Operation(DEFINITION, "Appointment", (("type", ("GET", "POST")),), parse, run)
