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
import logging
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import replace
from typing import Any

import orjson

from ..context import RequestContext
from ..ids import unique_id
from ..search.compartment import PATIENT_COMPARTMENT
from ..search.extract import reference_targets
from ..storage.base import AuditEntry, DocumentStore, Unit
from ..timeutil import now_instant

FLUSH_SECONDS = 0.2
MAX_PENDING = 100_000
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
          patient: str | None = None, detail: str = "", action: str | None = None
          ) -> AuditEntry:
    return AuditEntry(
        id=unique_id(), recorded=now_instant(), door=ctx.door,
        action=action or ACTION.get(subtype, "E"), subtype=subtype, outcome=outcome,
        who=ctx.subject, client_id=ctx.client_id, request_id=ctx.request_id, entity=entity,
        patient=patient or ctx.patient, detail=detail)


class AuditLog:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self._pending: list[tuple[AuditEntry, str | None, bytes | None]] = []
        self.dropped = 0

    async def in_unit(self, unit: Unit, item: AuditEntry) -> None:
        await unit.audit_add([item])

    def later(self, item: AuditEntry, type_: str | None = None, body: bytes | None = None
              ) -> None:
        """Queue an entry; with ``type_`` and ``body``, its patient is found at flush time."""
        if len(self._pending) >= MAX_PENDING:  # the store is down: do not grow without bound
            self.dropped += 1
            return
        self._pending.append((item, type_, body))

    def read(self, ctx: RequestContext, subtype: str, type_: str, id_: str | None,
             body: bytes | None) -> None:
        entity = f"{type_}/{id_}" if id_ else type_
        self.later(entry(ctx, subtype, entity=entity), type_, body)

    def search(self, ctx: RequestContext, type_: str, params: Iterable[str]) -> None:
        names = sorted({p.split(":")[0] for p in params})
        self.later(entry(ctx, "search-type", entity=type_, detail=" ".join(names)))

    def _resolve(self, batch: list[tuple[AuditEntry, str | None, bytes | None]]
                 ) -> list[AuditEntry]:
        out = []
        for item, type_, body in batch:
            if item.patient is None and type_ and body:
                with suppress(orjson.JSONDecodeError):
                    item = replace(item, patient=patient_of(type_, orjson.loads(body)))
            out.append(item)
        return out

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self.store.audit_append(self._resolve(batch))
        except Exception as exc:  # the store is unavailable: keep them for the next round
            log.warning("audit entries not written yet (%d queued): %s", len(batch),
                        type(exc).__name__)
            self._pending = batch + self._pending

    async def run(self) -> None:
        """Background job: write queued entries; on shutdown, write what is left."""
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())
