"""A change-feed reader as subscriptions will be: poll from a position, resume after each batch
from the last ``seq`` processed, stop once the writers are done and a read comes back empty."""

from __future__ import annotations

import asyncio

from fhir_sched.storage.base import DocumentStore, Record


async def follow(store: DocumentStore, start: int, done: asyncio.Event, batch: int,
                 pause: float) -> list[Record]:
    seen: list[Record] = []
    position = start
    while True:
        finished = done.is_set()  # before the read: an empty read after it means the end
        got = await store.changes_since(position, batch)
        seen += got
        if got:
            position = got[-1].seq
        elif finished:
            return seen
        else:
            await asyncio.sleep(pause)
