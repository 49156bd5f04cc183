"""Schedule: availability templates and the planning horizon are validated on write, and a
Schedule may not give a resource a second, different capacity policy (checked in the unit)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..scheduling.capacity import check_schedule_write
from ..scheduling.templates import TemplateError, template_problems

BINDINGS: dict[str, tuple[str, ...]] = {}
WRITE_RULE = check_schedule_write


def rules(res: dict[str, Any]) -> Iterator[tuple[str, str]]:
    try:
        yield from template_problems(res)
    except TemplateError as exc:
        yield (exc.path, exc.message)
