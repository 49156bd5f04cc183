"""HealthcareService: required daysOfWeek binding; its visit types are validated on write."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..scheduling.visit_types import VisitTypeError, parse_visit_types
from ._days import DAYS

BINDINGS = {"availableTime.daysOfWeek": DAYS}


def rules(res: dict[str, Any]) -> Iterator[tuple[str, str]]:
    try:
        parse_visit_types(res)
    except VisitTypeError as exc:
        yield (exc.path, exc.message)
