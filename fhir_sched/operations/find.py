"""``$find`` (IHE ITI-115, Argonaut ``$find``): proposed appointments, GET or POST."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..context import RequestContext
from ..errors import FhirError
from ..service import find_cursor
from ..service.find import DEFAULT_COUNT, FindRequest, FindResult
from ..service.services import Services
from .base import Inputs, Operation, Outcome, one
from .definition import operation

DEFINITION = operation("appointment-find")
_DAYS = frozenset({"mon", "tue", "wed", "thu", "fri", "sat", "sun"})
_WHEN = frozenset({"MORN", "AFT", "EVE", "NIGHT"})
_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+(/|\?)\S+$")


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


def _is_reference(value: str) -> bool:
    """Whether a location value names a resource (``Location/1``, an absolute URL, a conditional
    reference) rather than being text: the Argonaut examples send ``location=Napa``."""
    return bool(_REFERENCE.match(value)) or "://" in value or value.startswith("urn:")


def parse(values: Inputs, _instance: str | None) -> FindRequest:
    count = one(values, "_count")
    if count is not None and count < 0:  # a Parameters valueInteger may be negative
        raise FhirError(400, "invalid", "parameter '_count' must not be negative",
                        expression=["_count"])
    locations = values.get("location-reference", [])
    return FindRequest(
        start=one(values, "start"),
        end=one(values, "end"),
        specialty=values.get("specialty", []),
        visit_type=values.get("visit-type", []),
        practitioner=values.get("practitioner", []),
        organization=values.get("organization", []),
        location=[v for v in locations if _is_reference(v)],
        location_string=[*values.get("location-string", []),
                         *(v for v in locations if not _is_reference(v))],
        patient=values.get("patient-reference", []),
        timing=_timing(one(values, "timing")),
        count=DEFAULT_COUNT if count is None else count,  # the service caps it, with a warning
        total=one(values, "_total"),
        appointment_type=values.get("appointment-type", []),
        insurance=values.get("insurance-reference", []),
        explain=bool(one(values, "_explain")),
        referral=values.get("referral-identifier", []),
    )


def resume(token: str) -> FindRequest:
    """A request from a paging link's ``_cursor``, checked as ``parse`` checks its inputs
    (the service then checks it as any request)."""
    req = find_cursor.decode(token)
    req.timing = _timing(req.timing)
    return req


def _links(result: FindResult) -> tuple[tuple[str, str], ...]:
    req = result.request

    def at(offset: int) -> str:
        token = find_cursor.encode(dataclasses.replace(req, offset=offset))
        return f"Appointment/$find?_cursor={token}"

    links = [("self", at(req.offset))]
    if result.more and req.count:
        links.append(("next", at(req.offset + req.count)))
    if req.offset > 0 and req.count:
        links.append(("previous", at(max(0, req.offset - req.count))))
    return tuple(links)


async def run(services: Services, ctx: RequestContext, req: FindRequest) -> Outcome:
    result = await services.find.find(ctx, req)
    return Outcome(tuple(result.proposals), paged=True, total=result.total,
                   links=_links(result), issues=tuple(result.warnings))


OPERATION = Operation(DEFINITION, "Appointment", (("type", ("GET", "POST")),), parse, run,
                      resume=resume)
