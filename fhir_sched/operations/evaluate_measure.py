"""``Measure/$evaluate-measure`` and ``Measure/{id}/$evaluate-measure`` (FHIR R4): one of the
scheduling KPIs over a period, as a MeasureReport (``service/measures.py``).

R4's reportType codes are mapped onto R4's MeasureReport.type: ``population`` (the default
without a subject) answers a ``summary``; ``subject`` (the default with one) an
``individual`` report for that practitioner, room, role or service. ``subject-list`` (the
subjects in each population) and MeasureReport's ``data-collection`` are not built and are
refused by name, as is anything else. R4's ``practitioner`` parameter is read as a
Practitioner subject, since the scheduling KPIs have no patients to relate to one.
"""

from __future__ import annotations

from typing import Any

from ..context import RequestContext
from ..errors import FhirError
from ..service.find import FindService
from ..service.measures import (
    MAX_PERIOD_DAYS,
    REPORT_TYPES,
    SUBJECT_TYPES,
    EvaluateRequest,
    MeasureService,
    measures,
)
from ..service.services import Services
from ..timeutil import date_range
from .base import Inputs, Operation, Outcome, one
from .definition import operation

DEFINITION = operation("measure-evaluate-measure")
_DAY_US = 86_400_000_000


def _bad(name: str, msg: str, status: int = 400) -> FhirError:
    return FhirError(status, "invalid" if status == 400 else "too-costly",
                     f"parameter {name!r}: {msg}", expression=[name])


def _measure_id(values: Inputs, instance: str | None) -> str:
    given = one(values, "measure")
    if given is None:
        if instance is None:
            raise _bad("measure", "is required by Measure/$evaluate-measure (or call "
                       "Measure/{id}/$evaluate-measure)")
        return instance
    text = str(given).split("|", 1)[0].rstrip("/")
    found = next((mid for mid, m in measures().items() if m["url"] == text), None)
    mid = found or text.removeprefix("Measure/")
    if mid not in measures():
        raise _bad("measure", f"{given!r} is not a Measure of this server (known: "
                   f"{', '.join(sorted(measures()))})")
    if instance is not None and mid != instance:
        raise _bad("measure", f"names Measure/{mid}, but the call is on Measure/{instance}")
    return mid


def _period(values: Inputs) -> tuple[int, int]:
    bounds = []
    for name in ("periodStart", "periodEnd"):
        raw = one(values, name)
        try:
            bounds.append(date_range(str(raw)))
        except ValueError as exc:
            raise _bad(name, f"{exc}; give a date such as 2026-01-01 (or a dateTime)") from None
    start, end = bounds[0][0], bounds[1][1] + 1
    if end <= start:
        raise _bad("periodEnd", "is before periodStart")
    if end - start > MAX_PERIOD_DAYS * _DAY_US:
        raise _bad("periodEnd", f"the period may be at most {MAX_PERIOD_DAYS} days long "
                   "(two years); evaluate longer spans a period at a time", 422)
    return start, end


def _subject(values: Inputs) -> str | None:
    subject, practitioner = one(values, "subject"), one(values, "practitioner")
    if subject is not None and practitioner is not None:
        raise _bad("practitioner", "give subject or practitioner, not both")
    name = "subject" if practitioner is None else "practitioner"
    raw = subject if practitioner is None else practitioner
    if raw is None:
        return None
    ref = str(raw).strip()
    if name == "practitioner" and "/" not in ref:
        ref = f"Practitioner/{ref}"
    parts = ref.rstrip("/").split("/")  # Type/id, or an absolute URL ending in it
    type_, id_ = (parts[-2], parts[-1]) if len(parts) >= 2 else ("", "")
    if type_ not in SUBJECT_TYPES or not id_ or (name == "practitioner"
                                                  and type_ != "Practitioner"):
        allowed = "Practitioner" if name == "practitioner" else ", ".join(SUBJECT_TYPES)
        raise _bad(name, f"{ref!r} must be a reference to a {allowed} (Type/id)")
    return f"{type_}/{id_}"


def parse(values: Inputs, instance: str | None) -> EvaluateRequest:
    mid = _measure_id(values, instance)
    start, end = _period(values)
    subject = _subject(values)
    asked = one(values, "reportType")
    if asked is None:
        report_type = "individual" if subject else "summary"
    elif asked in ("subject-list", "data-collection"):
        raise _bad("reportType", f"{asked!r} is not supported: this server answers "
                   "population (a summary MeasureReport) and subject (an individual one)")
    elif asked not in REPORT_TYPES:
        raise _bad("reportType", f"{asked!r} is not a reportType (R4: subject, subject-list, "
                   "population)")
    else:
        report_type = REPORT_TYPES[str(asked)]
    if report_type == "individual" and subject is None:
        raise _bad("subject", "reportType subject needs a subject")
    return EvaluateRequest(mid, start, end, subject, report_type)


def service(services: Services) -> MeasureService:
    """A MeasureService over this process's store, policy and $find (cheap to make: it holds
    only those and the late-cancellation lead)."""
    find: FindService = services.find
    hours: int = getattr(services.settings, "late_cancel_hours", 24)
    return MeasureService(services.store, services.resources.authorizer, find, hours)


async def run(services: Services, ctx: RequestContext, request: EvaluateRequest) -> Outcome:
    report: dict[str, Any] = await service(services).evaluate(ctx, request)
    return Outcome((report,), single=True)


OPERATION = Operation(DEFINITION, "Measure", (("type", ("GET", "POST")),
                                              ("instance", ("GET", "POST"))), parse, run)
