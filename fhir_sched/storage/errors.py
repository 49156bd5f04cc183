"""What a storage adapter may raise on purpose: the port's own errors, in no door's terms.

Adapters translate their driver's failures into these (and nothing else escapes them on purpose:
anything other than a ``StoreError`` is a bug). The service layer decides what each one means to
a client (``service.store_errors.as_fhir_error``), so storage knows nothing of FHIR or HTTP.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error an adapter raises on purpose."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or cannot serve now (down, locked past the timeout, a
    commit whose outcome is unknown): the caller may retry shortly."""


class VersionConflict(StoreError):
    """The current version is not the one the write expected (If-Match, or a lost race)."""

    def __init__(self, current: int) -> None:
        super().__init__(f"current version is {current}")
        self.current = current


class QueryTooComplex(StoreError):
    """The query is more than the database will evaluate (too many values, too deep, a join
    matching too much): the caller asked for too much, and retrying will not help."""


class QueryTimedOut(StoreError):
    """The query ran past its time budget and was stopped: it would hold a reader (and, on
    SQLite, the CPU) for longer than any one request may."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"stopped after {seconds:g} s")
        self.seconds = seconds


class InvalidCursor(StoreError):
    """A keyset cursor (``Query.after``) that this query and adapter did not produce."""
