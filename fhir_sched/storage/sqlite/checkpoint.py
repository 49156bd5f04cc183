"""WAL checkpoints off the write path."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

log = logging.getLogger("fhir_sched.storage")


class Checkpointer(threading.Thread):
    """Copies the WAL back into the database file off the write path.

    By default SQLite checkpoints inside whichever commit crosses 1000 WAL pages; on a large
    store that commit then writes scattered pages into the main file and fsyncs them while
    holding the write lock (guarded creates on a 1.2 GB store: 365/s with it, 607/s without).
    Here a PASSIVE checkpoint, which never blocks writers or readers, runs twice a second on
    its own connection, and a final TRUNCATE on close leaves a small WAL behind.
    """

    INTERVAL = 0.5

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(name="sqlite-checkpoint", daemon=True)
        self._connect = connect
        self._stopping = threading.Event()

    def run(self) -> None:
        conn = self._connect()
        try:
            while not self._stopping.wait(self.INTERVAL):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # busy or I/O trouble: try again next time
                    log.warning("WAL checkpoint failed: %s", exc)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("final WAL checkpoint failed: %s", exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join()
