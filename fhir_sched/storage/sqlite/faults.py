"""SQLite failures as the port's errors (``storage.errors``)."""

from __future__ import annotations

import sqlite3

from ..errors import QueryTooComplex, StoreUnavailable

# SQLite's limits on one statement (https://www.sqlite.org/limits.html): a search with that many
# values or that deep a nesting is the request's doing, so it is no reason to retry.
_TOO_COMPLEX = (
    "expression tree is too large",
    "too many sql variables",
    "parser stack overflow",
    "too many terms in compound select",
    "too many from clause terms",
    "at most 64 tables in a join",
    "too many arguments on function",
)


def translate(exc: sqlite3.Error) -> Exception:
    """The port's error for ``exc``: ``QueryTooComplex`` when a statement exceeds one of
    SQLite's limits, ``StoreUnavailable`` for any other operational failure (locked past the
    busy timeout, I/O); anything else (a bug) is returned unchanged."""
    text = str(exc)
    lowered = text.lower()
    if any(limit in lowered for limit in _TOO_COMPLEX):
        return QueryTooComplex(text)
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailable(text)
    return exc
