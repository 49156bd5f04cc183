"""Slot: start <= end, required status binding; the schedule reference must resolve (generic)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._common import end_not_before_start

STATUS = ("busy", "free", "busy-unavailable", "busy-tentative", "entered-in-error")
BINDINGS = {"status": STATUS}


def rules(res: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield from end_not_before_start(res, "Slot")
