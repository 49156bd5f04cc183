"""The change log on SQLite: appending a change with its origin, and reading history and feed.

Commit order is ``seq`` order: ``seq`` is assigned inside the writing transaction, and writers
hold SQLite's write lock from ``BEGIN IMMEDIATE`` to ``COMMIT`` (across processes too), so a
reader's snapshot that holds some change holds every change with a lower ``seq``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..base import Record, stored_origin

_COLUMNS = "seq, type, id, version, updated, method, body, subject, client_id, door, request_id"
_SELECT = f"SELECT {_COLUMNS} FROM changes"


def append(c: sqlite3.Connection, rec: Record) -> int:
    """Append ``rec`` (with its origin) to the log; returns its ``seq``."""
    o = rec.origin
    cur = c.execute(
        "INSERT INTO changes(type, id, version, updated, method, body, subject, client_id, door,"
        " request_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (rec.type, rec.id, rec.version, rec.updated, rec.method, rec.body,
         o.subject, o.client_id, o.door, o.request_id),
    )
    return cur.lastrowid or 0


def _records(rows: Any) -> list[Record]:
    return [Record(t, i, v, u, m == "DELETE", b, m, s, stored_origin(sub, cid, door, rid))
            for s, t, i, v, u, m, b, sub, cid, door, rid in rows]


def version(c: sqlite3.Connection, type_: str, id_: str, version: int) -> Record | None:
    rows = _records(c.execute(f"{_SELECT} WHERE type=? AND id=? AND version=?",
                              (type_, id_, version)))
    return rows[0] if rows else None


def history_sql(type_: str | None, id_: str | None, since: str | None, count: int,
                before_seq: int | None) -> tuple[str, list[Any]]:
    """Newest first; each given filter narrows it."""
    sql = f"{_SELECT} WHERE 1=1"
    args: list[Any] = []
    for test, value in (("type=?", type_), ("id=?", id_), ("updated>=?", since),
                        ("seq<?", before_seq)):
        if value is not None:
            sql += f" AND {test}"
            args.append(value)
    args.append(count)
    return sql + " ORDER BY seq DESC LIMIT ?", args


def history(c: sqlite3.Connection, sql: str, args: list[Any]) -> list[Record]:
    return _records(c.execute(sql, args))


def since(c: sqlite3.Connection, position: int, limit: int) -> list[Record]:
    """The feed: changes after ``position`` in commit order, at most ``limit``."""
    return _records(c.execute(f"{_SELECT} WHERE seq > ? ORDER BY seq LIMIT ?",
                              (position, limit)))


def head(c: sqlite3.Connection) -> int:
    row = c.execute("SELECT max(seq) FROM changes").fetchone()
    return int(row[0] or 0)
