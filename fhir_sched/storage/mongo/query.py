"""The neutral ``Query`` as MongoDB filter documents and aggregation pipelines.

Every resource document carries its index entries as an array of subdocuments,
``idx: [{p, s, v, r, lo, hi}]`` (absent fields are omitted), so "the resource has an entry for
parameter P whose fields satisfy these comparisons" is exactly ``$elemMatch`` over ``idx``, and the
multikey indexes on ``idx.p``/``idx.v``/``idx.lo`` serve it. The comparisons mirror SQL, which
the SQLite adapter (the reference) gets for free: a comparison with NULL is never true, so ``!=``
must exclude entries that lack the field, which MongoDB's ``$ne`` would include.

Chains and ``_has`` need a join. MongoDB's ``$lookup`` cannot use the multikey index from the
other side cheaply, so they are resolved first with a bounded query that collects the matching
``Type/id`` values, and the outer filter then uses ``$in``. The bound keeps the filter document far
below MongoDB's 16 MB limit; past it the client is asked to narrow the search.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from ... import query as vocab
from ...query import AllOf, AnyOf, Chain, Cond, Entry, Expr, Has, Missing, Not
from ..errors import InvalidCursor, QueryTooComplex

Filter = dict[str, Any]
Pipeline = list[dict[str, Any]]
# Runs an aggregation over the resources collection (in the caller's session, if any).
Aggregate = Callable[[Pipeline], Awaitable[list[dict[str, Any]]]]

FIELD = {"sys": "s", "val": "v", "raw": "r", "lo": "lo", "hi": "hi"}
# A filter no document satisfies (SQL's constant false).
NEVER: Filter = {"_id": {"$in": []}}
# Most distinct targets a chain or ``_has`` may resolve to before the search is refused.
JOIN_LIMIT = 50_000

# The SQLite adapter's sentinels: missing sort values go last whichever the direction.
HIGH_NUM, LOW_NUM = 9.0e18, -9.0e18
HIGH_STR, LOW_STR = "\U0010ffff", ""

_MONGO_OP = {"=": "$eq", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}


def resource_key(type_: str, id_: str) -> str:
    """The ``_id`` of a resource document: the ``Type/id`` a reference index entry holds, so a
    chain's matches are usable as reference values with no rewriting."""
    return f"{type_}/{id_}"


def _cond(cond: Cond) -> tuple[str, Any] | None:
    """(operator, operand) for one comparison; None when SQL would never be true (NULL operand)."""
    op, value = cond.op, cond.value
    if op == "isnull":
        return "$eq", None
    if op == "notnull":
        return "$ne", None
    if value is None:
        return None
    if op == "!=":
        return "$nin", [value, None]
    if op == "contains":
        return "$regex", re.escape(str(value))
    return _MONGO_OP[op], value


def _comparisons(conds: tuple[Cond, ...], field_of: Callable[[Cond], str]) -> Filter | None:
    """The conditions as one filter (None: never true). Operators on one field share its
    operator document; a repeated operator (two prefixes on one field) goes into an ``$and``."""
    out: Filter = {}
    extra: list[Filter] = []
    for cond in conds:
        if cond.op == "startswith":
            # The half-open range SQLite uses too: an index seek, and identical results.
            prefix = str(cond.value)
            pairs = [("$gte", prefix), ("$lt", prefix + HIGH_STR)]
        else:
            compiled = _cond(cond)
            if compiled is None:
                return None
            pairs = [compiled]
        field = field_of(cond)
        slot = out.setdefault(field, {})
        clash = any(op in slot for op, _ in pairs)
        for op, operand in pairs:
            if clash:
                extra.append({field: {op: operand}})
            else:
                slot[op] = operand
    if extra:
        out["$and"] = extra
    return out


def id_only(expr: Expr) -> bool:
    """An Entry on ``_id`` testing only ``val``: answered by the resource id itself, as the
    SQLite adapter does (so it holds whether or not ``_id`` entries are extracted)."""
    return (isinstance(expr, Entry) and expr.param == "_id" and bool(expr.conds)
            and all(c.field == "val" for c in expr.conds))


def entry_filter(expr: Entry) -> Filter:
    """All conditions on the *same* entry, so ``$elemMatch`` rather than dotted paths."""
    if id_only(expr):
        on_id = _comparisons(expr.conds, lambda _c: "id")
        return NEVER if on_id is None else on_id
    conds = _comparisons(expr.conds, lambda c: FIELD[c.field])
    if conds is None:
        return NEVER
    return {"idx": {"$elemMatch": {"p": expr.param, **conds}}}


class Compiler:
    """Turns expressions into filters; async because chains and ``_has`` query first."""

    def __init__(self, aggregate: Aggregate) -> None:
        self._aggregate = aggregate

    async def where(self, exprs: tuple[Expr, ...], rtype: str) -> Filter:
        return await self.expr(AllOf(exprs), rtype)

    async def expr(self, expr: Expr, rtype: str) -> Filter:
        """A filter for ``expr`` about resources of type ``rtype``."""
        if isinstance(expr, Entry):
            return entry_filter(expr)
        if isinstance(expr, Missing):
            if expr.missing:
                return {"idx.p": {"$ne": expr.param}}
            return {"idx.p": expr.param}
        if isinstance(expr, Not):
            return {"$nor": [await self.expr(expr.inner, rtype)]}
        if isinstance(expr, AnyOf):
            if not expr.items:
                return NEVER
            parts = [await self.expr(e, rtype) for e in expr.items]
            return parts[0] if len(parts) == 1 else {"$or": parts}
        if isinstance(expr, AllOf):
            parts = [await self.expr(e, rtype) for e in expr.items]
            parts = [p for p in parts if p]
            if not parts:
                return {}
            return parts[0] if len(parts) == 1 else {"$and": parts}
        if isinstance(expr, Chain):
            return await self._chain(expr)
        if isinstance(expr, Has):
            return await self._has(expr, rtype)
        raise TypeError(f"unknown query expression {expr!r}")

    async def _chain(self, expr: Chain) -> Filter:
        sub = await self.where(expr.where, expr.target)
        match: Filter = {"type": expr.target, "deleted": False}
        if sub:
            match = {"$and": [match, sub]}
        rows = await self._aggregate([
            {"$match": match}, {"$project": {"_id": 1}}, {"$limit": JOIN_LIMIT + 1}])
        refs = [row["_id"] for row in rows]
        _check_join(refs, f"{expr.param}.{expr.target}")
        return {"idx": {"$elemMatch": {"p": expr.param, "v": {"$in": refs}}}}

    async def _has(self, expr: Has, rtype: str) -> Filter:
        prefix = rtype + "/"
        sub = await self.where(expr.where, expr.source)
        match: Filter = {"type": expr.source,
                         "idx": {"$elemMatch": {"p": expr.param,
                                                "v": {"$regex": "^" + re.escape(prefix)}}}}
        if sub:
            match = {"$and": [match, sub]}
        rows = await self._aggregate([
            {"$match": match},
            {"$unwind": "$idx"},
            {"$match": {"idx.p": expr.param, "idx.v": {"$regex": "^" + re.escape(prefix)}}},
            {"$group": {"_id": "$idx.v"}},
            {"$limit": JOIN_LIMIT + 1},
        ])
        ids = [row["_id"][len(prefix):] for row in rows]
        _check_join(ids, f"_has:{expr.source}:{expr.param}")
        return {"id": {"$in": [i for i in ids if "/" not in i]}}


def _check_join(values: list[Any], what: str) -> None:
    if len(values) > JOIN_LIMIT:
        raise QueryTooComplex(f"{what} matches more than {JOIN_LIMIT} resources")


def sort_columns(sort: tuple[vocab.SortKey, ...]) -> list[tuple[str, bool, dict[str, Any] | None]]:
    """(field, descending, computed expression or None) for each key, then the ``pos`` tiebreak.

    A parameter sorts by the MIN (ascending) or MAX (descending) of its entries' field, with a
    sentinel when it has none, exactly as the SQLite adapter does, so a keyset cursor taken on one
    page finds the same place on the next.
    """
    cols: list[tuple[str, bool, dict[str, Any] | None]] = []
    for n, key in enumerate(sort):
        if key.param == "_id":
            cols.append(("id", key.descending, None))
            continue
        if key.param == "_lastUpdated":
            cols.append(("updated", key.descending, None))
            continue
        numeric = key.field in ("lo", "hi")
        if numeric:
            sentinel: Any = LOW_NUM if key.descending else HIGH_NUM
        else:
            sentinel = LOW_STR if key.descending else HIGH_STR
        values = {"$map": {
            "input": {"$filter": {"input": {"$ifNull": ["$idx", []]}, "as": "e",
                                  "cond": {"$eq": ["$$e.p", key.param]}}},
            "as": "e", "in": f"$$e.{FIELD[key.field]}"}}
        agg = "$max" if key.descending else "$min"
        cols.append((f"_s{n}", key.descending, {"$ifNull": [{agg: values}, sentinel]}))
    cols.append(("pos", False, None))
    return cols


def keyset_filter(cols: list[tuple[str, bool, Any]], after: tuple[Any, ...]) -> Filter:
    """Rows strictly after ``after`` in the mixed ascending/descending order of ``cols``."""
    if len(after) != len(cols) or not all(
            v is None or isinstance(v, (str, int, float)) for v in after):
        raise InvalidCursor("the page cursor does not fit this search")
    ors: list[Filter] = []
    for n, (name, desc, _) in enumerate(cols):
        clause: Filter = {prev: {"$eq": after[m]} for m, (prev, _, _) in enumerate(cols[:n])}
        clause[name] = {"$lt" if desc else "$gt": after[n]}
        ors.append(clause)
    return ors[0] if len(ors) == 1 else {"$or": ors}


def base_filter(query: vocab.Query) -> Filter:
    match: Filter = {"type": query.type}
    if not query.include_deleted:
        match["deleted"] = False
    return match


def combine(*parts: Filter) -> Filter:
    kept = [p for p in parts if p]
    if not kept:
        return {}
    return kept[0] if len(kept) == 1 else {"$and": kept}
