"""Turns on contended documents, within one process.

Units run side by side and MongoDB settles a race on a document by failing all but one with
a write conflict. With a few racers that is cheap; with a hundred bookings on one Slot each
retry meets the other ninety-eight again, and a unit can lose until its retry budget runs out.
So a unit that lost a race runs its retry holding a turn on every document its last attempt
touched, and units of this process racing for the same document take turns instead of
colliding. First attempts take no turn (the uncontended path costs nothing), unrelated
documents never wait on each other, and units in other processes are still settled by the
database, with a budget that no longer has to absorb a whole process's worth of contenders.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import AsyncExitStack


class Turns:
    """One lock per document key, made when first wanted and dropped when nobody wants it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def take(self, keys: Iterable[str], stack: AsyncExitStack) -> None:
        """Wait for a turn on every key, in sorted order (two units never wait on each other
        in a circle); each is given back when ``stack`` closes."""
        for key in sorted(set(keys)):
            lock = self._want(key)
            stack.callback(self._unwant, key)
            await lock.acquire()
            stack.callback(lock.release)

    def _want(self, key: str) -> asyncio.Lock:
        lock, wanted = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, wanted + 1)
        return lock

    def _unwant(self, key: str) -> None:
        lock, wanted = self._locks[key]
        if wanted <= 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, wanted - 1)

    def __len__(self) -> int:
        """Keys someone holds or waits for (zero when the store is quiet)."""
        return len(self._locks)
