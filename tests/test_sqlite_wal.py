"""The SQLite write-ahead log stays bounded under a steady stream of writes.

SQLite rewinds its WAL only when a write begins after every frame was copied back, which a
steady stream of writes never allows; PASSIVE checkpoints alone let the log grow for as long
as the load lasts. The checkpointer rewinds it past a size (``WAL_KEEP_BYTES``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fhir_sched.query import IndexEntry
from fhir_sched.storage.base import Record, Unit
from fhir_sched.storage.sqlite import SqliteStore, checkpoint
from fhir_sched.storage.sqlite import store as sqlite_store

KEEP = 1024 * 1024


async def test_the_wal_is_rewound_under_a_steady_stream_of_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "WAL_KEEP_BYTES", KEEP)
    monkeypatch.setattr(checkpoint.Checkpointer, "INTERVAL", 0.02)
    path = tmp_path / "wal.db"
    store = SqliteStore(str(path), synchronous="normal")
    await store.start()
    wal = Path(f"{path}-wal")
    body = b'{"resourceType":"Patient","text":"' + b"x" * 3000 + b'"}'
    largest = 0
    written = 0
    try:
        async def write(n: int) -> None:
            async def run(unit: Unit) -> None:
                entries = [IndexEntry(f"p{k}", None, f"{n:08d}-{k}")
                           for k in range(8)]
                await unit.write(Record("Patient", f"w{n}", 1, "2026-01-01T00:00:00Z", False,
                                        body, "POST"), entries, 0)

            await store.atomic(run)

        checkpointer = store._checkpointer
        assert checkpointer is not None
        for start in range(0, 100_000, 100):
            await asyncio.gather(*(write(n) for n in range(start, start + 100)))
            written += 100 * len(body)
            largest = max(largest, os.path.getsize(wal))
            if checkpointer.restarts >= 3 and written > 60 * KEEP:
                break
        assert checkpointer.restarts >= 3
        # Without rewinding, the log holds every page written (more than the bodies alone);
        # rewound, about what is written between two checkpoint passes (6 MB seen here).
        assert written > 60 * KEEP
        assert largest < 20 * KEEP
    finally:
        await store.close()
    assert not wal.exists() or os.path.getsize(wal) == 0  # the final TRUNCATE on close
