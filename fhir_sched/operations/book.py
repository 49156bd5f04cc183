"""``$book`` (IHE ITI-117): book, modify or cancel an appointment, or reschedule atomically."""

from __future__ import annotations

from ..context import RequestContext
from ..errors import FhirError
from ..service.booking import BookRequest
from ..service.series import MODES, SCOPES
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
        series_mode=_code(values, "series-mode", MODES),
        series_scope=_code(values, "series-scope", SCOPES),
    )


def _code(values: Inputs, name: str, allowed: tuple[str, ...]) -> str:
    value = one(values, name)
    if value is None:
        return allowed[0]
    if value not in allowed:
        raise FhirError(400, "invalid", f"parameter {name!r}: {value!r} is not one of "
                        f"{', '.join(allowed)}", expression=[name])
    return str(value)


async def run(services: Services, ctx: RequestContext, req: BookRequest) -> Outcome:
    booked = await services.booking.book(ctx, req)
    written = (booked.saved, *booked.more)  # a series: every occurrence, its first first
    bodies = tuple(s.record.body for s in written if s.record.body is not None)
    cards = ctx.consulted.get("cds-issues")  # the CDS services' advice (service/cds.py)
    return Outcome(bodies, version=booked.saved.record.version if not booked.more else None,
                   issues=(*(cards if isinstance(cards, list) else ()), *booked.issues),
                   included=booked.offered)


OPERATION = Operation(DEFINITION, "Appointment", (("type", ("POST",)), ("instance", ("POST",))),
                      parse, run)
