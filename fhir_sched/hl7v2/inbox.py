"""What an administrator asks of the inbound log: what came in, what was refused, try again.

Every message the door answered is kept with its ACK (``Bridge``); the refused ones (AE/AR)
are the dead-letter list. Replaying one runs its kept bytes through the bridge again: if it
now applies (the missing patient was created, the conflicting booking moved), its entry becomes
an applied one and it leaves the list; if not, it stays with the new answer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fhir_sched.hl7v2.bridge import Bridge
from fhir_sched.hl7v2.send import ack_code
from fhir_sched.storage.base import DocumentStore, InboundEntry
from fhir_sched.storage.errors import StoreUnavailable
from fhir_sched.timeutil import format_instant

log = logging.getLogger("fhir_sched.hl7v2")

DEAD = ("rejected",)


async def dead_letters(store: DocumentStore, limit: int = 100,
                       before: str | None = None) -> list[InboundEntry]:
    """Refused inbound messages, newest first (``before``: the ``received`` of the last one
    seen, for the next page)."""
    return await store.inbound_list(outcomes=DEAD, limit=limit, before=before)


async def messages(store: DocumentStore, limit: int = 100,
                   before: str | None = None) -> list[InboundEntry]:
    """Every kept inbound message, newest first."""
    return await store.inbound_list(limit=limit, before=before)


@dataclass(frozen=True, slots=True)
class Replayed:
    entry: InboundEntry  # as it was before the replay
    ack: bytes  # the new answer ("" when its raw bytes were already purged)

    @property
    def code(self) -> str:
        return ack_code(self.ack) if self.ack else ""


async def replay_dead_letters(bridge: Bridge, limit: int = 100) -> list[Replayed]:
    """Run each refused message again (oldest first, so a feed's order is kept)."""
    out = []
    for entry in reversed(await dead_letters(bridge.services.store, limit)):
        if entry.raw is None:
            out.append(Replayed(entry, b""))
            continue
        out.append(Replayed(entry, await bridge.replay(entry.raw, entry.peer)))
    return out


async def purge_raw(store: DocumentStore, before: str) -> int:
    """Drop the raw bytes of messages received before ``before`` (retention); outcomes and
    ACKs stay, so a late resend still gets its answer."""
    return await store.inbound_purge_raw(before)


async def keep_raw_for(store: DocumentStore, days: int, every_seconds: float = 3600.0) -> None:
    """The retention job: raw message bytes (which hold PHI) are kept ``days`` days, then
    dropped; ``days`` <= 0 keeps them for good."""
    while days > 0:
        before = format_instant(datetime.now(UTC) - timedelta(days=days))
        try:
            dropped = await store.inbound_purge_raw(before)
            if dropped:
                log.info("hl7v2 retention: raw bytes of %d message(s) dropped", dropped)
        except StoreUnavailable:
            pass
        await asyncio.sleep(every_seconds)
