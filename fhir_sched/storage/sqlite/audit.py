"""The audit log as SQLite statements: one row per audited interaction, newest found first."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..base import AuditEntry

# A rowid table, listed in the order entries were written (``seq``): each entry costs four
# b-tree inserts, two of them appends (id and recorded grow with time). The first release kept
# a WITHOUT ROWID table keyed by id with (patient|entity, recorded, id) indexes; its scattered
# wide keys made an entry about twice as dear, which a read paid for (``upgrade`` moves them).
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log(
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL, recorded TEXT NOT NULL, door TEXT NOT NULL,
  action TEXT NOT NULL, subtype TEXT NOT NULL, outcome TEXT NOT NULL, who TEXT NOT NULL,
  client_id TEXT, request_id TEXT, entity TEXT, patient TEXT, detail TEXT NOT NULL DEFAULT '');
CREATE UNIQUE INDEX IF NOT EXISTS audit_log_id ON audit_log(id);
CREATE INDEX IF NOT EXISTS audit_log_recorded ON audit_log(recorded);
CREATE INDEX IF NOT EXISTS audit_log_patient ON audit_log(patient) WHERE patient IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_log_entity ON audit_log(entity);
"""

_COLUMNS = ("id, recorded, door, action, subtype, outcome, who, client_id, request_id, entity, "
            "patient, detail")


def upgrade(c: sqlite3.Connection) -> None:
    """Move the entries of the first release's ``audit`` table, oldest first, then drop it.
    Runs inside the caller's write transaction."""
    if c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='audit'").fetchone():
        c.execute(f"INSERT OR IGNORE INTO audit_log({_COLUMNS}) SELECT {_COLUMNS} FROM audit "
                  "ORDER BY recorded, id")
        c.execute("DROP TABLE audit")


def add(c: sqlite3.Connection, entries: Sequence[AuditEntry]) -> None:
    c.executemany(f"INSERT OR IGNORE INTO audit_log({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                  [(e.id, e.recorded, e.door, e.action, e.subtype, e.outcome, e.who,
                    e.client_id, e.request_id, e.entity, e.patient, e.detail) for e in entries])


def _entry(row: tuple[object, ...]) -> AuditEntry:
    return AuditEntry(*[None if v is None else str(v) for v in row])  # type: ignore[arg-type]


def get(c: sqlite3.Connection, id_: str) -> AuditEntry | None:
    row = c.execute(f"SELECT {_COLUMNS} FROM audit_log WHERE id=?", (id_,)).fetchone()
    return None if row is None else _entry(row)


def seq_of(c: sqlite3.Connection, id_: str) -> int | None:
    row = c.execute("SELECT seq FROM audit_log WHERE id=?", (id_,)).fetchone()
    return None if row is None else int(row[0])


def listing(c: sqlite3.Connection, filters: dict[str, str | None], since: str | None,
            until: str | None, before: int | None, limit: int) -> list[AuditEntry]:
    """Entries matching ``filters`` and the ``recorded`` window, last written first, those
    written before entry number ``before`` when paging on."""
    where: list[str] = []
    args: list[str | int] = []
    for column, value in filters.items():
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if since is not None:
        where.append("recorded >= ?")
        args.append(since)
    if until is not None:
        where.append("recorded < ?")
        args.append(until)
    if before is not None:
        where.append("seq < ?")
        args.append(before)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = c.execute(f"SELECT {_COLUMNS} FROM audit_log{clause} ORDER BY seq DESC LIMIT ?",
                     (*args, limit))
    return [_entry(r) for r in rows]


def purge(c: sqlite3.Connection, before: str, limit: int) -> int:
    """The oldest entries first, found through the ``recorded`` index: a batch is a range
    scan and ``limit`` deletes, whatever the table's size."""
    return c.execute("DELETE FROM audit_log WHERE seq IN (SELECT seq FROM audit_log "
                     "WHERE recorded < ? ORDER BY recorded LIMIT ?)", (before, limit)).rowcount
