"""Slot: start <= end, required status binding; the schedule reference must resolve (generic);
a Slot an appointment holds may not be moved, withdrawn or deleted (its write rule)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..scheduling.slots import check_slot_write
from ._common import end_not_before_start

WRITE_RULE = check_slot_write

STATUS = ("busy", "free", "busy-unavailable", "busy-tentative", "entered-in-error")
BINDINGS = {"status": STATUS}


def rules(res: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield from end_not_before_start(res, "Slot")
