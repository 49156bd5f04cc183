"""ServiceRequest: required status, intent and priority bindings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

BINDINGS = {
    "status": ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"),
    "intent": ("proposal", "plan", "directive", "order", "original-order", "reflex-order",
               "filler-order", "instance-order", "option"),
    "priority": ("routine", "urgent", "asap", "stat"),
}


def rules(res: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if res.get("orderDetail") and not res.get("code"):
        # prr-1: orderDetail SHALL only be present if code is present
        yield ("ServiceRequest.orderDetail", "prr-1: orderDetail requires code")
