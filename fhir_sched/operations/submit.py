"""``CoverageEligibilityRequest/$submit`` (R4): is this Coverage in force? The eligibility
checker answers; question and answer are both kept (``service/eligibility.py``)."""

from __future__ import annotations

from typing import Any

from ..context import RequestContext
from ..service.services import Services
from .base import Inputs, Operation, Outcome, one
from .definition import operation

DEFINITION = operation("coverageeligibilityrequest-submit")


def parse(values: Inputs, instance: str | None) -> Any:
    return one(values, "resource")


async def run(services: Services, ctx: RequestContext, request: Any) -> Outcome:
    response = await services.eligibility.submit(ctx, request)
    return Outcome((response,), single=True)


OPERATION = Operation(DEFINITION, "CoverageEligibilityRequest", (("type", ("POST",)),),
                      parse, run)
