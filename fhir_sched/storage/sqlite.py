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
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreUnavailable, bad_request
from ..query import (
    PRIMARY_DATE,
    AllOf,
    AnyOf,
    Chain,
    Cond,
    Entry,
    Expr,
    Has,
    IndexEntry,
    Missing,
    Not,
    Page,
    Query,
    SortKey,
)
from ..search.params import get_param
from .base import Record, VersionConflict

T = TypeVar("T")
log = logging.getLogger("fhir_sched.storage")

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
-- search: seeks by value (covering, so a driver never touches the table; lo/hi right after val
-- so "reference X in this window" is one range), seeks by date range, per-resource probes
-- (covering all but raw); resources_type walks one type in insertion order for plain pages.
CREATE INDEX IF NOT EXISTS idx_val ON idx(type, param, val, lo, hi, sys, id);
CREATE INDEX IF NOT EXISTS idx_lo ON idx(type, param, lo, hi, id);
CREATE INDEX IF NOT EXISTS idx_owner ON idx(type, id, param, val, sys, lo, hi);
CREATE INDEX IF NOT EXISTS resources_type ON resources(type, deleted);
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
        self._wloop: asyncio.AbstractEventLoop | None = None
        self._gets = _GetBatcher(self)
        self._units = _UnitBatcher(self)
        self._checkpointer: _Checkpointer | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        # Checkpoints run on their own thread (_Checkpointer), never inside a commit.
        conn.execute("PRAGMA wal_autocheckpoint=0")
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
        if self.path != ":memory:":
            self._checkpointer = _Checkpointer(self._connect)
            self._checkpointer.start()

    async def close(self) -> None:
        if self._checkpointer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.stop)
            self._checkpointer = None
        if self._wconn is not None:
            await self._in_writer(self._close_writer)
            self._wconn = None
        self._wexec.shutdown(wait=True)
        self._rexec.shutdown(wait=True)

    def _close_writer(self) -> None:
        if self._wloop is not None:
            self._wloop.close()
            self._wloop = None
        if self._wconn is not None:
            self._wconn.close()

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
        return await self._units.submit(fn)

    def _run_units(self, fns: list[UnitFn]) -> list[tuple[bool, Any]]:
        """A batch of units in one transaction on the writer thread: group commit.

        Each ``fn`` is a coroutine function written against the async Unit port; here it runs
        to completion on the writer thread's own event loop, where every unit operation is a
        direct SQLite call (no thread hand-off per statement, nothing on the server's loop).
        Each unit runs inside its own SAVEPOINT, so a failing unit undoes only its own writes
        and later units see exactly what a serial execution would show them. One COMMIT (one
        fsync) then makes the whole batch durable; no unit is acknowledged before it, and if
        it fails every unit of the batch fails.
        """
        conn = self._wconn
        assert conn is not None
        if self._wloop is None:
            self._wloop = asyncio.new_event_loop()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # locked by another process past busy_timeout
            return [(False, StoreUnavailable(str(exc)))] * len(fns)
        results: list[tuple[bool, Any]] = []
        try:
            for fn in fns:
                conn.execute("SAVEPOINT unit")
                try:
                    value = self._wloop.run_until_complete(fn(SqliteUnit(conn)))
                except Exception as exc:
                    conn.execute("ROLLBACK TO unit")
                    conn.execute("RELEASE unit")
                    results.append((False, exc))
                else:
                    conn.execute("RELEASE unit")
                    results.append((True, value))
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StoreUnavailable(str(exc)) if isinstance(exc, sqlite3.Error) else exc
            if not isinstance(exc, Exception):
                raise
            return [(False, failure)] * len(fns)
        return results

    # -- reads -------------------------------------------------------------------------------
    async def get(self, type_: str, id_: str) -> Record | None:
        return await self._gets.submit(type_, id_)

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


class _Checkpointer(threading.Thread):
    """Copies the WAL back into the database file off the write path.

    By default SQLite checkpoints inside whichever commit crosses 1000 WAL pages; on a large
    store that commit then writes scattered pages into the main file and fsyncs them while
    holding the write lock (guarded creates on a 1.2 GB store: 365/s with it, 607/s without).
    Here a PASSIVE checkpoint, which never blocks writers or readers, runs twice a second on
    its own connection, and a final TRUNCATE on close leaves a small WAL behind.
    """

    INTERVAL = 0.5

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(name="sqlite-checkpoint", daemon=True)
        self._connect = connect
        self._stopping = threading.Event()

    def run(self) -> None:
        conn = self._connect()
        try:
            while not self._stopping.wait(self.INTERVAL):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # busy or I/O trouble: try again next time
                    log.warning("WAL checkpoint failed: %s", exc)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("final WAL checkpoint failed: %s", exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join()


UnitFn = Callable[["SqliteUnit"], Awaitable[Any]]


class _UnitBatcher:
    """Queues atomic units for the writer thread; whatever queued while a batch was being
    written goes together as the next batch (see ``SqliteStore._run_units``)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._pending: list[tuple[UnitFn, asyncio.Future[Any]]] = []
        self._running = False

    def submit(self, fn: UnitFn) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, fut))
        if not self._running:
            self._dispatch()
        return fut

    def _dispatch(self) -> None:
        batch, self._pending = self._pending, []
        self._running = True
        loop = asyncio.get_running_loop()
        done = self._store._wexec.submit(self._store._run_units, [fn for fn, _ in batch])
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(self._finish, batch, f))

    def _finish(self, batch: list[tuple[UnitFn, asyncio.Future[Any]]],
                done: Future[list[tuple[bool, Any]]]) -> None:
        self._running = False
        try:
            results = done.result()
        except BaseException as exc:  # the writer thread itself failed
            results = [(False, exc)] * len(batch)
        for (_fn, fut), (ok, value) in zip(batch, results, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if self._pending:
            self._dispatch()


class _GetBatcher:
    """Point reads, handed to the reader threads in batches.

    Each hand-off to a thread costs a queue put, a thread wake-up and a loop wake-up, more than
    the primary-key lookup itself. Reads that arrive while earlier batches are in flight wait
    and go together, so under load one hand-off serves many requests; a lone read still goes
    at once. The lookups never run on the event loop.
    """

    MAX_IN_FLIGHT = 1

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._pending: list[tuple[str, str, asyncio.Future[Record | None]]] = []
        self._in_flight = 0

    def submit(self, type_: str, id_: str) -> asyncio.Future[Record | None]:
        fut: asyncio.Future[Record | None] = asyncio.get_running_loop().create_future()
        self._pending.append((type_, id_, fut))
        if self._in_flight < self.MAX_IN_FLIGHT:
            self._dispatch()
        return fut

    def _dispatch(self) -> None:
        batch, self._pending = self._pending, []
        self._in_flight += 1
        keys = [(t, i) for t, i, _ in batch]
        loop = asyncio.get_running_loop()
        done = self._store._rexec.submit(self._run, keys)
        done.add_done_callback(
            lambda f: loop.call_soon_threadsafe(self._finish, batch, f))

    def _run(self, keys: list[tuple[str, str]]) -> list[Record | Exception | None]:
        conn = self._store._reader()
        out: list[Record | Exception | None] = []
        for t, i in keys:
            try:
                out.append(_get(conn, t, i))
            except sqlite3.OperationalError as exc:
                out.append(StoreUnavailable(str(exc)))
            except Exception as exc:  # delivered to the one request it belongs to
                out.append(exc)
        return out

    def _finish(self, batch: list[tuple[str, str, asyncio.Future[Record | None]]],
                done: Future[list[Record | Exception | None]]) -> None:
        self._in_flight -= 1
        try:
            results: list[Record | Exception | None] = done.result()
        except Exception as exc:  # the executor itself failed (e.g. shut down)
            results = [exc] * len(batch)
        for (_t, _i, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)
        if self._pending and self._in_flight < self.MAX_IN_FLIGHT:
            self._dispatch()


class SqliteUnit:
    """Operations inside one ``BEGIN IMMEDIATE`` transaction, run on the writer thread (see
    ``SqliteStore._run_unit``): each is a direct call on the writer connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def get(self, type_: str, id_: str) -> Record | None:
        return _get(self._conn, type_, id_)

    async def find_ids(self, query: Query, limit: int = 2) -> list[str]:
        def run() -> list[str]:
            sql, args = _select_sql(query, "r.id", limit=limit, keyset=False)
            return [row[0] for row in self._conn.execute(sql, args)]

        return run()

    async def write(
        self, record: Record, entries: list[IndexEntry], expect_version: int | None
    ) -> None:
        _write(self._conn, record, entries, expect_version)

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

        return run()

    async def claims_of(self, owner_type: str, owner_id: str) -> list[str]:
        def run() -> list[str]:
            return [r[0] for r in self._conn.execute(
                "SELECT key FROM claims WHERE owner_type=? AND owner_id=? ORDER BY key",
                (owner_type, owner_id))]

        return run()

    async def release(self, owner_type: str, owner_id: str, keys: list[str] | None = None) -> None:
        def run() -> None:
            if keys is None:
                self._conn.execute("DELETE FROM claims WHERE owner_type=? AND owner_id=?",
                                   (owner_type, owner_id))
            else:
                self._conn.executemany(
                    "DELETE FROM claims WHERE key=? AND owner_type=? AND owner_id=?",
                    [(k, owner_type, owner_id) for k in keys])

        run()

    async def count_claims(self, prefix: str) -> int:
        def run() -> int:
            return self._conn.execute(
                "SELECT count(*) FROM claims WHERE key >= ? AND key < ?",
                (prefix, prefix + "\U0010ffff")).fetchone()[0]

        return run()


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


# -- search compilation ------------------------------------------------------------------------
# A search is answered from the ``idx`` table (one row per index entry, see IndexEntry). The
# plan: pick one condition that an index seek answers (the "driver": an equality on a reference
# or token, a string prefix, a date range, a chain), fetch the ids it yields, and test everything
# else per candidate with correlated EXISTS probes on ``idx_owner``. With a connection at hand the
# candidate drivers are counted (bounded by LIMIT) and the smallest wins, so ``status=free`` never
# drives when ``schedule=X`` is there; when every driver is huge and no sort was asked for, the
# scan walks ``resources_type`` in insertion order and stops after one page.
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
    ``alias`` itself (see ``extract.PRIMARY_DATE``)."""
    tests = []
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

    ``folded``: conditions on the type's primary date (``extract.PRIMARY_DATE``), tested on the
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


def _select_sql(
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
    if len(after) != len(sort_exprs):
        raise bad_request("_page token does not fit this search; start the search again",
                          ["_page"])
    if len(sort_exprs) == 1:
        return f"r.pos > {q.arg(after[0])}"
    ors = []
    for n, (expr, desc) in enumerate(sort_exprs):
        eqs = [f"{e} = {q.arg(after[m])}" for m, (e, _) in enumerate(sort_exprs[:n])]
        eqs.append(f"{expr} {'<' if desc else '>'} {q.arg(after[n])}")
        ors.append("(" + " AND ".join(eqs) + ")")
    return "(" + " OR ".join(ors) + ")"


def _one_entry_each(query: Query) -> bool:
    """True when the query is one equality on a reference parameter: a resource
    has at most one such entry (extraction drops duplicates, and a reference's other fields
    follow from its value), so its seek yields each id once and needs no DISTINCT."""
    if len(query.where) != 1 or not isinstance(query.where[0], Entry):
        return False
    entry = query.where[0]
    sp = get_param(query.type, entry.param)
    return (sp is not None and sp.type == "reference" and len(entry.conds) == 1
            and entry.conds[0].field == "val" and entry.conds[0].op == "=")


def _count_sql(query: Query, conn: sqlite3.Connection) -> tuple[str, dict[str, Any]]:
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


def _search(c: sqlite3.Connection, query: Query) -> Page:
    """One page (``count`` rows, plus one more to know whether there is a next page), the
    cursor after it, and the total when asked for. Runs in one reader thread and one read
    transaction, so the count and the page see the same snapshot."""
    c.execute("BEGIN")
    try:
        total = None
        if query.total or query.count_only:
            sql, args = _count_sql(query, c)
            total = c.execute(sql, args).fetchone()[0]
        if query.count_only:
            return Page([], None, total)
        sql, args = _select_sql(query, "r.id, r.body", query.count + 1, keyset=True, conn=c)
        rows = c.execute(sql, args).fetchall()
    finally:
        c.execute("COMMIT")
    more = len(rows) > query.count
    rows = rows[: query.count]
    next_after = tuple(rows[-1][2:]) if more and rows else None
    return Page([(r[0], r[1]) for r in rows], next_after, total)
