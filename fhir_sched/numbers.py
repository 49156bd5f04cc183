"""Integers read from requests: ASCII digits only and within what a store can hold.

``str.isdigit`` is true for digits int() refuses ("¹") and for numbers no 64-bit column holds
(SQLite raises OverflowError, BSON refuses them), so every integer a client sends in a URL, a
header or a Parameters value is read here.
"""

from __future__ import annotations

MAX_INT64 = 2**63 - 1


def plain_int(text: str) -> int | None:
    """``text`` as a non-negative integer of ASCII digits, else None; a value past int64 is
    returned as ``MAX_INT64 + 1`` (callers clamp it or refuse it, never store it)."""
    if not text or not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= 19 and int(text) <= MAX_INT64 else MAX_INT64 + 1
