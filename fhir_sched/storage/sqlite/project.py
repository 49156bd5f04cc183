"""Reads for reports: a type's resources in a date window (``idx_lo`` finds the window, the
resources key the bodies), and when resources were first stored (the change log)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

_BATCH = 500  # ids per IN (...) of a change-log lookup: well under SQLite's variable limit


def in_window(conn: sqlite3.Connection, type_: str, date_param: str, lo: int, hi: int,
              limit: int) -> list[tuple[str, int, bytes]]:
    return conn.execute(
        "SELECT d.id, d.lo, r.body FROM idx d INDEXED BY idx_lo "
        "JOIN resources r ON r.type = d.type AND r.id = d.id AND r.deleted = 0 "
        "WHERE d.type = ? AND d.param = ? AND d.lo >= ? AND d.lo < ? LIMIT ?",
        (type_, date_param, lo, hi, limit)).fetchall()


def first_versions(conn: sqlite3.Connection, type_: str, ids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in range(0, len(ids), _BATCH):
        batch = list(ids[n:n + _BATCH])
        marks = ", ".join("?" for _ in batch)
        out.update(conn.execute(
            f"SELECT id, updated FROM changes WHERE type = ? AND version = 1 AND id IN ({marks})",
            (type_, *batch)).fetchall())
    return out
