"""The audit log as SQLite statements: one row per audited interaction, newest found first."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..base import AuditEntry

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit(
  id TEXT PRIMARY KEY, recorded TEXT NOT NULL, door TEXT NOT NULL, action TEXT NOT NULL,
  subtype TEXT NOT NULL, outcome TEXT NOT NULL, who TEXT NOT NULL, client_id TEXT,
  request_id TEXT, entity TEXT, patient TEXT, detail TEXT NOT NULL DEFAULT '') WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_recorded ON audit(recorded, id);
CREATE INDEX IF NOT EXISTS audit_patient ON audit(patient, recorded, id);
CREATE INDEX IF NOT EXISTS audit_entity ON audit(entity, recorded, id);
"""

_COLUMNS = ("id, recorded, door, action, subtype, outcome, who, client_id, request_id, entity, "
            "patient, detail")


def add(c: sqlite3.Connection, entries: Sequence[AuditEntry]) -> None:
    c.executemany(f"INSERT OR IGNORE INTO audit({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                  [(e.id, e.recorded, e.door, e.action, e.subtype, e.outcome, e.who,
                    e.client_id, e.request_id, e.entity, e.patient, e.detail) for e in entries])


def _entry(row: tuple[object, ...]) -> AuditEntry:
    return AuditEntry(*[None if v is None else str(v) for v in row])  # type: ignore[arg-type]


def get(c: sqlite3.Connection, id_: str) -> AuditEntry | None:
    row = c.execute(f"SELECT {_COLUMNS} FROM audit WHERE id=?", (id_,)).fetchone()
    return None if row is None else _entry(row)


def listing(c: sqlite3.Connection, filters: dict[str, str | None], since: str | None,
            until: str | None, before: tuple[str, str] | None, limit: int) -> list[AuditEntry]:
    where, args = [], []
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
        where.append("(recorded < ? OR (recorded = ? AND id < ?))")
        args += [before[0], before[0], before[1]]
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = c.execute(f"SELECT {_COLUMNS} FROM audit{clause} ORDER BY recorded DESC, id DESC "
                     "LIMIT ?", (*args, limit))
    return [_entry(r) for r in rows]
