"""Outbound SIU: every Appointment change, to every subscribed Endpoint, in order, until ACKed.

Two steps in one background job, both safe with several server processes on one database:

- **Enqueue.** Read the change feed forward from the cursor (a mark in the store); for each
  Appointment change and each subscriber that wants it, build the message now (so it says what
  that change said) and queue it; then, in ONE unit, check the cursor is still where this
  process read it, add the rows and move the cursor. Rows are keyed by (change, endpoint), so
  even a lost race enqueues nothing twice. A change a subscriber itself sent us over HL7 v2
  (the change's origin names its MSH-3/MSH-4) is not sent back to it.
- **Deliver.** Per endpoint, strictly in queue order: the head message goes out on a persistent
  MLLP connection; AA/CA marks it done and the next follows; anything else (AE, AR, no answer,
  no connection) schedules a retry with exponential backoff, and after ``max_attempts`` the
  message is dead-lettered so the ones behind it can move (``fhir-sched hl7v2 dead-letters``
  lists them and ``--replay`` queues them again). A lease (a claim with an expiry) per endpoint
  keeps two processes from delivering to one endpoint at once.

The job polls the feed every ``poll_seconds`` when idle, which bounds the added latency of a
change's message. Logs carry endpoint ids, control ids and outcomes, never message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from fhir_sched.context import RequestContext
from fhir_sched.hl7v2.build import Envelope, build, event_for
from fhir_sched.hl7v2.client import MllpClient, MllpError
from fhir_sched.hl7v2.endpoints import Subscriber, subscriber
from fhir_sched.hl7v2.send import ack_code
from fhir_sched.ids import unique_id
from fhir_sched.metrics import HL7V2_OUTBOUND, ack_label
from fhir_sched.query import Query
from fhir_sched.service.audit import entry as audit_entry
from fhir_sched.service.audit import patient_of
from fhir_sched.service.services import Services
from fhir_sched.storage.base import AuditEntry, OutboundEntry, Record, Unit
from fhir_sched.storage.errors import StoreUnavailable
from fhir_sched.timeutil import format_instant, now_instant

log = logging.getLogger("fhir_sched.hl7v2.outbound")

CURSOR = "hl7v2-outbox/cursor"
LEASE_SECONDS = 30
MAX_BACKOFF_SECONDS = 300.0
CURSOR_SAVE_SECONDS = 5.0  # how stale the saved feed position may be when nothing is queued
LOOK_SECONDS = 2.0  # how often the queue is looked at when nothing is known to be in it
_OK = ("AA", "CA")


def _hl7_now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")


def _control_id(seq: int, endpoint: str) -> str:
    """Unique per message and at most 20 characters (ST length of MSH-10 before 2.5)."""
    return f"{seq}-{hashlib.sha1(endpoint.encode()).hexdigest()[:5]}"[-20:]


def _actors(appt: dict[str, Any]) -> set[str]:
    refs = {str((p.get("actor") or {}).get("reference")) for p in appt.get("participant") or []}
    refs |= {str(s.get("reference") or "") for s in appt.get("slot") or []}
    return refs


class Outbound:
    def __init__(self, services: Services, *, application: str = "FHIR-SCHED",
                 facility: str = "", retry_seconds: float = 1.0, max_attempts: int = 10,
                 poll_seconds: float = 0.05, timeout: float = 10.0, batch: int = 200) -> None:
        self.services = services
        self.store = services.store
        self.application = application
        self.facility = facility
        self.retry_seconds = retry_seconds
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.batch = batch
        self.worker = unique_id()
        self._cursor: int | None = None  # how far this process has read the feed
        self._saved = 0  # the position last saved in the store, as this process knows it
        self._subscribers: list[Subscriber] | None = None
        self._clients: dict[str, MllpClient] = {}
        self._leases: dict[str, datetime] = {}
        # Whether the queue may hold something to send: set by enqueueing and retries, and
        # looked at anyway every few seconds (another process may have queued a replay).
        self._maybe_pending = True
        self._last_look = 0.0
        self._cursor_saved = 0.0

    # -- the job -------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while True:
                try:
                    moved = await self.enqueue()
                    sent = await self.deliver()
                except StoreUnavailable:
                    moved = sent = 0
                    await asyncio.sleep(1.0)
                except Exception as exc:  # a bug must not stop outbound for good
                    log.error("outbound SIU step failed: %s", type(exc).__name__)
                    moved = sent = 0
                    await asyncio.sleep(1.0)
                if not moved and not sent:
                    await asyncio.sleep(self.poll_seconds)
        finally:
            for client in self._clients.values():
                await client.close()
            if self._leases:  # hand the endpoints over at once, not after the lease expires
                async def release(unit: Unit) -> None:
                    await unit.release("hl7v2-outbox", self.worker)

                with contextlib.suppress(Exception):
                    await self.store.atomic(release)

    # -- enqueue -------------------------------------------------------------------------------
    async def subscribers(self, refresh: bool = False) -> list[Subscriber]:
        if self._subscribers is None or refresh:
            page = await self.store.search(Query("Endpoint", count=1000))
            subs = [subscriber(orjson.loads(body)) for _id, body in page.rows]
            self._subscribers = [s for s in subs if s is not None]
        return self._subscribers

    async def _read_cursor(self) -> int:
        async def run(unit: Unit) -> int:
            value = await unit.mark_get(CURSOR)
            if value is not None:
                return int(value)
            head = await self.store.last_position()  # a new outbox starts from now
            await unit.mark_put(CURSOR, str(head))
            return head

        return int(await self.store.atomic(run))

    async def enqueue(self) -> int:
        """Queue messages for the next changes of the feed; how many changes were read."""
        if self._cursor is None:
            self._cursor = self._saved = await self._read_cursor()
        if await self.store.last_position() <= self._cursor:
            return 0
        changes = await self.store.changes_since(self._cursor, self.batch)
        if not changes:
            return 0
        saved, end = self._saved, changes[-1].seq
        entries: list[OutboundEntry] = []
        for rec in changes:
            if rec.type == "Endpoint":
                await self.subscribers(refresh=True)
            elif rec.type == "Appointment":
                entries += await self._messages_for(rec)
        loop = asyncio.get_running_loop()
        if not entries and loop.time() - self._cursor_saved < CURSOR_SAVE_SECONDS:
            # Nothing to send: move on in memory and save the position now and then, rather
            # than add a commit to every burst of writes of a server nobody subscribes to.
            self._cursor = end
            return len(changes)
        self._cursor_saved = loop.time()

        async def commit(unit: Unit) -> bool:
            current = await unit.mark_get(CURSOR)
            if current is not None and int(current) != saved:
                return False  # another process moved it: re-read from there
            await unit.outbox_add(entries)
            await unit.mark_put(CURSOR, str(end))
            return True

        if await self.store.atomic(commit):
            self._cursor = self._saved = end
            self._maybe_pending = self._maybe_pending or bool(entries)
        else:
            self._cursor = None
        return len(changes)

    async def _messages_for(self, rec: Record) -> list[OutboundEntry]:
        subs = await self.subscribers()
        if not subs:
            return []
        new = orjson.loads(rec.body) if rec.body and not rec.deleted else None
        old_rec = (await self.store.get_version(rec.type, rec.id, rec.version - 1)
                   if rec.version > 1 else None)
        old = orjson.loads(old_rec.body) if old_rec and old_rec.body and not old_rec.deleted \
            else None
        appt = new or old
        if appt is None:
            return []
        event = event_for(old, new)
        actors = _actors(appt)
        wanted = [s for s in subs if not s.sent_it(rec.origin.door, rec.origin.subject)
                  and await self._passes(s, actors)]
        if not wanted:
            return []
        resources = await self._referenced(actors)
        created = now_instant()
        out = []
        for sub in wanted:
            env = Envelope(self.application, self.facility, sub.application, sub.facility,
                           _control_id(rec.seq, sub.id), _hl7_now(), sub.version)
            message = build({**appt, "id": rec.id}, env, event, resources)
            out.append(OutboundEntry(f"{rec.seq:020d}/{sub.id}", sub.id, rec.seq, rec.id, event,
                                     message, created=created))
        return out

    async def _passes(self, sub: Subscriber, actors: set[str]) -> bool:
        if not sub.filters:
            return True
        for ref in sub.filters:
            if ref in actors:
                return True
            if ref.startswith("Schedule/"):
                rec = await self.store.get("Schedule", ref.split("/", 1)[1])
                schedule = orjson.loads(rec.body) if rec and rec.body and not rec.deleted else {}
                if {str(a.get("reference")) for a in schedule.get("actor") or []} & actors:
                    return True
        return False

    async def _referenced(self, refs: set[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for ref in refs:
            kind, _, id_ = ref.partition("/")
            if kind in ("Patient", "Practitioner", "Location") and id_:
                rec = await self.store.get(kind, id_)
                if rec is not None and rec.body and not rec.deleted:
                    out[ref] = orjson.loads(rec.body)
        return out

    # -- deliver -------------------------------------------------------------------------------
    async def deliver(self) -> int:
        """Send what is due, endpoint by endpoint at the same time; how many were sent."""
        now = asyncio.get_running_loop().time()
        if not self._maybe_pending and now - self._last_look < LOOK_SECONDS:
            return 0
        self._last_look = now
        pending = await self.store.outbox_list(statuses=("pending",), limit=1000)
        self._maybe_pending = bool(pending)
        queues: dict[str, list[OutboundEntry]] = {}
        for entry in pending:
            queues.setdefault(entry.endpoint, []).append(entry)
        if not queues:
            return 0
        subs = {s.id: s for s in await self.subscribers()}
        counts = await asyncio.gather(*(self._deliver_to(subs.get(endpoint), endpoint, queue)
                                        for endpoint, queue in queues.items()))
        return sum(counts)

    async def _lease(self, endpoint: str) -> bool:
        now = datetime.now(UTC)
        until = self._leases.get(endpoint)
        if until is not None and until - now > timedelta(seconds=LEASE_SECONDS / 3):
            return True
        expires = now + timedelta(seconds=LEASE_SECONDS)

        async def run(unit: Unit) -> bool:
            return await unit.claim(f"hl7v2-outbox/{endpoint}", "hl7v2-outbox", self.worker,
                                    format_instant(expires), format_instant(now))

        if await self.store.atomic(run):
            self._leases[endpoint] = expires
            return True
        self._leases.pop(endpoint, None)
        return False

    async def _deliver_to(self, sub: Subscriber | None, endpoint: str,
                          queue: Sequence[OutboundEntry]) -> int:
        sent = 0
        for entry in queue:
            if entry.next_at and entry.next_at > now_instant():
                break  # the head waits for its retry; the rest wait behind it
            if not await self._lease(endpoint):
                break
            if sub is None:  # the Endpoint was retired or deactivated
                await self._record(replace(entry, status="dead",
                                           error="the Endpoint is no longer an active subscriber"))
                continue
            try:
                ack = await self._client(sub).send(entry.message)
                code, error = ack_code(ack), ""
            except MllpError as exc:
                ack, code, error = b"", "", str(exc)
            HL7V2_OUTBOUND.labels(ack_label(code) if code else "unreachable").inc()
            if code in _OK:
                await self._record(replace(entry, status="done", attempts=entry.attempts + 1,
                                           ack=ack, error=""))
                sent += 1
                log.info("outbound %s %s to %s: %s", entry.event, entry.id, endpoint, code)
                continue
            await self._retry(entry, ack, error or f"answered {code or 'without an MSA'}")
            break
        return sent

    def _client(self, sub: Subscriber) -> MllpClient:
        client = self._clients.get(sub.id)
        if client is None or (client.host, client.port) != (sub.host, sub.port):
            client = MllpClient(sub.host, sub.port, timeout=self.timeout)
            self._clients[sub.id] = client
        return client

    async def _retry(self, entry: OutboundEntry, ack: bytes, error: str) -> None:
        attempts = entry.attempts + 1
        if attempts >= self.max_attempts:
            log.warning("outbound %s to %s dead-lettered after %d attempts", entry.id,
                        entry.endpoint, attempts)
            await self._record(replace(entry, status="dead", attempts=attempts, ack=ack or None,
                                       error=error))
            return
        delay = min(self.retry_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
        when = format_instant(datetime.now(UTC) + timedelta(seconds=delay))
        await self._record(replace(entry, attempts=attempts, next_at=when, ack=ack or None,
                                   error=error))

    async def _record(self, entry: OutboundEntry) -> None:
        async def run(unit: Unit) -> None:
            await unit.outbox_set(entry)
            if entry.status in ("done", "dead"):
                await unit.audit_add([await _disclosure(unit, entry)])

        await self.store.atomic(run)


async def _disclosure(unit: Unit, entry: OutboundEntry) -> AuditEntry:
    """The audit entry for a message that left (or finally could not): patient data sent to
    another system is a disclosure, recorded with the delivery state it commits with."""
    rec = await unit.get("Appointment", entry.appointment)
    body = orjson.loads(rec.body) if rec is not None and rec.body is not None else None
    sent = entry.status == "done"
    return audit_entry(
        RequestContext.system("hl7v2-outbound"), f"hl7v2-out/SIU^{entry.event}",
        "0" if sent else "4", action="R", entity=f"Appointment/{entry.appointment}",
        patient=patient_of("Appointment", body),
        detail=f"{'sent to' if sent else 'undeliverable to'} Endpoint/{entry.endpoint}")


async def outbound_dead_letters(services: Services, limit: int = 100) -> list[OutboundEntry]:
    return await services.store.outbox_list(statuses=("dead",), limit=limit)


async def replay_outbound(services: Services, limit: int = 100) -> list[OutboundEntry]:
    """Queue dead-lettered messages again (a running server delivers them)."""
    dead = await outbound_dead_letters(services, limit)

    async def run(unit: Unit) -> None:
        for entry in dead:
            await unit.outbox_set(replace(entry, status="pending", attempts=0, next_at="",
                                          error=""))

    if dead:
        await services.store.atomic(run)
    return dead
