"""``$book`` (IHE ITI-117): book, modify or cancel an appointment, or reschedule atomically."""

from __future__ import annotations

from ..context import RequestContext
from ..service.booking import BookRequest
from ..service.services import Services
from .base import Inputs, Operation, Outcome, checked_resource, one
from .definition import operation

DEFINITION = operation("appointment-book")


def parse(values: Inputs, instance: str | None) -> BookRequest:
    ref = f"Appointment/{instance}" if instance else one(values, "appointment-reference")
    patients = []
    for n in range(len(values.get("patient-resource", []))):
        res = checked_resource({"patient-resource": values["patient-resource"][n:n + 1]},
                               "patient-resource", "Patient")
        assert res is not None
        patients.append(res)
    return BookRequest(
        appointment_reference=ref,
        appointment=checked_resource(values, "appointment-resource", "Appointment"),
        patients=tuple(patients),
        patient_references=tuple(values.get("patient-id", [])),
        cancelled_appointment=one(values, "cancelled-appt-id"),
        comment=one(values, "comment"),
    )


async def run(services: Services, ctx: RequestContext, req: BookRequest) -> Outcome:
    saved = await services.booking.book(ctx, req)
    assert saved.record.body is not None
    cards = ctx.consulted.get("cds-issues")  # the CDS services' advice (service/cds.py)
    return Outcome((saved.record.body,), version=saved.record.version,
                   issues=tuple(cards) if isinstance(cards, list) else ())


OPERATION = Operation(DEFINITION, "Appointment", (("type", ("POST",)), ("instance", ("POST",))),
                      parse, run)
