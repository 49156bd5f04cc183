"""The HL7 v2 inbox and the small named marks, as SQLite statements on one connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..base import InboundEntry

SCHEMA = """
CREATE TABLE IF NOT EXISTS hl7v2_inbox(
  key TEXT PRIMARY KEY, received TEXT NOT NULL, sender TEXT NOT NULL,
  control_id TEXT NOT NULL, event TEXT NOT NULL, peer TEXT NOT NULL, outcome TEXT NOT NULL,
  ack_code TEXT NOT NULL, ack BLOB NOT NULL, error TEXT NOT NULL, resources TEXT NOT NULL,
  raw BLOB, digest TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS hl7v2_inbox_received ON hl7v2_inbox(received);
CREATE INDEX IF NOT EXISTS hl7v2_inbox_outcome ON hl7v2_inbox(outcome, received);
CREATE TABLE IF NOT EXISTS marks(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

_COLUMNS = ("key, received, sender, control_id, event, peer, outcome, ack_code, ack, error, "
            "resources, raw, digest")


def _entry(row: sqlite3.Row | tuple[object, ...]) -> InboundEntry:
    (key, received, sender, control_id, event, peer, outcome, ack_code, ack, error, resources,
     raw, digest) = row
    return InboundEntry(
        str(key), str(received), str(sender), str(control_id), str(event), str(peer),
        str(outcome), str(ack_code), bytes(ack),  # type: ignore[arg-type]
        str(error), tuple(r for r in str(resources).split(" ") if r),
        None if raw is None else bytes(raw), str(digest))  # type: ignore[arg-type]


def get(c: sqlite3.Connection, key: str) -> InboundEntry | None:
    row = c.execute(f"SELECT {_COLUMNS} FROM hl7v2_inbox WHERE key=?", (key,)).fetchone()
    return None if row is None else _entry(row)


def put(c: sqlite3.Connection, e: InboundEntry) -> None:
    c.execute(
        f"INSERT OR REPLACE INTO hl7v2_inbox({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (e.key, e.received, e.sender, e.control_id, e.event, e.peer, e.outcome, e.ack_code,
         e.ack, e.error, " ".join(e.resources), e.raw, e.digest))


def listing(c: sqlite3.Connection, outcomes: Sequence[str] | None, limit: int,
            before: str | None) -> list[InboundEntry]:
    where, args = [], []
    if outcomes:
        where.append(f"outcome IN ({','.join('?' * len(outcomes))})")
        args += list(outcomes)
    if before is not None:
        where.append("received < ?")
        args.append(before)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = c.execute(f"SELECT {_COLUMNS} FROM hl7v2_inbox{clause} ORDER BY received DESC, key "
                     "LIMIT ?", (*args, limit))
    return [_entry(r) for r in rows]


def purge_raw(c: sqlite3.Connection, before: str) -> int:
    return c.execute("UPDATE hl7v2_inbox SET raw=NULL WHERE received < ? AND raw IS NOT NULL",
                     (before,)).rowcount


def mark_get(c: sqlite3.Connection, key: str) -> str | None:
    row = c.execute("SELECT value FROM marks WHERE key=?", (key,)).fetchone()
    return None if row is None else str(row[0])


def mark_delete(c: sqlite3.Connection, key: str) -> bool:
    return c.execute("DELETE FROM marks WHERE key=?", (key,)).rowcount > 0


def mark_list(c: sqlite3.Connection, prefix: str, limit: int) -> list[tuple[str, str]]:
    rows = c.execute("SELECT key, value FROM marks WHERE key >= ? AND key < ? ORDER BY key "
                     "LIMIT ?", (prefix, prefix + "\U0010ffff", limit))
    return [(str(k), str(v)) for k, v in rows]


def mark_put(c: sqlite3.Connection, key: str, value: str) -> None:
    c.execute("INSERT INTO marks(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
              "value=excluded.value", (key, value))
