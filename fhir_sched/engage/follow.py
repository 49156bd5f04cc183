"""Reading the change feed forward, for the jobs that act on changes (reminders, waitlist,
subscriptions): a cursor kept in the store, moved in the same unit as what the job writes.

A job reads a batch past its cursor, decides, then in ONE unit checks the cursor is still
where it read it and moves it with its writes (``advance``); a process that lost that race
re-reads from where the winner got. A crash repeats at most a batch the job never committed,
so every change is acted on exactly once, with any number of processes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from ..storage.base import DocumentStore, Record, Unit
from ..storage.errors import StoreUnavailable

SAVE_SECONDS = 5.0


def body_of(rec: Record | None) -> dict[str, Any] | None:
    if rec is None or rec.body is None or rec.deleted:
        return None
    body: dict[str, Any] = orjson.loads(rec.body)
    return body


async def before_and_after(store: DocumentStore, rec: Record
                           ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The resource before a change and as the change left it."""
    old = body_of(await store.get_version(rec.type, rec.id, rec.version - 1)) \
        if rec.version > 1 else None
    return old, body_of(rec)


class Cursor:
    def __init__(self, store: DocumentStore, key: str) -> None:
        self.store = store
        self.key = key
        self._at: int | None = None
        self._saved = time.monotonic()

    async def _load(self) -> int:
        async def run(unit: Unit) -> int:
            value = await unit.mark_get(self.key)
            if value is not None:
                return int(value)
            head = await self.store.last_position()  # a new reader starts from now
            await unit.mark_put(self.key, str(head))
            return head

        return int(await self.store.atomic(run))

    async def read(self, limit: int) -> tuple[int, list[Record]]:
        """(where this batch starts, its changes); no changes when there is nothing new."""
        if self._at is None:
            self._at = await self._load()
        if await self.store.last_position() <= self._at:
            return self._at, []
        return self._at, await self.store.changes_since(self._at, limit)

    async def advance(self, unit: Unit, start: int, end: int) -> bool:
        """In the job's unit: move the cursor from ``start`` to ``end``; False (write
        nothing) when another process moved it first."""
        current = await unit.mark_get(self.key)
        if current is not None and int(current) != start:
            return False
        await unit.mark_put(self.key, str(end))
        return True

    def settle(self, moved: bool, end: int) -> None:
        """After the unit: on to ``end``, or re-read the stored position next time."""
        self._at = end if moved else None
        if moved:
            self._saved = time.monotonic()

    def skip(self, end: int) -> bool:
        """A batch that asked for no writes: move on in memory, and say when the position
        is worth saving anyway (every ``SAVE_SECONDS``), rather than commit a unit per batch
        of changes nobody acts on. Acting on such a batch twice writes nothing."""
        self._at = end
        return time.monotonic() - self._saved >= SAVE_SECONDS


async def forever(step: Callable[[], Awaitable[int]], what: str, log: logging.Logger,
                  poll_seconds: float, on_error: Callable[[], None] = lambda: None) -> None:
    """Run ``step`` until cancelled, pausing when it did nothing; a store outage or a bug
    pauses the job for a second, never ends it."""
    while True:
        try:
            done = await step()
        except StoreUnavailable:
            done = 0
            await asyncio.sleep(1.0)
        except Exception as exc:
            log.error("%s failed: %s", what, type(exc).__name__)
            on_error()
            done = 0
            await asyncio.sleep(1.0)
        if not done:
            await asyncio.sleep(poll_seconds)
