"""Embedded SQLite adapter: the zero-configuration default store.

Durability: WAL journal, ``synchronous=FULL`` by default, and the commit returns before the HTTP
response is sent, so an acknowledged write survives a crash. Concurrency: writers take SQLite's
write lock up front (``BEGIN IMMEDIATE``) and every version check and claim is a SQL condition or
a UNIQUE constraint, so the guarantees hold across processes sharing the file. Inside one process
writers are queued on one connection and one thread: SQLite admits one writer at a time anyway, and
threads parked on the file lock would starve the executor.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreUnavailable
from ..search.query import (
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
from .base import IndexEntry, Record, VersionConflict

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources(
  pos INTEGER PRIMARY KEY AUTOINCREMENT,
  type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, updated TEXT NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0, body BLOB);
CREATE UNIQUE INDEX IF NOT EXISTS resources_key ON resources(type, id);
CREATE TABLE IF NOT EXISTS changes(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, updated TEXT NOT NULL,
  method TEXT NOT NULL, body BLOB);
CREATE UNIQUE INDEX IF NOT EXISTS changes_version ON changes(type, id, version);
CREATE INDEX IF NOT EXISTS changes_type ON changes(type, seq);
CREATE INDEX IF NOT EXISTS changes_updated ON changes(updated);
CREATE TABLE IF NOT EXISTS idx(
  type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
  sys TEXT, val TEXT, raw TEXT, lo, hi);
CREATE INDEX IF NOT EXISTS idx_val ON idx(type, param, val);
CREATE INDEX IF NOT EXISTS idx_lo ON idx(type, param, lo);
CREATE INDEX IF NOT EXISTS idx_owner ON idx(type, id, param);
CREATE TABLE IF NOT EXISTS claims(
  key TEXT PRIMARY KEY, owner_type TEXT NOT NULL, owner_id TEXT NOT NULL,
  expires TEXT) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_owner ON claims(owner_type, owner_id);
"""

_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
# Sentinels that sort missing values last (ascending) or last (descending) in keyset order.
_HIGH_NUM, _LOW_NUM = 9.0e18, -9.0e18
_HIGH_STR, _LOW_STR = "\U0010ffff", ""


def path_from_url(url: str) -> str:
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite URL: {url}")
    rest = url[len("sqlite://") :]
    if rest.startswith("/"):
        rest = rest[1:]
    return rest or "fhir-sched.db"


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: str, synchronous: str = "full", readers: int = 4) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self._readers = readers
        self._wexec = ThreadPoolExecutor(1, thread_name_prefix="sqlite-w")
        self._rexec = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-r")
        self._local = threading.local()
        self._wconn: sqlite3.Connection | None = None
        self._wlock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    async def start(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

        def init() -> sqlite3.Connection:
            conn = self._connect()
            conn.executescript(SCHEMA)
            _upgrade(conn)
            return conn

        self._wconn = await self._in_writer(init)

    async def close(self) -> None:
        if self._wconn is not None:
            await self._in_writer(self._wconn.close)
            self._wconn = None
        self._wexec.shutdown(wait=True)
        self._rexec.shutdown(wait=True)

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    # -- thread plumbing ---------------------------------------------------------------------
    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._wexec, fn, *args)

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            try:
                return fn(self._reader())
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(str(exc)) from exc

        return await asyncio.get_running_loop().run_in_executor(self._rexec, run)

    # -- atomic units ------------------------------------------------------------------------
    async def atomic(self, fn: Callable[[SqliteUnit], Awaitable[T]]) -> T:
        assert self._wconn is not None, "store not started"
        conn = self._wconn
        async with self._wlock:
            await self._in_writer(conn.execute, "BEGIN IMMEDIATE")
            try:
                result = await fn(SqliteUnit(self, conn))
            except BaseException:
                await self._in_writer(conn.execute, "ROLLBACK")
                raise
            await self._in_writer(conn.execute, "COMMIT")
            return result

    # -- reads -------------------------------------------------------------------------------
    async def get(self, type_: str, id_: str) -> Record | None:
        return await self._read(lambda c: _get(c, type_, id_))

    async def get_version(self, type_: str, id_: str, version: int) -> Record | None:
        def run(c: sqlite3.Connection) -> Record | None:
            row = c.execute(
                "SELECT seq, updated, method, body FROM changes"
                " WHERE type=? AND id=? AND version=?",
                (type_, id_, version),
            ).fetchone()
            if row is None:
                return None
            seq, updated, method, body = row
            return Record(type_, id_, version, updated, method == "DELETE", body, method, seq)

        return await self._read(run)

    async def history(
        self,
        type_: str | None,
        id_: str | None,
        since: str | None,
        count: int,
        before_seq: int | None,
    ) -> list[Record]:
        sql = "SELECT seq, type, id, version, updated, method, body FROM changes WHERE 1=1"
        args: list[Any] = []
        if type_ is not None:
            sql += " AND type=?"
            args.append(type_)
        if id_ is not None:
            sql += " AND id=?"
            args.append(id_)
        if since is not None:
            sql += " AND updated>=?"
            args.append(since)
        if before_seq is not None:
            sql += " AND seq<?"
            args.append(before_seq)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(count)

        def run(c: sqlite3.Connection) -> list[Record]:
            return [
                Record(t, i, v, u, m == "DELETE", b, m, s)
                for s, t, i, v, u, m, b in c.execute(sql, args)
            ]

        return await self._read(run)

    async def search(self, query: Query) -> Page:
        return await self._read(lambda c: _search(c, query))

    async def claim_keys(self, prefix: str) -> list[tuple[str, str, str]]:
        def run(c: sqlite3.Connection) -> list[tuple[str, str, str]]:
            return list(c.execute(
                "SELECT key, owner_type, owner_id FROM claims WHERE key >= ? AND key < ?"
                " ORDER BY key", (prefix, prefix + "\U0010ffff")))

        return await self._read(run)


    async def claims_between(self, lo: str, hi: str) -> list[tuple[str, str | None]]:
        def run(c: sqlite3.Connection) -> list[tuple[str, str | None]]:
            return list(c.execute(
                "SELECT key, expires FROM claims WHERE key >= ? AND key < ? ORDER BY key",
                (lo, hi)))

        return await self._read(run)


class SqliteUnit:
    """Operations inside one ``BEGIN IMMEDIATE`` transaction on the writer connection."""

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn

    async def get(self, type_: str, id_: str) -> Record | None:
        return await self._store._in_writer(_get, self._conn, type_, id_)

    async def find_ids(self, query: Query, limit: int = 2) -> list[str]:
        def run() -> list[str]:
            sql, args = _select_sql(query, "r.id", limit=limit, keyset=False)
            return [row[0] for row in self._conn.execute(sql, args)]

        return await self._store._in_writer(run)

    async def write(
        self, record: Record, entries: list[IndexEntry], expect_version: int | None
    ) -> None:
        await self._store._in_writer(_write, self._conn, record, entries, expect_version)

    async def claim(
        self, key: str, owner_type: str, owner_id: str, expires: str | None = None,
        now: str | None = None,
    ) -> bool:
        def run() -> bool:
            # One statement: insert, or take over a claim that is ours or has expired.
            cur = self._conn.execute(
                "INSERT INTO claims(key, owner_type, owner_id, expires) VALUES (?,?,?,?)"
                " ON CONFLICT(key) DO UPDATE SET owner_type=excluded.owner_type,"
                " owner_id=excluded.owner_id, expires=excluded.expires"
                " WHERE (claims.owner_type=excluded.owner_type"
                "        AND claims.owner_id=excluded.owner_id)"
                "    OR (claims.expires IS NOT NULL AND ? IS NOT NULL AND claims.expires <= ?)",
                (key, owner_type, owner_id, expires, now, now),
            )
            return cur.rowcount == 1

        return await self._store._in_writer(run)

    async def claims_of(self, owner_type: str, owner_id: str) -> list[str]:
        def run() -> list[str]:
            return [r[0] for r in self._conn.execute(
                "SELECT key FROM claims WHERE owner_type=? AND owner_id=? ORDER BY key",
                (owner_type, owner_id))]

        return await self._store._in_writer(run)

    async def release(self, owner_type: str, owner_id: str, keys: list[str] | None = None) -> None:
        def run() -> None:
            if keys is None:
                self._conn.execute("DELETE FROM claims WHERE owner_type=? AND owner_id=?",
                                   (owner_type, owner_id))
            else:
                self._conn.executemany(
                    "DELETE FROM claims WHERE key=? AND owner_type=? AND owner_id=?",
                    [(k, owner_type, owner_id) for k in keys])

        await self._store._in_writer(run)

    async def count_claims(self, prefix: str) -> int:
        def run() -> int:
            return self._conn.execute(
                "SELECT count(*) FROM claims WHERE key >= ? AND key < ?",
                (prefix, prefix + "\U0010ffff")).fetchone()[0]

        return await self._store._in_writer(run)


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a store made by an older release up to SCHEMA (additive changes only)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(claims)")}
    if "expires" not in columns:
        conn.execute("ALTER TABLE claims ADD COLUMN expires TEXT")


# -- SQL helpers (module level so they run in executor threads without closures) -------------
def _get(c: sqlite3.Connection, type_: str, id_: str) -> Record | None:
    row = c.execute(
        "SELECT version, updated, deleted, body FROM resources WHERE type=? AND id=?",
        (type_, id_),
    ).fetchone()
    if row is None:
        return None
    version, updated, deleted, body = row
    return Record(type_, id_, version, updated, bool(deleted), body)


def _write(
    c: sqlite3.Connection,
    rec: Record,
    entries: Sequence[IndexEntry],
    expect_version: int | None,
) -> None:
    row = c.execute(
        "SELECT version FROM resources WHERE type=? AND id=?", (rec.type, rec.id)
    ).fetchone()
    current = row[0] if row else 0
    if expect_version is not None and current != expect_version:
        raise VersionConflict(current)
    if rec.version <= current:
        raise VersionConflict(current)
    if row is None:
        c.execute(
            "INSERT INTO resources(type, id, version, updated, deleted, body) VALUES (?,?,?,?,?,?)",
            (rec.type, rec.id, rec.version, rec.updated, int(rec.deleted), rec.body),
        )
    else:
        c.execute(
            "UPDATE resources SET version=?, updated=?, deleted=?, body=? WHERE type=? AND id=?",
            (rec.version, rec.updated, int(rec.deleted), rec.body, rec.type, rec.id),
        )
    cur = c.execute(
        "INSERT INTO changes(type, id, version, updated, method, body) VALUES (?,?,?,?,?,?)",
        (rec.type, rec.id, rec.version, rec.updated, rec.method, rec.body),
    )
    rec.seq = cur.lastrowid or 0
    c.execute("DELETE FROM idx WHERE type=? AND id=?", (rec.type, rec.id))
    if entries and not rec.deleted:
        c.executemany(
            "INSERT INTO idx(type, id, param, sys, val, raw, lo, hi) VALUES (?,?,?,?,?,?,?,?)",
            [(rec.type, rec.id, e.param, e.sys, e.val, e.raw, e.lo, e.hi) for e in entries],
        )


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


def _cond_sql(alias: str, cond: Cond, q: _Sql) -> str:
    col = f"{alias}.{cond.field}"
    if cond.op == "isnull":
        return f"{col} IS NULL"
    if cond.op == "notnull":
        return f"{col} IS NOT NULL"
    if cond.op == "startswith":
        # GLOB is case-sensitive and uses the index on val; values are pre-normalised.
        return f"substr({col}, 1, {len(cond.value)}) = {q.arg(cond.value)}"
    if cond.op == "contains":
        return f"instr({col}, {q.arg(cond.value)}) > 0"
    return f"{col} {_OPS[cond.op]} {q.arg(cond.value)}"


def _expr_sql(expr: Expr, rtype: str, rid: str, q: _Sql, depth: int = 0) -> str:
    """SQL boolean for ``expr`` about the resource whose type/id columns are ``rtype``/``rid``."""
    a = f"i{depth}"
    if isinstance(expr, Entry):
        parts = [f"{a}.type={rtype}", f"{a}.id={rid}", f"{a}.param={q.arg(expr.param)}"]
        parts += [_cond_sql(a, c, q) for c in expr.conds]
        return f"EXISTS (SELECT 1 FROM idx {a} WHERE {' AND '.join(parts)})"
    if isinstance(expr, Missing):
        inner = (f"EXISTS (SELECT 1 FROM idx {a} WHERE {a}.type={rtype} AND {a}.id={rid}"
                 f" AND {a}.param={q.arg(expr.param)})")
        return f"NOT {inner}" if expr.missing else inner
    if isinstance(expr, Not):
        return f"NOT ({_expr_sql(expr.inner, rtype, rid, q, depth + 1)})"
    if isinstance(expr, AnyOf):
        if not expr.items:
            return "0"
        return "(" + " OR ".join(_expr_sql(e, rtype, rid, q, depth + 1) for e in expr.items) + ")"
    if isinstance(expr, AllOf):
        if not expr.items:
            return "1"
        return "(" + " AND ".join(_expr_sql(e, rtype, rid, q, depth + 1) for e in expr.items) + ")"
    if isinstance(expr, Chain):
        t = f"t{depth}"
        sub = " AND ".join(
            [f"{t}.type={q.arg(expr.target)}", f"{t}.deleted=0"]
            + [_expr_sql(e, f"{t}.type", f"{t}.id", q, depth + 1) for e in expr.where]
        )
        return (
            f"EXISTS (SELECT 1 FROM idx {a} WHERE {a}.type={rtype} AND {a}.id={rid}"
            f" AND {a}.param={q.arg(expr.param)} AND {a}.val IN"
            f" (SELECT {t}.type || '/' || {t}.id FROM resources {t} WHERE {sub}))"
        )
    if isinstance(expr, Has):
        parts = [
            f"{a}.type={q.arg(expr.source)}",
            f"{a}.param={q.arg(expr.param)}",
            f"{a}.val = {rtype} || '/' || {rid}",
        ] + [_expr_sql(e, f"{a}.type", f"{a}.id", q, depth + 1) for e in expr.where]
        return f"EXISTS (SELECT 1 FROM idx {a} WHERE {' AND '.join(parts)})"
    raise TypeError(f"unknown query expression {expr!r}")


def _driver(query: Query, q: _Sql) -> tuple[str, tuple[Any, ...]]:
    """Pick an equality Entry to drive the scan from the value index, if there is one."""
    for n, expr in enumerate(query.where):
        if isinstance(expr, Entry):
            eq = [c for c in expr.conds if c.field == "val" and c.op == "="]
            if eq:
                rest = [c for c in expr.conds if c is not eq[0]]
                extra = "".join(" AND " + _cond_sql("d", c, q) for c in rest)
                sql = (f"r.id IN (SELECT d.id FROM idx d WHERE d.type={q.arg(query.type)}"
                       f" AND d.param={q.arg(expr.param)} AND d.val={q.arg(eq[0].value)}{extra})")
                return sql, query.where[:n] + query.where[n + 1 :]
    return "", query.where


def _sort_sql(key: SortKey, q: _Sql) -> str:
    agg = "MAX" if key.descending else "MIN"
    numeric = key.field in ("lo", "hi")
    if key.param == "_id":
        return "r.id"
    if key.param == "_lastUpdated":
        return "r.updated"
    sentinel = (_LOW_NUM if key.descending else _HIGH_NUM) if numeric else (
        _LOW_STR if key.descending else _HIGH_STR)
    return (f"COALESCE((SELECT {agg}(s.{key.field}) FROM idx s WHERE s.type=r.type AND s.id=r.id"
            f" AND s.param={q.arg(key.param)}), {q.arg(sentinel)})")


def _select_sql(
    query: Query, columns: str, limit: int | None, keyset: bool
) -> tuple[str, dict[str, Any]]:
    q = _Sql()
    where = [f"r.type={q.arg(query.type)}"]
    if not query.include_deleted:
        where.append("r.deleted=0")
    driver, rest = _driver(query, q)
    if driver:
        where.append(driver)
    where += [_expr_sql(e, "r.type", "r.id", q) for e in rest]
    sort_exprs = [(_sort_sql(k, q), k.descending) for k in query.sort]
    sort_exprs.append(("r.pos", False))
    if keyset and query.after is not None:
        where.append(_keyset_sql(sort_exprs, query.after, q))
    order = ", ".join(f"{e} {'DESC' if d else 'ASC'}" for e, d in sort_exprs)
    sort_cols = "".join(f", {e}" for e, _ in sort_exprs) if keyset else ""
    sql = (f"SELECT {columns}{sort_cols} FROM resources r WHERE {' AND '.join(where)}"
           f" ORDER BY {order}")
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql, q.args


def _keyset_sql(sort_exprs: list[tuple[str, bool]], after: tuple[Any, ...], q: _Sql) -> str:
    """(k1, k2, ..., pos) strictly after ``after`` in the mixed asc/desc order."""
    ors = []
    for n, (expr, desc) in enumerate(sort_exprs):
        eqs = [f"{e} = {q.arg(after[m])}" for m, (e, _) in enumerate(sort_exprs[:n])]
        eqs.append(f"{expr} {'<' if desc else '>'} {q.arg(after[n])}")
        ors.append("(" + " AND ".join(eqs) + ")")
    return "(" + " OR ".join(ors) + ")"


def _search(c: sqlite3.Connection, query: Query) -> Page:
    total = None
    if query.total or query.count_only:
        sql, args = _select_sql(
            Query(query.type, query.where, include_deleted=query.include_deleted),
            "count(*)", None, keyset=False)
        sql = sql.split(" ORDER BY ")[0]
        total = c.execute(sql, args).fetchone()[0]
    if query.count_only:
        return Page([], None, total)
    sql, args = _select_sql(query, "r.id, r.body", query.count + 1, keyset=True)
    rows = c.execute(sql, args).fetchall()
    more = len(rows) > query.count
    rows = rows[: query.count]
    next_after = tuple(rows[-1][2:]) if more and rows else None
    return Page([(r[0], r[1]) for r in rows], next_after, total)
