"""Rule helpers shared by several resource modules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..timeutil import parse_instant


def end_not_before_start(res: dict[str, Any], type_name: str) -> Iterator[tuple[str, str]]:
    start, end = res.get("start"), res.get("end")
    if isinstance(start, str) and isinstance(end, str):
        try:
            if parse_instant(end) < parse_instant(start):
                yield (f"{type_name}.end", f"{type_name}.end must not be before start")
        except ValueError:
            return  # the model validation reports malformed instants with a better message
