"""The audit trail: one entry per interaction, whatever door it came in by.

- **Writes** are recorded inside the unit that makes them (``in_unit``, called by the write
  pipeline), so an entry commits, or rolls back, with the change it describes.
- **Reads, searches and refusals** are queued (``later``) and written in batches by a
  background job (``run``) every ``FLUSH_SECONDS``: the read path pays an append to a list,
  and the patient whose data was read is worked out off the request (from the bytes served).
  A crash can lose the last fraction of a second of read entries, never a write's.

Entries hold no PHI: the resource touched (``Type/id``), the patient's reference, the
interaction, the outcome, who and which client, the request id; for a search, the parameter
names, never their values. They are served as AuditEvent (``rest/audit.py``) and cannot be
changed through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ..context import RequestContext
from ..ids import unique_id
from ..search.compartment import PATIENT_COMPARTMENT
from ..search.extract import reference_targets
from ..storage.base import AuditEntry, DocumentStore, Unit
from ..storage.errors import StoreUnavailable
from ..timeutil import format_instant, now_instant

FLUSH_SECONDS = 0.2
MAX_PENDING = 100_000
PURGE_BATCH = 5_000  # entries per delete: one short write, so writers wait at most that long
log = logging.getLogger("fhir_sched.audit")

ACTION = {"create": "C", "read": "R", "vread": "R", "search-type": "E", "history": "R",
          "update": "U", "patch": "U", "delete": "D"}


def patient_of(type_: str, resource: dict[str, Any] | None) -> str | None:
    """The patient whose data ``resource`` is, when it is in a Patient compartment."""
    if resource is None:
        return None
    if type_ == "Patient":
        return f"Patient/{resource.get('id')}"
    for param in PATIENT_COMPARTMENT.get(type_, ()):
        for ref in reference_targets(type_, param, resource):
            if ref.startswith("Patient/"):
                return ref
    return None


def entry(ctx: RequestContext, subtype: str, outcome: str = "0", *, entity: str | None = None,
          patient: str | None = None, detail: str = "", action: str | None = None,
          recorded: str | None = None) -> AuditEntry:
    return AuditEntry(
        id=unique_id(), recorded=recorded or now_instant(), door=ctx.door,
        action=action or ACTION.get(subtype, "E"), subtype=subtype, outcome=outcome,
        who=ctx.subject, client_id=ctx.client_id, request_id=ctx.request_id, entity=entity,
        patient=patient or ctx.patient, detail=detail)


# A queued read, kept as cheap to make as a tuple can be: the entry is built at flush time.
#   (recorded epoch seconds, context, subtype, entity, type, id, version, body, detail)
_Queued = tuple[float, RequestContext, str, str, str | None, str | None, int | None,
                bytes | None, str]
PATIENT_CACHE = 10_000


async def purge(store: DocumentStore, before: str, ctx: RequestContext) -> int:
    """Delete the entries recorded before the instant ``before``, in batches, then record the
    purge itself when it removed anything (who, the cut-off, how many): removing audit
    history is an audited act. That entry is recorded now, so no purge removes its own
    record."""
    total = 0
    while True:
        deleted = await store.audit_purge(before, PURGE_BATCH)
        total += deleted
        if deleted < PURGE_BATCH:
            break
        await asyncio.sleep(0)
    if total:
        detail = f"{total} entries recorded before {before} deleted"
        await store.audit_append([entry(ctx, "audit/purge", action="D", entity="AuditEvent",
                                        detail=detail)])
    return total


async def keep_for(store: DocumentStore, days: int, every_seconds: float = 3600.0) -> None:
    """The retention job: entries older than ``days`` days are deleted every hour; ``days``
    <= 0 (the default) keeps the trail for good, as most record-keeping rules expect."""
    ctx = RequestContext.system("audit-retention")
    while days > 0:
        before = format_instant(datetime.now(UTC) - timedelta(days=days))
        try:
            deleted = await purge(store, before, ctx)
            if deleted:
                log.info("audit retention: %d entries older than %d days deleted", deleted, days)
        except StoreUnavailable:
            pass
        await asyncio.sleep(every_seconds)


class AuditLog:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self._pending: list[AuditEntry | _Queued] = []
        self.dropped = 0
        # The patient of a resource version, found once: a version never changes.
        self._patients: dict[tuple[str, str, int], str | None] = {}
        self._second = (-1, "")  # the last whole second formatted, and its text

    async def in_unit(self, unit: Unit, item: AuditEntry) -> None:
        await unit.audit_add([item])

    def later(self, item: AuditEntry) -> None:
        """Queue a finished entry, to be written with the next batch."""
        self._queue(item)

    def _queue(self, item: AuditEntry | _Queued) -> None:
        if len(self._pending) >= MAX_PENDING:  # the store is down: do not grow without bound
            self.dropped += 1
            return
        self._pending.append(item)

    def read(self, ctx: RequestContext, subtype: str, type_: str, id_: str | None,
             body: bytes | None, version: int | None = None) -> None:
        """Queue a read of ``type_/id_`` (the bytes served, for its patient); the hot path pays
        for a tuple, the rest is done at flush time."""
        entity = f"{type_}/{id_}" if id_ else type_
        self._queue((time.time(), ctx, subtype, entity, type_, id_, version, body, ""))

    def search(self, ctx: RequestContext, type_: str, params: Iterable[str]) -> None:
        names = " ".join(sorted({p.split(":")[0] for p in params}))
        self._queue((time.time(), ctx, "search-type", type_, None, None, None, None, names))

    def _recorded(self, at: float) -> str:
        """``at`` in the form ``now_instant`` gives, formatting each second only once."""
        ms = int(at * 1000)
        second, text = self._second
        if ms // 1000 != second:
            second = ms // 1000
            text = format_instant(datetime.fromtimestamp(second, UTC))[:-4]  # drop "mmmZ"
            self._second = (second, text)
        return f"{text}{ms % 1000:03d}Z"

    def _patient(self, type_: str, id_: str | None, version: int | None, body: bytes
                 ) -> str | None:
        if type_ != "Patient" and (type_ not in PATIENT_COMPARTMENT or b"Patient/" not in body):
            return None  # nothing in it can name a patient: no need to parse it
        key = (type_, id_ or "", version) if version is not None else None
        if key is not None and key in self._patients:
            return self._patients[key]
        try:
            patient = patient_of(type_, orjson.loads(body))
        except orjson.JSONDecodeError:
            patient = None
        if key is not None:
            if len(self._patients) >= PATIENT_CACHE:
                self._patients.clear()
            self._patients[key] = patient
        return patient

    def _resolve(self, batch: list[AuditEntry | _Queued]) -> list[AuditEntry]:
        out = []
        for item in batch:
            if isinstance(item, AuditEntry):
                out.append(item)
                continue
            at, ctx, subtype, entity, type_, id_, version, body, detail = item
            patient = None
            if ctx.patient is None and type_ and body:
                patient = self._patient(type_, id_, version, body)
            out.append(entry(ctx, subtype, entity=entity, patient=patient, detail=detail,
                             recorded=self._recorded(at)))
        return out

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        entries = self._resolve(batch)
        try:
            await self.store.audit_append(entries)
        except Exception as exc:  # the store is unavailable: keep them for the next round
            log.warning("audit entries not written yet (%d queued): %s", len(entries),
                        type(exc).__name__)
            self._pending = [*entries, *self._pending]

    async def run(self) -> None:
        """Background job: write queued entries; on shutdown, write what is left."""
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                await self.flush()
        finally:
            # The last write runs to its end even if shutdown cancels this job again meanwhile
            # (it does, every half second): a cut-short flush would lose the queued entries.
            last = asyncio.ensure_future(self.flush())
            while not last.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(last)
