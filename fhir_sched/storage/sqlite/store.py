"""The SQLite store: connections, threads, atomic units and the port's reads.

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
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ...metrics import timed_store
from ...query import Page, Query
from ..base import AuditEntry, InboundEntry, OutboundEntry, Record
from ..errors import QueryTimedOut, StoreUnavailable
from . import audit, changes, inbox, outbox, project, schema
from .batching import GetBatcher, UnitBatcher, UnitFn
from .checkpoint import Checkpointer
from .faults import translate
from .query import explain, search
from .unit import SqliteUnit

T = TypeVar("T")


def path_from_url(url: str) -> str:
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite URL: {url}")
    rest = url[len("sqlite://") :]
    if rest.startswith("/"):
        rest = rest[1:]
    return rest or "fhir-sched.db"


# Virtual-machine steps between deadline checks: ~1 ms of work, so the check costs nothing.
_PROGRESS_STEPS = 20_000

# The WAL is rewound once it holds this many bytes of pages (Checkpointer.restart_bytes) and
# its file is trimmed back to this size then.
WAL_KEEP_BYTES = 64 * 1024 * 1024


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: str, synchronous: str = "full", readers: int = 4,
                 search_seconds: float = 10.0) -> None:
        self.path = path
        self.search_seconds = search_seconds
        self.synchronous = synchronous.upper()
        self._readers = readers
        self._wexec = ThreadPoolExecutor(1, thread_name_prefix="sqlite-w")
        self._rexec = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-r")
        self._local = threading.local()
        self._wconn: sqlite3.Connection | None = None
        self._wloop: asyncio.AbstractEventLoop | None = None
        self._gets = GetBatcher(self._rexec, self._reader)
        self._units = UnitBatcher(self._wexec, self._run_units)
        self._checkpointer: Checkpointer | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        # Checkpoints run on their own thread (Checkpointer), never inside a commit.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # When the log is rewound (see Checkpointer), its file is cut back to this size.
        conn.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    async def start(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

        def init() -> sqlite3.Connection:
            conn = self._connect()
            schema.create(conn)
            return conn

        self._wconn = await self._in_writer(init)
        if self.path != ":memory:":
            self._checkpointer = Checkpointer(self._connect, WAL_KEEP_BYTES)
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
            except sqlite3.Error as exc:
                error = translate(exc)
                if error is exc:
                    raise
                raise error from exc

        return await asyncio.get_running_loop().run_in_executor(self._rexec, run)

    # -- atomic units ------------------------------------------------------------------------
    @timed_store("sqlite", "atomic")
    async def atomic(self, fn: Callable[[SqliteUnit], Awaitable[T]]) -> T:
        assert self._wconn is not None, "store not started"
        result: T = await self._units.submit(fn)
        return result

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
        if self._checkpointer is not None and self._checkpointer.rewind_wanted:
            self._checkpointer.rewind(conn)
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
                    results.append((False, translate(exc) if isinstance(exc, sqlite3.Error)
                                    else exc))
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
        return await self._read(lambda c: changes.version(c, type_, id_, version))

    async def history(self, type_: str | None, id_: str | None, since: str | None, count: int,
                      before_seq: int | None) -> list[Record]:
        sql, args = changes.history_sql(type_, id_, since, count, before_seq)
        return await self._read(lambda c: changes.history(c, sql, args))

    async def changes_since(self, position: int, limit: int) -> list[Record]:
        if limit <= 0:
            return []
        return await self._read(lambda c: changes.since(c, position, limit))

    async def last_position(self) -> int:
        return await self._read(changes.head)

    @timed_store("sqlite", "search")
    async def search(self, query: Query) -> Page:
        return await self._budgeted(lambda c: search(c, query))

    async def explain(self, query: Query) -> list[str]:
        """The plan SQLite chooses for ``search(query)``'s page (diagnostics, benchmarks)."""
        return await self._read(lambda c: explain(c, query))

    @timed_store("sqlite", "in_window")
    async def in_window(self, type_: str, date_param: str, lo: int, hi: int, limit: int
                        ) -> list[tuple[str, int, bytes]]:
        return await self._budgeted(
            lambda c: project.in_window(c, type_, date_param, lo, hi, limit))

    async def _budgeted(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` on a reader thread within the search time budget: SQLite's progress handler,
        called every few thousand virtual-machine steps, interrupts the statement once the
        deadline has passed, which frees the reader thread (a statement cannot otherwise be
        stopped from outside)."""
        budget = self.search_seconds
        deadline = time.monotonic() + budget

        def run(c: sqlite3.Connection) -> T:
            c.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
            try:
                return fn(c)
            except sqlite3.OperationalError as exc:
                if str(exc) == "interrupted":
                    raise QueryTimedOut(budget) from exc
                raise
            finally:
                c.set_progress_handler(None, 0)

        return await self._read(run)

    async def first_versions(self, type_: str, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        return await self._read(lambda c: project.first_versions(c, type_, ids))

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

    # -- $find proposals ---------------------------------------------------------------------
    async def put_proposals(self, proposals: Sequence[tuple[str, bytes]], expires: str,
                            now: str) -> None:
        rows = [(id_, body, expires) for id_, body in proposals]

        def run() -> None:
            # On the writer thread, between batches of units. Without the fsync a resource
            # commit pays (synchronous=NORMAL for this transaction only: WAL then still survives
            # a killed process, and the next full commit makes it durable): a proposal is only
            # an offer, and this write sits on every $find. Measured: ~5 ms -> <1 ms.
            conn = self._wconn
            assert conn is not None
            conn.execute("PRAGMA synchronous=NORMAL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute("DELETE FROM proposals WHERE id IN (SELECT id FROM proposals "
                                 "WHERE expires < ? LIMIT ?)", (now, _PRUNE))
                    conn.executemany(
                        "INSERT INTO proposals(id, body, expires) VALUES (?, ?, ?) ON "
                        "CONFLICT(id) DO UPDATE SET body = excluded.body, "
                        "expires = excluded.expires", rows)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                error = translate(exc)
                if error is exc:
                    raise
                raise error from exc
            finally:
                conn.execute(f"PRAGMA synchronous={self.synchronous}")

        if rows:
            await self._in_writer(run)

    async def get_proposal(self, id_: str) -> tuple[bytes, str] | None:
        def run(c: sqlite3.Connection) -> tuple[bytes, str] | None:
            row = c.execute("SELECT body, expires FROM proposals WHERE id = ?",
                            (id_,)).fetchone()
            return (bytes(row[0]), row[1]) if row else None

        return await self._read(run)

    # -- HL7 v2 inbox --------------------------------------------------------------------------
    async def inbound_list(self, *, outcomes: Sequence[str] | None = None, limit: int = 100,
                           before: str | None = None) -> list[InboundEntry]:
        def run(c: sqlite3.Connection) -> list[InboundEntry]:
            return inbox.listing(c, outcomes, limit, before)

        return await self._read(run)

    async def inbound_purge_raw(self, before: str) -> int:
        async def run(unit: SqliteUnit) -> int:
            return inbox.purge_raw(unit._conn, before)

        return int(await self.atomic(run))

    async def audit_append(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return

        async def run(unit: SqliteUnit) -> None:
            await unit.audit_add(entries)

        await self.atomic(run)

    async def audit_list(self, *, patient: str | None = None, entity: str | None = None,
                         who: str | None = None, subtype: str | None = None,
                         outcome: str | None = None, since: str | None = None,
                         until: str | None = None, before_id: str | None = None,
                         limit: int = 100) -> list[AuditEntry]:
        filters = {"patient": patient, "entity": entity, "who": who, "subtype": subtype,
                   "outcome": outcome}

        def run(c: sqlite3.Connection) -> list[AuditEntry]:
            before = None
            if before_id is not None:
                before = audit.seq_of(c, before_id)
                if before is None:
                    return []
            return audit.listing(c, filters, since, until, before, limit)

        return await self._read(run)

    async def audit_get(self, id_: str) -> AuditEntry | None:
        return await self._read(lambda c: audit.get(c, id_))

    async def audit_purge(self, before: str, limit: int) -> int:
        async def run(unit: SqliteUnit) -> int:
            return audit.purge(unit._conn, before, limit)

        return int(await self.atomic(run))

    async def outbox_list(self, *, statuses: Sequence[str], limit: int = 100,
                          endpoint: str | None = None) -> list[OutboundEntry]:
        def run(c: sqlite3.Connection) -> list[OutboundEntry]:
            return outbox.listing(c, statuses, limit, endpoint)

        return await self._read(run)


# Expired proposals dropped per put: bounded work on the find path, and proposals expire at the
# rate they are made, so pruning keeps pace.
_PRUNE = 2000
