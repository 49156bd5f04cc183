"""The SQLite store's tables and indexes, and the upgrade of a file made by an older release."""

from __future__ import annotations

import sqlite3

from . import audit, inbox, outbox

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources(
  pos INTEGER PRIMARY KEY AUTOINCREMENT,
  type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, updated TEXT NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0, body BLOB);
CREATE UNIQUE INDEX IF NOT EXISTS resources_key ON resources(type, id);
CREATE TABLE IF NOT EXISTS changes(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, updated TEXT NOT NULL,
  method TEXT NOT NULL, body BLOB,
  subject TEXT NOT NULL DEFAULT 'system', client_id TEXT,
  door TEXT NOT NULL DEFAULT 'system', request_id TEXT);
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
-- $find proposals a client may reference by id until they expire (not resources: no history).
CREATE TABLE IF NOT EXISTS proposals(
  id TEXT PRIMARY KEY, body BLOB NOT NULL, expires TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS proposals_expires ON proposals(expires);
"""

# Columns later releases added to a table, with their definitions (additive changes only: an
# older file gains them with their defaults, and rows written before read as those defaults).
ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "claims": (("expires", "TEXT"),),
    "changes": (
        ("subject", "TEXT NOT NULL DEFAULT 'system'"),
        ("client_id", "TEXT"),
        ("door", "TEXT NOT NULL DEFAULT 'system'"),
        ("request_id", "TEXT"),
    ),
}


def create(conn: sqlite3.Connection) -> None:
    """Create whatever is missing and bring an older file up to ``SCHEMA``; idempotent, and safe
    when several processes open the same file at once (the upgrade holds the write lock)."""
    conn.executescript(SCHEMA)
    conn.executescript(inbox.SCHEMA)
    conn.executescript(outbox.SCHEMA)
    conn.executescript(audit.SCHEMA)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, added in ADDED_COLUMNS.items():
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for column, definition in added:
                if column not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        audit.upgrade(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
