"""The HL7 v2 outbox as SQLite statements on one connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..base import OutboundEntry

SCHEMA = """
CREATE TABLE IF NOT EXISTS hl7v2_outbox(
  id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, seq INTEGER NOT NULL, appointment TEXT NOT NULL,
  event TEXT NOT NULL, message BLOB NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
  next_at TEXT NOT NULL, error TEXT NOT NULL, ack BLOB, created TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS hl7v2_outbox_status ON hl7v2_outbox(status, id);
"""

_COLUMNS = "id, endpoint, seq, appointment, event, message, status, attempts, next_at, error, " \
           "ack, created"


def _entry(row: tuple[Any, ...]) -> OutboundEntry:
    (id_, endpoint, seq, appointment, event, message, status, attempts, next_at, error, ack,
     created) = row
    return OutboundEntry(str(id_), str(endpoint), int(seq), str(appointment), str(event),
                         bytes(message), str(status), int(attempts), str(next_at), str(error),
                         None if ack is None else bytes(ack), str(created))


def add(c: sqlite3.Connection, entries: Sequence[OutboundEntry]) -> None:
    c.executemany(
        f"INSERT OR IGNORE INTO hl7v2_outbox({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        [(e.id, e.endpoint, e.seq, e.appointment, e.event, e.message, e.status, e.attempts,
          e.next_at, e.error, e.ack, e.created) for e in entries])


def set_result(c: sqlite3.Connection, e: OutboundEntry) -> None:
    c.execute("UPDATE hl7v2_outbox SET status=?, attempts=?, next_at=?, error=?, ack=? "
              "WHERE id=?", (e.status, e.attempts, e.next_at, e.error, e.ack, e.id))


def listing(c: sqlite3.Connection, statuses: Sequence[str], limit: int,
            endpoint: str | None) -> list[OutboundEntry]:
    where = f"status IN ({','.join('?' * len(statuses))})"
    args: list[object] = list(statuses)
    if endpoint is not None:
        where += " AND endpoint = ?"
        args.append(endpoint)
    rows = c.execute(f"SELECT {_COLUMNS} FROM hl7v2_outbox WHERE {where} ORDER BY id LIMIT ?",
                     (*args, limit))
    return [_entry(r) for r in rows]
