"""The neutral query vocabulary: what search produces and every storage adapter compiles.

Storage and search both depend on this module and on nothing of each other: queries, pages,
index entries and the primary-date convention are plain values here.

Search parameters are parsed once (``search.parse``) into these plain values; SQLite compiles them
to SQL and MongoDB to filter documents, so neither the REST layer nor the parser knows a query
language. Every test is phrased over *index entries* (``IndexEntry`` below): "the resource
has an entry for parameter P whose fields satisfy these comparisons".

Semantics every adapter must give (the SQLite compiler is the reference; the search tests run
against every adapter):

* ``Cond``: a comparison on one field of one entry. A field that is absent/None never satisfies
  ``=``, ``!=``, ``<``... (SQL NULL semantics: ``!=`` does NOT match a missing field, unlike a
  bare MongoDB ``$ne``); only ``isnull`` matches it. ``startswith``/``contains`` compare strings
  code point by code point (values are normalised beforehand by ``extract.normalise``).
  Dates are integers (microseconds since the epoch, UTC), ``lo``/``hi`` inclusive.
* ``Entry(p, conds)``: some single entry of ``p`` satisfies all of ``conds`` at once.
* ``Missing(p, True)``: no entry of ``p`` at all; ``Missing(p, False)``: at least one.
* ``Not(x)``: the resource does not satisfy ``x`` (so it includes resources with no entry).
* ``AnyOf``/``AllOf``: or/and; an empty ``AnyOf`` is false, an empty ``AllOf`` true.
* ``Chain(p, T, where)``: some entry of ``p`` has ``val == "T/<id>"`` for a live ``T`` resource
  satisfying all of ``where``.
* ``Has(S, p, where)``: some live ``S`` resource satisfying all of ``where`` has an entry of ``p``
  with ``val == "<this type>/<this id>"``.
* ``Entry("_id", ...)`` tests the resource id (every resource has exactly one ``_id`` entry whose
  ``val`` is its id, so an adapter may answer it from its primary key).
* Order: each ``SortKey`` in turn, then insertion order (first creation; an update keeps its
  place), which makes the order total. A key's value is the lowest entry value ascending and the
  highest descending; resources without one sort last in both directions.
* ``after``: opaque to callers, produced by the same adapter as ``Page.next_after``; the next
  page is every match strictly after that position, so rows inserted meanwhile never shift a
  page (keyset paging: no duplicates, and nothing that existed when paging began is skipped).

Index-entry convention the searches rely on (``search.extract``): a type's *primary date*
(``PRIMARY_DATE`` below, single-valued) has its range copied into ``lo``/``hi`` of the
resource's reference/token/string/uri entries. Adapters may use it to answer "reference X within
this window" from one compound index; they never need to, as the query itself never tests
``lo``/``hi`` on such entries.
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
    """``field op value`` on one index entry (see the module docstring for NULL semantics)."""

    field: FieldName
    op: Op
    value: Any = None


@dataclass(frozen=True, slots=True)
class Entry:
    """True when some index entry of ``param`` satisfies every condition.

    ``unique``: a hint from whoever built the query that a resource has at most one entry of
    ``param`` with a given ``val`` (true of references: extraction drops duplicates), so an
    adapter may count the matches of a ``val`` equality without de-duplicating them. The
    default, False, is always safe; True on a parameter where it does not hold over-counts.
    """

    param: str
    conds: tuple[Cond, ...] = ()
    unique: bool = False


@dataclass(frozen=True, slots=True)
class Missing:
    """``:missing``: true when the resource has no entry for ``param`` (or, negated, has one)."""

    param: str
    missing: bool = True


@dataclass(frozen=True, slots=True)
class Not:
    """The resource does not satisfy ``inner`` (token ``:not`` relies on this including
    resources that have no value at all)."""

    inner: Expr


@dataclass(frozen=True, slots=True)
class AnyOf:
    """OR: comma-separated values of one parameter, prefix ranges with two cases."""

    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class AllOf:
    """AND (``Query.where`` is already an implicit AllOf; repeated parameters land there)."""

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


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One searchable value extracted from a resource.

    ``sys``/``val``: token system and code, reference target type and ``Type/id`` (or absolute
    URL), normalised string, uri. ``raw``: the original text for ``:exact`` and ``:text``.
    ``lo``/``hi``: the inclusive range of a date (microseconds since the epoch, UTC) or number.
    """

    param: str
    sys: str | None = None
    val: str | None = None
    raw: str | None = None
    lo: int | float | None = None
    hi: int | float | None = None

# The "primary date" of a type: a single-valued (0..1 or 1..1) date parameter that searches pair
# with a reference or token (ITI-118 ``Appointment?patient=X&date=ge..&date=lt..``, ``Slot?
# schedule=X&start=..``). Its range is copied into ``lo``/``hi`` of the resource's other
# (reference, token, string, uri) entries, which have no range of their own, so that a store can
# answer "reference X within this window" from one index range over (param, val, lo, hi) instead
# of probing every resource X refers to. Because the parameter is single-valued, "the entry's
# copied range satisfies C" is exactly "some entry of the date parameter satisfies C"; a resource
# without the date has no copy, and no entry of the date parameter either.
PRIMARY_DATE: dict[str, str] = {
    "Appointment": "date",
    "Patient": "birthdate",
    "PractitionerRole": "date",
    "Schedule": "date",
    "ServiceRequest": "authored",
    "Slot": "start",
}
