"""``$hold`` (IHE ITI-116): take a proposed option's time as a pending, expiring Appointment."""

from __future__ import annotations

from ..context import RequestContext
from ..service.booking import HoldRequest
from ..service.services import Services
from .base import Inputs, Operation, Outcome, checked_resource, one
from .definition import operation

DEFINITION = operation("appointment-hold")


def parse(values: Inputs, instance: str | None) -> HoldRequest:
    ref = f"Appointment/{instance}" if instance else one(values, "appointment-reference")
    return HoldRequest(ref, checked_resource(values, "appointment-resource", "Appointment"))


async def run(services: Services, ctx: RequestContext, req: HoldRequest) -> Outcome:
    held = await services.booking.hold(ctx, req)
    rec = held.saved.record
    assert rec.body is not None
    return Outcome((rec.body,), version=rec.version, expires=held.expires)


OPERATION = Operation(DEFINITION, "Appointment", (("type", ("POST",)), ("instance", ("POST",))),
                      parse, run)
