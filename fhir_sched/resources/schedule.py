"""Schedule: availability templates and the planning horizon are validated on write, and a
Schedule may not give a resource a second, different capacity policy (checked in the unit)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..scheduling.capacity import check_schedule_write
from ..scheduling.templates import TemplateError, template_problems

BINDINGS: dict[str, tuple[str, ...]] = {}
WRITE_RULE = check_schedule_write
# The write rule reads each actor's other Schedules inside the write's unit, where every other
# write waits; a calendar has a handful of actors, so more than this is refused, not served.
MAX_ACTORS = 50


def rules(res: dict[str, Any]) -> Iterator[tuple[str, str]]:
    actors = res.get("actor")
    if isinstance(actors, list) and len(actors) > MAX_ACTORS:
        yield ("Schedule.actor", f"a Schedule may name at most {MAX_ACTORS} actors, "
               f"got {len(actors)}")
    try:
        yield from template_problems(res)
    except TemplateError as exc:
        yield (exc.path, exc.message)
