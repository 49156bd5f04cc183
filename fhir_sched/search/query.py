"""The backend-neutral query representation every storage adapter compiles.

Search parameters are parsed once (``search.parse``) into these plain values; SQLite compiles them
to SQL and MongoDB to filter documents, so neither the REST layer nor the parser knows a query
language. Every test is phrased over *index entries* (``storage.base.IndexEntry``): "the resource
has an entry for parameter P whose fields satisfy these comparisons".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# Comparison operators over one index-entry field.  ``startswith``/``contains`` are on already
# normalised strings, so adapters need no collation rules of their own.
Op = Literal["=", "!=", "<", "<=", ">", ">=", "startswith", "contains", "isnull", "notnull"]
# Index-entry fields a condition may test.
FieldName = Literal["sys", "val", "raw", "lo", "hi"]


@dataclass(frozen=True, slots=True)
class Cond:
    field: FieldName
    op: Op
    value: Any = None


@dataclass(frozen=True, slots=True)
class Entry:
    """True when some index entry of ``param`` satisfies every condition."""

    param: str
    conds: tuple[Cond, ...] = ()


@dataclass(frozen=True, slots=True)
class Missing:
    """``:missing``: true when the resource has no entry for ``param`` (or, negated, has one)."""

    param: str
    missing: bool = True


@dataclass(frozen=True, slots=True)
class Not:
    inner: Expr


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class AllOf:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Chain:
    """``param.sub``: the reference in ``param`` points at a ``target`` resource that matches
    ``where``."""

    param: str
    target: str
    where: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Has:
    """``_has:Source:param:...``: some ``source`` resource refers to this one through ``param``
    and matches ``where``."""

    source: str
    param: str
    where: tuple[Expr, ...]


Expr = Entry | Missing | Not | AnyOf | AllOf | Chain | Has


@dataclass(frozen=True, slots=True)
class SortKey:
    param: str
    descending: bool = False
    # Which index field orders this parameter: "lo" for dates and numbers, "val" otherwise.
    field: FieldName = "val"


@dataclass(frozen=True, slots=True)
class Query:
    type: str
    where: tuple[Expr, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 50
    # Keyset cursor: the sort values and position of the last row of the previous page.
    after: tuple[Any, ...] | None = None
    # Count every match (``_total=accurate``, ``_summary=count``) as well as returning a page.
    total: bool = False
    # Return nothing but the total (``_summary=count``).
    count_only: bool = False
    include_deleted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Page:
    """One page of results: stored JSON bytes in order, and the cursor for the next page."""

    rows: list[tuple[str, bytes]]
    next_after: tuple[Any, ...] | None
    total: int | None = None
