"""The neutral ``Query`` compiled to SQL over the ``idx`` and ``resources`` tables.

A search is answered from the ``idx`` table (one row per index entry, see ``IndexEntry``). The
plan: pick one condition that an index seek answers (the "driver": an equality on a reference
or token, a string prefix, a date range, a chain), fetch the ids it yields, and test everything
else per candidate with correlated EXISTS probes on ``idx_owner``. With a connection at hand the
candidate drivers are counted (bounded by LIMIT) and the smallest wins, so ``status=free`` never
drives when ``schedule=X`` is there; when every driver is huge and no sort was asked for, the
scan walks ``resources_type`` in insertion order and stops after one page.

Entry points: ``search`` (one page, run in a reader thread), ``select_sql`` (the page's SELECT,
also for ids inside a unit) and ``explain`` (the plan SQLite chooses, for benchmarks).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ...query import (
    PRIMARY_DATE,
    AllOf,
    AnyOf,
    Chain,
    Cond,
    Entry,
    Expr,
    Has,
    Missing,
    Not,
    Page,
    Query,
    SortKey,
)
from ..errors import InvalidCursor

_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
# Sentinels that sort missing values last (ascending) or last (descending) in keyset order.
_HIGH_NUM, _LOW_NUM = 9.0e18, -9.0e18
_HIGH_STR, _LOW_STR = "\U0010ffff", ""


class _Sql:
    """Accumulates SQL text and positional arguments while compiling a Query."""

    def __init__(self) -> None:
        self.args: dict[str, Any] = {}

    def arg(self, value: Any) -> str:
        # Named parameters: SQL fragments are built out of textual order (sort keys appear in
        # SELECT, WHERE and ORDER BY), so positional "?" would bind the wrong values.
        name = f"p{len(self.args)}"
        self.args[name] = value
        return f":{name}"


_DRIVER_CAP = 20_000  # a driver yielding more ids than this is no better than an ordered scan
_SMALL_ENOUGH = 64  # stop counting other drivers once one is this small
# Index hints: without statistics SQLite's planner is prone to answer a correlated probe
# (type=r.type AND id=r.id AND param=?) from a covering (type, param, ...) index, which scans
# every entry of the parameter; the hints pin the plans this module is designed around.
_PROBE = "INDEXED BY idx_owner"


def _cond_sql(alias: str, cond: Cond, q: _Sql) -> str:
    """One comparison on an idx column. SQL semantics: a comparison with NULL is false, so
    ``!=`` does not match an entry where the field is absent (documented in query.Cond)."""
    return _compare(f"{alias}.{cond.field}", cond, q)


def _compare(col: str, cond: Cond, q: _Sql) -> str:
    if cond.op == "isnull":
        return f"{col} IS NULL"
    if cond.op == "notnull":
        return f"{col} IS NOT NULL"
    if cond.op == "startswith":
        # A half-open range rather than substr()/LIKE so the (type, param, val) index serves
        # it; values are pre-normalised, and UTF-8 byte order is code point order.
        return (f"({col} >= {q.arg(cond.value)} AND "
                f"{col} < {q.arg(str(cond.value) + chr(0x10FFFF))})")
    if cond.op == "contains":
        return f"instr({col}, {q.arg(cond.value)}) > 0"
    return f"{col} {_OPS[cond.op]} {q.arg(cond.value)}"


def _id_only(expr: Expr) -> bool:
    """An Entry on ``_id`` testing nothing but ``val``: answered by the resources key itself."""
    return (isinstance(expr, Entry) and expr.param == "_id" and bool(expr.conds)
            and all(c.field == "val" for c in expr.conds))


def _entry_conds(alias: str, entry: Entry, q: _Sql) -> str:
    return " AND ".join(_cond_sql(alias, c, q) for c in entry.conds) or "1"


def _expr_sql(expr: Expr, rtype: str, rid: str, q: _Sql, depth: int = 0) -> str:
    """SQL boolean for ``expr`` about the resource whose type/id columns are ``rtype``/``rid``."""
    a = f"i{depth}"
    if _id_only(expr):
        assert isinstance(expr, Entry)
        return "(" + " AND ".join(_compare(rid, c, q) for c in expr.conds) + ")"
    if isinstance(expr, Entry):
        parts = [f"{a}.type={rtype}", f"{a}.id={rid}", f"{a}.param={q.arg(expr.param)}"]
        parts += [_cond_sql(a, c, q) for c in expr.conds]
        return f"EXISTS (SELECT 1 FROM idx {a} {_PROBE} WHERE {' AND '.join(parts)})"
    if isinstance(expr, Missing):
        inner = (f"EXISTS (SELECT 1 FROM idx {a} {_PROBE} WHERE {a}.type={rtype} AND {a}.id={rid}"
                 f" AND {a}.param={q.arg(expr.param)})")
        return f"NOT {inner}" if expr.missing else inner
    if isinstance(expr, Not):
        return f"NOT ({_expr_sql(expr.inner, rtype, rid, q, depth + 1)})"
    if isinstance(expr, AnyOf):
        return _any_sql(expr, rtype, rid, q, depth)
    if isinstance(expr, AllOf):
        if not expr.items:
            return "1"
        return "(" + " AND ".join(_expr_sql(e, rtype, rid, q, depth + 1) for e in expr.items) + ")"
    if isinstance(expr, Chain):
        refs = _refs_sql(expr.target, expr.where, q, depth + 1)
        return (
            f"EXISTS (SELECT 1 FROM idx {a} {_PROBE} WHERE {a}.type={rtype} AND {a}.id={rid}"
            f" AND {a}.param={q.arg(expr.param)} AND {a}.val IN ({refs}))"
        )
    if isinstance(expr, Has):
        primary = PRIMARY_DATE.get(expr.source)
        dated = tuple(e for e in expr.where if _on_primary_date(e, primary))
        parts = [
            f"{a}.type={q.arg(expr.source)}",
            f"{a}.param={q.arg(expr.param)}",
            f"{a}.val = {rtype} || '/' || {rid}",
            *_folded_sql(a, dated, q),
        ] + [_expr_sql(e, f"{a}.type", f"{a}.id", q, depth + 1) for e in expr.where
             if e not in dated]
        return f"EXISTS (SELECT 1 FROM idx {a} INDEXED BY idx_val WHERE {' AND '.join(parts)})"
    raise TypeError(f"unknown query expression {expr!r}")


def _any_sql(expr: AnyOf, rtype: str, rid: str, q: _Sql, depth: int) -> str:
    """OR, with two rewrites that keep one probe per parameter: Entries on the same parameter
    share one EXISTS (some entry satisfies c1, or some satisfies c2 = some satisfies c1 or c2),
    and ``_id`` equalities become one ``IN`` on the resources key."""
    if not expr.items:
        return "0"
    a = f"i{depth}"
    ids: list[Any] = []
    by_param: dict[str, list[Entry]] = {}
    others: list[Expr] = []
    for item in expr.items:
        if (_id_only(item) and isinstance(item, Entry) and len(item.conds) == 1
                and item.conds[0].op == "="):
            ids.append(item.conds[0].value)
        elif isinstance(item, Entry) and item.param != "_id":
            by_param.setdefault(item.param, []).append(item)
        else:
            others.append(item)
    ors: list[str] = []
    if ids:
        ors.append(f"{rid} IN ({', '.join(q.arg(v) for v in ids)})")
    for param, entries in by_param.items():
        alts = " OR ".join(f"({_entry_conds(a, e, q)})" for e in entries)
        ors.append(f"EXISTS (SELECT 1 FROM idx {a} {_PROBE} WHERE {a}.type={rtype} AND {a}.id={rid}"
                   f" AND {a}.param={q.arg(param)} AND ({alts}))")
    ors += [_expr_sql(e, rtype, rid, q, depth + 1) for e in others]
    return ors[0] if len(ors) == 1 else "(" + " OR ".join(ors) + ")"


def _implied(conds: tuple[Cond, ...] | list[Cond]) -> list[Cond]:
    """``conds`` plus the lower-bound-on-``lo`` that an upper bound on ``hi`` implies (an entry's
    range never ends before it starts), so a range seek on ``lo`` has both ends: ``eq`` on a day
    then scans that day, not everything after it."""
    extra = [Cond("lo", c.op, c.value) for c in conds
             if c.field == "hi" and c.op in ("<", "<=")
             and not any(o.field == "lo" and o.op == c.op and o.value == c.value for o in conds)]
    return [*conds, *extra]


def _folded_sql(alias: str, folded: tuple[Expr, ...], q: _Sql) -> list[str]:
    """Primary-date conditions tested on the copy of the date range carried by the entry
    ``alias`` itself (see ``query.PRIMARY_DATE``)."""
    tests: list[str] = []
    for extra in folded:
        entries = [e for e in (extra.items if isinstance(extra, AnyOf) else (extra,))
                   if isinstance(e, Entry)]
        if len(entries) == 1:
            tests.extend(_cond_sql(alias, c, q) for c in _implied(entries[0].conds))
        else:
            tests.append("(" + " OR ".join(f"({_entry_conds(alias, e, q)})"
                                            for e in entries) + ")")
    return tests


def _seek_sql(type_: str, expr: Expr, q: _Sql, depth: int = 0,
              folded: tuple[Expr, ...] = ()) -> str | None:
    """A SELECT of the ids of ``type_`` resources satisfying ``expr`` that an index seek answers
    on its own (so ``expr`` needs no further test), or None when ``expr`` is not seekable.

    ``folded``: conditions on the type's primary date (``query.PRIMARY_DATE``), tested on the
    range copied into the seeked entry itself, so that "this reference in this window" is one
    covering range of ``idx_val`` rather than a probe per resource the reference has."""
    d = f"d{depth}"
    head = f"SELECT {d}.id FROM idx {d} INDEXED BY idx_val WHERE {d}.type={q.arg(type_)}"
    if isinstance(expr, Entry) and expr.param != "_id":
        conds = list(expr.conds)
        key = next((c for c in conds if c.field == "val" and c.op == "="), None)
        if key is None:
            key = next((c for c in conds if c.field == "val" and c.op == "startswith"), None)
        if key is None:
            conds = _implied(conds)
            key = next((c for c in conds if c.field == "lo" and c.op in ("<", "<=", ">", ">=")),
                       None)
            head = head.replace("INDEXED BY idx_val", "INDEXED BY idx_lo")
        if key is None:
            return None
        tests = [_cond_sql(d, c, q) for c in [key, *(c for c in conds if c is not key)]]
        tests += _folded_sql(d, folded, q)
        return f"{head} AND {d}.param={q.arg(expr.param)} AND {' AND '.join(tests)}"
    if isinstance(expr, AnyOf) and expr.items:
        parts = [_seek_sql(type_, e, q, depth, folded) for e in expr.items]
        if any(p is None for p in parts):
            return None
        return " UNION ALL ".join(p for p in parts if p is not None)
    if isinstance(expr, Chain):
        refs = _refs_sql(expr.target, expr.where, q, depth + 1)
        tests = [f"{d}.val IN ({refs})", *_folded_sql(d, folded, q)]
        return f"{head} AND {d}.param={q.arg(expr.param)} AND {' AND '.join(tests)}"
    return None


def _foldable(expr: Expr, primary: str | None) -> bool:
    """Seeks that may carry the primary-date window: a value test on another parameter, an OR
    of such tests (``schedule=a,b`` with a ``start`` window is one range per alternative), or
    a chain."""
    if isinstance(expr, Chain):
        return True
    items = expr.items if isinstance(expr, AnyOf) else (expr,)
    return bool(items) and all(
        isinstance(e, Entry) and e.param not in (primary, "_id")
        and any(c.field == "val" for c in e.conds) for e in items)


def _on_primary_date(expr: Expr, primary: str | None) -> bool:
    """A positive range test on the primary date (an Entry, or an OR of them, on lo/hi only)."""
    if primary is None:
        return False
    items = expr.items if isinstance(expr, AnyOf) else (expr,)
    return bool(items) and all(
        isinstance(e, Entry) and e.param == primary and bool(e.conds)
        and all(c.field in ("lo", "hi") and c.op in _OPS for c in e.conds)
        for e in items)


def _rank(expr: Expr) -> int:
    """Static guess at how selective a seekable expression is (lower is better), used to order
    the counting and, without a connection, to choose outright."""
    if isinstance(expr, Entry):
        ops = {(c.field, c.op) for c in expr.conds}
        if ("val", "=") in ops:
            value = next(c.value for c in expr.conds if c.field == "val" and c.op == "=")
            # references (Type/id), identifiers (with a system) are near-unique
            if ("sys", "=") in ops or "/" in str(value) or expr.param.endswith(":identifier"):
                return 1
            return 3
        if ("val", "startswith") in ops:
            return 4
        return 5
    if isinstance(expr, AnyOf):
        return max((_rank(e) for e in expr.items), default=9)
    if isinstance(expr, Chain):
        return 2
    return 9


def _driver(query: Query, q: _Sql, conn: sqlite3.Connection | None = None,
            scan_ok: bool = True) -> tuple[str, tuple[Expr, ...]]:
    """Choose the driving seek: returns (a SELECT of candidate ids or "", the conditions it
    leaves to test). ``scan_ok``: an ordered scan may replace a huge driver (not for counts,
    which read every match anyway)."""
    if any(_id_only(e) or (isinstance(e, AnyOf) and e.items and all(map(_id_only, e.items)))
           for e in query.where):
        return "", query.where  # the resources key answers _id directly
    primary = PRIMARY_DATE.get(query.type)
    dated = [m for m, e in enumerate(query.where) if _on_primary_date(e, primary)]
    cands: list[tuple[int, int, str, tuple[int, ...]]] = []
    for n, expr in enumerate(query.where):
        fold: tuple[int, ...] = ()
        if _foldable(expr, primary):
            fold = tuple(m for m in dated if m != n)
        seek = _seek_sql(query.type, expr, q, folded=tuple(query.where[m] for m in fold))
        if seek is not None:
            cands.append((_rank(expr) - (1 if fold else 0), n, seek, fold))
    if not cands:
        return "", query.where
    cands.sort()
    chosen: tuple[int, int, str, tuple[int, ...]] | None = cands[0]
    if conn is not None:
        chosen, best = None, _DRIVER_CAP
        for cand in cands:
            found = conn.execute(f"SELECT count(*) FROM ({cand[2]} LIMIT {best})",
                                 q.args).fetchone()[0]
            if found < best:
                chosen, best = cand, found
                if best <= _SMALL_ENOUGH:
                    break
        if chosen is None:
            if scan_ok and not query.sort:
                return "", query.where  # everything is big: an ordered scan stops after a page
            chosen = cands[0]
    assert chosen is not None
    _, n, seek, fold = chosen
    used = {n, *fold}
    return seek, tuple(e for m, e in enumerate(query.where) if m not in used)


def _refs_sql(target: str, where: tuple[Expr, ...], q: _Sql, depth: int) -> str:
    """``SELECT 'Target/' || id`` of live ``target`` resources matching ``where`` (for chains)."""
    t = f"t{depth}"
    sub = Query(target, where)
    driver, rest = _driver(sub, q)
    parts = [f"{t}.type={q.arg(target)}", f"{t}.deleted=0"]
    if driver:
        parts.append(f"{t}.id IN ({driver})")
    parts += [_expr_sql(e, f"{t}.type", f"{t}.id", q, depth + 1) for e in rest]
    hint = "INDEXED BY resources_key" if driver else ""
    return (f"SELECT {q.arg(target + '/')} || {t}.id FROM resources {t} {hint}"
            f" WHERE {' AND '.join(parts)}")


def _sort_sql(key: SortKey, q: _Sql) -> str:
    """The sort value of one key: the lowest entry ascending, the highest descending, with a
    sentinel so that resources without a value sort last either way (and keyset comparisons
    never meet NULL)."""
    agg = "MAX" if key.descending else "MIN"
    numeric = key.field in ("lo", "hi")
    if key.param == "_id":
        return "r.id"
    if key.param == "_lastUpdated":
        return "r.updated"
    sentinel = (_LOW_NUM if key.descending else _HIGH_NUM) if numeric else (
        _LOW_STR if key.descending else _HIGH_STR)
    return (f"COALESCE((SELECT {agg}(s.{key.field}) FROM idx s {_PROBE}"
            f" WHERE s.type=r.type AND s.id=r.id"
            f" AND s.param={q.arg(key.param)}), {q.arg(sentinel)})")


def select_sql(
    query: Query, columns: str, limit: int | None, keyset: bool,
    conn: sqlite3.Connection | None = None,
) -> tuple[str, dict[str, Any]]:
    """The SELECT for ``query``. Order: the sort keys, then ``r.pos`` (insertion order, unique),
    which makes the order total and so keyset paging exact. With ``keyset`` the sort values are
    appended to ``columns`` so the caller can build the next cursor."""
    q = _Sql()
    where = [f"r.type={q.arg(query.type)}"]
    if not query.include_deleted:
        where.append("r.deleted=0")
    driver, rest = _driver(query, q, conn)
    if driver:
        where.append(f"r.id IN ({driver})")
    where += [_expr_sql(e, "r.type", "r.id", q) for e in rest]
    sort_exprs = [(_sort_sql(k, q), k.descending) for k in query.sort]
    sort_exprs.append(("r.pos", False))
    if keyset and query.after is not None:
        where.append(_keyset_sql(sort_exprs, query.after, q))
    # With a driver, "+r.pos" keeps SQLite from trading the seek for a scan in rowid order.
    order = ", ".join(f"{'+r.pos' if e == 'r.pos' and driver else e} {'DESC' if d else 'ASC'}"
                      for e, d in sort_exprs)
    sort_cols = "".join(f", {e}" for e, _ in sort_exprs) if keyset else ""
    # The driver's ids (or _id values) are looked up by key; otherwise one type is walked in
    # insertion order (resources_type), which stops after a page when nothing is sorted.
    by_key = driver or any(_id_only(e) or (isinstance(e, AnyOf) and e.items
                                           and all(map(_id_only, e.items))) for e in rest)
    hint = "INDEXED BY resources_key" if by_key else ""
    sql = (f"SELECT {columns}{sort_cols} FROM resources r {hint} WHERE {' AND '.join(where)}"
           f" ORDER BY {order}")
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql, q.args


def _keyset_sql(sort_exprs: list[tuple[str, bool]], after: tuple[Any, ...], q: _Sql) -> str:
    """(k1, k2, ..., pos) strictly after ``after`` in the mixed asc/desc order."""
    if len(after) != len(sort_exprs) or not all(
            v is None or isinstance(v, (str, int, float)) for v in after):
        raise InvalidCursor("the page cursor does not fit this search")
    if len(sort_exprs) == 1:
        return f"r.pos > {q.arg(after[0])}"
    ors = []
    for n, (expr, desc) in enumerate(sort_exprs):
        eqs = [f"{e} = {q.arg(after[m])}" for m, (e, _) in enumerate(sort_exprs[:n])]
        eqs.append(f"{expr} {'<' if desc else '>'} {q.arg(after[n])}")
        ors.append("(" + " AND ".join(eqs) + ")")
    return "(" + " OR ".join(ors) + ")"


def _one_entry_each(query: Query) -> bool:
    """True when the query is one equality on ``val`` of an entry the parser marked
    ``Entry.unique`` (a reference: extraction drops duplicates, and a reference's other fields
    follow from its value), so its seek yields each id once and needs no DISTINCT."""
    if len(query.where) != 1 or not isinstance(query.where[0], Entry):
        return False
    entry = query.where[0]
    return (entry.unique and len(entry.conds) == 1
            and entry.conds[0].field == "val" and entry.conds[0].op == "=")


def count_sql(query: Query, conn: sqlite3.Connection) -> tuple[str, dict[str, Any]]:
    """``count(*)`` of every match. A count reads every match, so it always drives from the
    best seek (never an ordered scan), and when the seek answers the whole query it counts
    index entries alone: idx rows exist only for live resources, so no table is touched."""
    q = _Sql()
    driver, rest = _driver(query, q, conn, scan_ok=False)
    if driver and not rest and not query.include_deleted:
        if _one_entry_each(query):
            return f"SELECT count(*) FROM ({driver})", q.args
        return f"SELECT count(*) FROM (SELECT DISTINCT id FROM ({driver}))", q.args
    where = [f"r.type={q.arg(query.type)}"]
    if not query.include_deleted:
        where.append("r.deleted=0")
    if driver:
        where.append(f"r.id IN ({driver})")
    where += [_expr_sql(e, "r.type", "r.id", q) for e in rest]
    hint = "INDEXED BY resources_key" if driver else ""
    return f"SELECT count(*) FROM resources r {hint} WHERE {' AND '.join(where)}", q.args


def search(c: sqlite3.Connection, query: Query) -> Page:
    """One page (``count`` rows, plus one more to know whether there is a next page), the
    cursor after it, and the total when asked for. Runs in one reader thread and one read
    transaction, so the count and the page see the same snapshot."""
    c.execute("BEGIN")
    try:
        total = None
        if query.total or query.count_only:
            sql, args = count_sql(query, c)
            total = c.execute(sql, args).fetchone()[0]
        if query.count_only:
            return Page([], None, total)
        sql, args = select_sql(query, "r.id, r.body", query.count + 1, keyset=True, conn=c)
        rows = c.execute(sql, args).fetchall()
    finally:
        c.execute("COMMIT")
    more = len(rows) > query.count
    rows = rows[: query.count]
    next_after = tuple(rows[-1][2:]) if more and rows else None
    return Page([(r[0], r[1]) for r in rows], next_after, total)


def explain(c: sqlite3.Connection, query: Query) -> list[str]:
    """The plan SQLite chooses for the page ``search`` would read (EXPLAIN QUERY PLAN's
    details, one line per step), for benchmarks and diagnostics."""
    sql, args = select_sql(query, "r.id, r.body", query.count + 1, keyset=True, conn=c)
    return [str(row[-1]) for row in c.execute(f"EXPLAIN QUERY PLAN {sql}", args)]
