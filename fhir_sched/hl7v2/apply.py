"""One mapped SIU change applied inside one atomic unit, through the write pipeline.

What each kind of change does to the store:

- **appointment** (S12-S17, S26): upsert by the sender's filler id, then its placer id. An
  update restates the appointment: what it restates replaces what was stored, what it leaves
  out is kept (an S15 that only names the appointment still cancels it, with its time and
  people), and identifiers only accumulate. Any of them for an appointment nobody has here
  creates it in the status it reports: feeds start mid-stream, and an appointment the sender
  cancelled before we heard of it is still a fact worth keeping in step with.
- **participants** (S18-S22): the one resource each delta names is added, changed or removed
  on the stored appointment, which must exist.
- **block** / **open** (S23/S24): blocked time becomes a ``busy-unavailable`` Slot on the
  resource's Schedule (one is created if the resource has none), which admission already
  refuses bookings into; opening removes those Slots again.

Every write goes through ``ResourceService.put_in_unit``, so the booking guard judges an
appointment from a feed exactly as one from the REST API (and, for a calendar of record,
records and flags what it would otherwise refuse).
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_sched.context import RequestContext
from fhir_sched.errors import FhirError
from fhir_sched.hl7v2.resolve import Resolver, find_one
from fhir_sched.hl7v2.siu import Block, ParticipantDelta, SiuChange
from fhir_sched.query import Query
from fhir_sched.scheduling.extensions import BLOCKED_TIME_ONLY
from fhir_sched.search.parse import parse_param
from fhir_sched.service.resources import ResourceService, new_id
from fhir_sched.storage.base import Unit

Json = dict[str, Any]
_REMOVES = frozenset({"cancel", "discontinue", "delete"})


class Apply:
    def __init__(self, resources: ResourceService, unit: Unit, ctx: RequestContext,
                 change: SiuChange) -> None:
        self.resources = resources
        self.unit = unit
        self.ctx = ctx
        self.change = change
        self.resolver = Resolver(resources, unit, ctx)
        self.warnings: list[str] = []

    async def run(self) -> list[str]:
        """The ``Type/id`` of every resource written, in order."""
        for ref in self.change.resources:
            body = self.resolver.link(ref.body)
            await self.resolver.ensure(ref.resource_type, ref.system, ref.value, body)
        for request in self.change.service_requests:
            ident = (request.get("identifier") or [{}])[-1]
            await self.resolver.ensure("ServiceRequest", str(ident.get("system", "")),
                                       str(ident.get("value", "")), self.resolver.link(request))
        kind = self.change.kind
        if kind == "appointment":
            await self._appointment()
        elif kind == "participants":
            await self._participants()
        else:
            for block in self.change.blocks:
                await self._block(block)
        return self.resolver.written

    # -- appointments -------------------------------------------------------------------------
    async def _find_appointment(self) -> str | None:
        for key in self.change.keys:
            id_ = await find_one(self.unit, "Appointment", str(key.get("system", "")),
                                 str(key.get("value", "")))
            if id_ is not None:
                return id_
        return None

    def _unknown(self) -> FhirError:
        named = ", ".join(f"{k.get('value')}" for k in self.change.keys) or "(no id)"
        return FhirError(404, "not-found", f"SIU^{self.change.trigger}: no appointment has "
                         f"the sender's id {named}")

    async def _current(self, id_: str) -> Json:
        rec = await self.unit.get("Appointment", id_)
        if rec is None or rec.deleted or rec.body is None:
            raise self._unknown()
        body: Json = orjson.loads(rec.body)
        return body

    async def _put(self, type_: str, id_: str, body: Json | None) -> None:
        if body is not None:
            body = self.resources.prepare(type_, {**body, "id": id_}, id_)
        saved = await self.resources.put_in_unit(self.unit, self.ctx, type_, id_, body)
        if saved.changed:
            self.resolver.written.append(f"{type_}/{id_}")

    async def _appointment(self) -> None:
        new = self.resolver.link(self.change.appointment)
        id_ = await self._find_appointment()
        if id_ is None:
            await self._put("Appointment", new_id(), new)
            return
        await self._put("Appointment", id_, restate(await self._current(id_), new))

    async def _participants(self) -> None:
        id_ = await self._find_appointment()
        if id_ is None:
            raise self._unknown()
        body = await self._current(id_)
        for delta in self.change.deltas:
            body = self._delta(body, delta)
        await self._put("Appointment", id_, body)

    def _delta(self, body: Json, delta: ParticipantDelta) -> Json:
        action = delta.segment_action or delta.action
        out = dict(body)
        if delta.segment == "AIS":
            if delta.service_type is None:
                return out
            kept = [s for s in out.get("serviceType") or [] if not _same_concept(s,
                                                                                delta.service_type)]
            out["serviceType"] = kept if action in _REMOVES else [*kept, delta.service_type]
            if not out["serviceType"]:
                del out["serviceType"]
            return out
        if delta.participant is None:
            return out
        new = self.resolver.link(delta.participant)
        kept = [p for p in out.get("participant") or []
                if not _same_actor(p.get("actor"), new.get("actor"))]
        out["participant"] = kept if action in _REMOVES else [*kept, new]
        return out

    # -- blocked time --------------------------------------------------------------------------
    async def _schedules_of(self, actor: str, create: bool) -> list[str]:
        """Every active Schedule of ``actor`` (a block must hold on each, as ``$find`` reads
        each); when it has none, one marked ``blocked-time-only`` is made, so the block holds
        without the resource becoming bookable only inside a calendar it does not have."""
        ids = await self.unit.find_ids(_query("Schedule", ("actor", actor), ("active", "true")),
                                       limit=50)
        if ids or not create:
            return ids
        id_ = new_id()
        await self._put("Schedule", id_, {
            "resourceType": "Schedule", "active": True, "actor": [{"reference": actor}],
            "extension": [{"url": BLOCKED_TIME_ONLY, "valueBoolean": True}],
            "comment": "blocked time received over HL7 v2; offers no time of its own"})
        return [id_]

    async def _block(self, block: Block) -> None:
        ref = block.resource
        actor = (self.resolver.found.get(ref.key) if ref is not None and ref.value else None)
        if actor is None:
            self.warnings.append(
                f"{block.kind} time names no resource this server keeps a calendar for")
            return
        for sid in await self._schedules_of(actor, create=block.kind == "blocked"):
            await self._block_on(f"Schedule/{sid}", block)

    async def _block_on(self, schedule: str, block: Block) -> None:
        key = self.change.keys[0] if self.change.keys else None
        if block.kind == "blocked":
            slot: Json = {"resourceType": "Slot", "schedule": {"reference": schedule},
                          "status": "busy-unavailable", "start": block.start, "end": block.end,
                          "comment": block.reason or f"blocked by SIU^{self.change.trigger}"}
            existing = None
            if key is not None:
                slot["identifier"] = [key]
                existing = await find_one(self.unit, "Slot", str(key.get("system", "")),
                                          str(key.get("value", "")), ("schedule", schedule))
            await self._put("Slot", existing or new_id(), slot)
            return
        for id_ in await self._blocks_to_open(schedule, block, key):
            await self._put("Slot", id_, None)

    async def _blocks_to_open(self, schedule: str, block: Block,
                              key: dict[str, Any] | None) -> list[str]:
        """The block Slots an S24 opens: those it names by id, else those of exactly its time."""
        if key is not None:
            id_ = await find_one(self.unit, "Slot", str(key.get("system", "")),
                                 str(key.get("value", "")), ("schedule", schedule))
            if id_ is not None:
                return [id_]
        candidates = await self.unit.find_ids(
            _query("Slot", ("schedule", schedule), ("status", "busy-unavailable")), limit=500)
        out = []
        for id_ in candidates:
            rec = await self.unit.get("Slot", id_)
            body = orjson.loads(rec.body) if rec is not None and rec.body else {}
            if body.get("start") == block.start and body.get("end") == block.end:
                out.append(id_)
        return out


def _query(type_: str, *params: tuple[str, str]) -> Query:
    where = tuple(e for name, raw in params if (e := parse_param(type_, name, raw)) is not None)
    return Query(type_, where=where, count=500)


def restate(old: Json, new: Json) -> Json:
    """The stored appointment after an SIU update: restated elements replace, the rest stays;
    identifiers accumulate; extensions are replaced per URL."""
    out = {k: v for k, v in old.items() if k not in ("meta", "id")}
    out.update(new)
    new_ids = new.get("identifier") or []
    seen = {(i.get("system"), i.get("value")) for i in new_ids}
    out["identifier"] = [*new_ids, *(i for i in old.get("identifier") or []
                                     if (i.get("system"), i.get("value")) not in seen)]
    urls = {e.get("url") for e in new.get("extension") or []}
    kept = [e for e in old.get("extension") or [] if e.get("url") not in urls]
    if kept or new.get("extension"):
        out["extension"] = [*kept, *(new.get("extension") or [])]
    if not out["identifier"]:
        del out["identifier"]
    return out


def _same_actor(a: Any, b: Any) -> bool:
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    if a.get("reference") and a.get("reference") == b.get("reference"):
        return True
    ia, ib = a.get("identifier"), b.get("identifier")
    return (isinstance(ia, dict) and isinstance(ib, dict) and ia.get("value") is not None
            and (ia.get("system"), ia.get("value")) == (ib.get("system"), ib.get("value")))


def _same_concept(a: Any, b: Any) -> bool:
    def codes(c: Any) -> set[tuple[Any, Any]]:
        return {(x.get("system"), x.get("code")) for x in (c or {}).get("coding") or []}

    text = (a or {}).get("text")
    return bool(codes(a) & codes(b)) or (text is not None and text == (b or {}).get("text"))
