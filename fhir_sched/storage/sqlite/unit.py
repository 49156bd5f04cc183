"""Operations inside one atomic unit, each a direct call on the writer connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ...query import IndexEntry, Query
from ..base import AuditEntry, InboundEntry, OutboundEntry, Record, Write
from ..errors import VersionConflict
from . import audit, changes, inbox, outbox
from .faults import translate
from .query import count_sql, select_sql


class SqliteUnit:
    """Operations inside one ``BEGIN IMMEDIATE`` transaction, run on the writer thread (see
    ``SqliteStore._run_units``): each is a direct call on the writer connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def get(self, type_: str, id_: str, *, decides: bool = True) -> Record | None:
        return get_current(self._conn, type_, id_)

    async def find_ids(self, query: Query, limit: int = 2, *, decides: bool = True
                       ) -> list[str]:
        sql, args = select_sql(query, "r.id", limit=limit, keyset=False)
        return [row[0] for row in self._rows(sql, args)]

    async def count(self, query: Query) -> int:
        sql, args = count_sql(query, self._conn)
        return int(self._rows(sql, args)[0][0])

    async def find_bodies(self, query: Query, limit: int) -> list[tuple[str, bytes]]:
        sql, args = select_sql(query, "r.id, r.body", limit=limit, keyset=False)
        return [(row[0], row[1]) for row in self._rows(sql, args) if row[1] is not None]

    def _rows(self, sql: str, args: dict[str, Any]) -> list[Any]:
        """A search's rows, its SQLite errors in the store's terms (a full disk, a lock)."""
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            error = translate(exc)
            if error is exc:
                raise
            raise error from exc

    async def write(
        self, record: Record, entries: list[IndexEntry], expect_version: int | None
    ) -> None:
        write_record(self._conn, record, entries, expect_version)

    async def write_all(self, writes: Sequence[Write]) -> None:
        for record, entries, expect_version in writes:
            write_record(self._conn, record, entries, expect_version)

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
            count: int = self._conn.execute(
                "SELECT count(*) FROM claims WHERE key >= ? AND key < ?",
                (prefix, prefix + "\U0010ffff")).fetchone()[0]
            return count

        return run()

    async def inbound_get(self, key: str) -> InboundEntry | None:
        return inbox.get(self._conn, key)

    async def inbound_put(self, entry: InboundEntry) -> None:
        inbox.put(self._conn, entry)

    async def mark_get(self, key: str) -> str | None:
        return inbox.mark_get(self._conn, key)

    async def mark_put(self, key: str, value: str) -> None:
        inbox.mark_put(self._conn, key, value)

    async def mark_delete(self, key: str) -> bool:
        return inbox.mark_delete(self._conn, key)

    async def mark_list(self, prefix: str, limit: int = 1000) -> list[tuple[str, str]]:
        return inbox.mark_list(self._conn, prefix, limit)

    async def audit_add(self, entries: Sequence[AuditEntry]) -> None:
        audit.add(self._conn, entries)

    async def outbox_add(self, entries: Sequence[OutboundEntry]) -> None:
        outbox.add(self._conn, entries)

    async def outbox_set(self, entry: OutboundEntry) -> None:
        outbox.set_result(self._conn, entry)


# -- SQL helpers (module level so they run in executor threads without closures) -------------
def get_current(c: sqlite3.Connection, type_: str, id_: str) -> Record | None:
    row = c.execute(
        "SELECT version, updated, deleted, body FROM resources WHERE type=? AND id=?",
        (type_, id_),
    ).fetchone()
    if row is None:
        return None
    version, updated, deleted, body = row
    return Record(type_, id_, version, updated, bool(deleted), body)


def write_record(
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
    rec.seq = changes.append(c, rec)
    c.execute("DELETE FROM idx WHERE type=? AND id=?", (rec.type, rec.id))
    if entries and not rec.deleted:
        c.executemany(
            "INSERT INTO idx(type, id, param, sys, val, raw, lo, hi) VALUES (?,?,?,?,?,?,?,?)",
            [(rec.type, rec.id, e.param, e.sys, e.val, e.raw, e.lo, e.hi) for e in entries],
        )
