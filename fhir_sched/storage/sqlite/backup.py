"""A consistent copy of a SQLite store while the server keeps running (SQLite's online backup).

The copy is taken in one step, inside one read transaction: in WAL mode that is a snapshot of
the last commit before it began, and writers carry on meanwhile (a step-by-step backup would
restart each time a writer committed, and might never finish under load). The copy is written
beside the target under a temporary name, checked (``PRAGMA quick_check``) and renamed, so a
failed or interrupted backup never leaves something that looks like a good one.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path


class BackupError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    pages: int
    bytes: int
    resources: int


def backup(source: Path, target: Path, *, overwrite: bool = False) -> BackupResult:
    if not source.exists():
        raise BackupError(f"no SQLite store at {source}")
    if target.exists() and not overwrite:
        raise BackupError(f"{target} exists; choose another name or pass --force")
    if target.resolve() == source.resolve():
        raise BackupError("the backup cannot be the store itself")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            check = dst.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise BackupError(f"the copy failed its integrity check: {check}")
            pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
            resources = int(dst.execute(
                "SELECT count(*) FROM resources WHERE deleted = 0").fetchone()[0])
        finally:
            dst.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"backup failed: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    partial.replace(target)
    return BackupResult(target, pages, target.stat().st_size, resources)
