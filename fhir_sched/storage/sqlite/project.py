"""Projections for reports: a type's resources in a date window with a few index entries each,
read from ``idx`` alone (``idx_lo`` finds the window, ``idx_owner`` covers each resource's
entries), so a year of appointments is never parsed from JSON.

Each resource comes back as ONE row, its entries packed by ``group_concat`` with control
characters as separators (index values are normalised text that never holds them): 250,000
rows instead of a million and a half is most of what the projection costs in Python.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..base import Projected

_FIELD, _ENTRY = "\x1f", "\x1e"
_BATCH = 500  # ids per IN (...) of a change-log lookup: well under SQLite's variable limit


def project(conn: sqlite3.Connection, type_: str, date_param: str, lo: int, hi: int,
            params: Sequence[str], limit: int) -> list[Projected]:
    marks = ", ".join("?" for _ in params) or "NULL"
    sql = (
        "SELECT d.id, d.lo, d.hi, r.updated, (SELECT group_concat(e.param || char(31) || "
        "ifnull(e.sys, '') || char(31) || ifnull(e.val, '') || char(31) || ifnull(e.lo, ''), "
        f"char(30)) FROM idx e INDEXED BY idx_owner WHERE e.type = d.type AND e.id = d.id "
        f"AND e.param IN ({marks})) FROM idx d INDEXED BY idx_lo "
        "JOIN resources r ON r.type = d.type AND r.id = d.id AND r.deleted = 0 "
        "WHERE d.type = ? AND d.param = ? AND d.lo >= ? AND d.lo < ? LIMIT ?")
    out: list[Projected] = []
    append = out.append
    for id_, start, end, updated, packed in conn.execute(
            sql, (*params, type_, date_param, lo, hi, limit)):
        entries = []
        for item in packed.split(_ENTRY) if packed else ():
            param, sys, val, low = item.split(_FIELD)
            entries.append((param, sys or None, val or None,
                            (float(low) if "." in low else int(low)) if low else None))
        append(Projected(id_, updated, int(start), int(end), tuple(entries)))
    return out


def first_versions(conn: sqlite3.Connection, type_: str, ids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in range(0, len(ids), _BATCH):
        batch = list(ids[n:n + _BATCH])
        marks = ", ".join("?" for _ in batch)
        out.update(conn.execute(
            f"SELECT id, updated FROM changes WHERE type = ? AND version = 1 AND id IN ({marks})",
            (type_, *batch)).fetchall())
    return out
