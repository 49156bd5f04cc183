"""Create, read, update, patch, delete and history for hosted resources.

One write pipeline serves every door: validate (outside the transaction, it is CPU work), then in
one atomic unit: version check, write hooks (the booking guard), reference resolution, index
extraction and the change-log append. Nothing reaches the store any other way.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import jsonpatch
import orjson

from ..context import RequestContext
from ..errors import FhirError, bad_request, gone, not_found, precondition_failed, unprocessable
from ..ids import unique_id
from ..numbers import MAX_INT64, plain_int
from ..query import Query
from ..resources import get_type, is_hosted
from ..resources.appointment import PROPOSAL_ID_PREFIX
from ..resources.references import RELATIVE, iter_references
from ..resources.validate import validate
from ..scheduling.eligibility import MAX_PER_REQUEST, Answer, Need, NeedsEligibility, remember
from ..scheduling.extensions import overbook_requested, override_reason
from ..search.extract import extract
from ..storage.base import DocumentStore, Origin, Record, Unit
from ..storage.errors import VersionConflict
from ..timeutil import now_instant
from ..writes import FollowUp, WriteConfig, WriteEvent
from .audit import AuditLog, patient_of
from .audit import entry as audit_entry
from .authorization import Authorizer, Interaction, OpenPolicy
from .proposals import Proposals

Json = dict[str, Any]
T = TypeVar("T")


@dataclass(slots=True)
class Saved:
    record: Record
    created: bool
    changed: bool = True  # False when a conditional create found a match and wrote nothing



def origin_of(ctx: RequestContext) -> Origin:
    return Origin(ctx.subject, ctx.client_id, ctx.door, ctx.request_id)


def new_id() -> str:
    return unique_id()


_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def check_id(id_: str) -> None:
    # "." and ".." match the R4 id pattern but name a path segment, not a resource: a URL
    # with them is rewritten by every client and proxy on its way here.
    if not _ID.match(id_) or id_ in (".", ".."):
        raise bad_request(f"invalid resource id {id_!r}: 1-64 of [A-Za-z0-9-.], not . or ..")


# Types only the server writes, and how one comes to be: the booking guard trusts a stored
# CoverageEligibilityResponse as the checker's answer, so a client cannot store its own.
SERVER_MADE = {"CoverageEligibilityResponse":
               "the answer to CoverageEligibilityRequest/$submit, or a booking's check"}

# Bodies past this (serialized) are validated off the event loop (prepare_off_loop).
BIG_BODY_BYTES = 32 * 1024

class ResourceService:
    def __init__(self, store: DocumentStore, authorizer: Authorizer | None = None,
                 config: WriteConfig | None = None) -> None:
        self.store = store
        self.authorizer: Authorizer = authorizer or OpenPolicy()
        self.config = config or WriteConfig()
        self._proposals = Proposals(store)
        # Set by compose when a remote eligibility checker is configured: asks it for a
        # booking's answer (``service/eligibility.py``).
        self.consult: Callable[[RequestContext, Need], Awaitable[Answer]] | None = None
        # Set by compose: every write is audited in its own unit, reads are queued.
        self.audit: AuditLog | None = None

    # -- reads ---------------------------------------------------------------------------
    async def read(self, ctx: RequestContext, type_: str, id_: str) -> Record:
        self.authorizer.check(ctx, Interaction.READ, type_, id_)
        rec = await self.store.get(type_, id_)
        rec = self._readable(ctx, Interaction.READ, rec, f"{type_}/{id_} is not known",
                             f"{type_}/{id_} was deleted")
        if self.audit is not None:
            self.audit.read(ctx, "read", type_, id_, rec.body, rec.version)
        return rec

    async def read_proposal(self, ctx: RequestContext, id_: str) -> Json:
        """A ``$find`` proposal read at its ``fullUrl``: what was offered, while it is kept.
        Not a stored resource (no version, no history): an expired one is 410, an id this
        server did not make 404."""
        self.authorizer.check(ctx, Interaction.READ, "Appointment", id_)
        try:
            body = await self._proposals.get(id_)
        except FhirError as exc:
            if exc.status == 409:
                raise gone(f"Appointment/{id_} was a $find proposal and has expired; run $find "
                           "again") from None
            raise not_found(f"Appointment/{id_} is not known") from None
        proposal = {"resourceType": "Appointment", "id": id_, **body}
        if self.authorizer.needs_content(ctx, "Appointment"):
            self.authorizer.check(ctx, Interaction.READ, "Appointment", id_, resource=proposal)
        return proposal

    def _readable(self, ctx: RequestContext, interaction: Interaction, rec: Record | None,
                  missing: str, deleted: str) -> Record:
        """A fetched version as the caller may see it: 404, 410, or the check again with the
        stored resource in hand when the policy needs it."""
        if rec is None:
            raise not_found(missing)
        if rec.deleted:
            raise gone(f"{deleted} (version {rec.version})")
        if rec.body is not None and self.authorizer.needs_content(ctx, rec.type):
            self.authorizer.check(ctx, interaction, rec.type, rec.id,
                                  resource=orjson.loads(rec.body))
        return rec

    async def vread(self, ctx: RequestContext, type_: str, id_: str, vid: str) -> Record:
        self.authorizer.check(ctx, Interaction.VREAD, type_, id_)
        version = plain_int(vid)
        if version is None or version > MAX_INT64:  # past any version a store can hold
            raise not_found(f"{type_}/{id_} has no version {vid!r}")
        rec = await self.store.get_version(type_, id_, version)
        rec = self._readable(ctx, Interaction.VREAD, rec, f"{type_}/{id_} has no version {vid}",
                             f"{type_}/{id_} version {vid} is a deletion")
        if self.audit is not None:
            self.audit.read(ctx, "vread", type_, id_, rec.body, rec.version)
        return rec

    # -- the write pipeline ------------------------------------------------------------------
    async def prepare_off_loop(self, type_: str, body: Any, id_: str | None) -> Json:
        """``prepare``, in a worker thread when the body is large: validating a 3 MB resource
        takes most of a second of CPU, which on the event loop would hold every other
        request for as long (bench/stall_bench.py). In a thread the interpreter hands the
        loop its turn every few milliseconds. Small bodies, nearly all, stay on the loop,
        where a thread hop would cost more than their validation."""
        try:
            big = isinstance(body, dict) and len(orjson.dumps(body)) > BIG_BODY_BYTES
        except orjson.JSONEncodeError:  # nested past orjson's limit: prepare refuses it
            big = False
        if big:
            return await asyncio.to_thread(self.prepare, type_, body, id_)
        return self.prepare(type_, body, id_)

    def prepare(self, type_: str, body: Any, id_: str | None) -> Json:
        """Check a client payload before any transaction is opened."""
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object (a FHIR resource)")
        rt = body.get("resourceType")
        if rt != type_:
            raise bad_request(
                f"resourceType {rt!r} does not match the endpoint type {type_!r}",
                expression=["resourceType"])
        if id_ is not None:
            body_id = body.get("id")
            if body_id is None:
                raise bad_request("an update must carry the resource id in the body",
                                  expression=[f"{type_}.id"])
            if body_id != id_:
                raise bad_request(f"body id {body_id!r} does not match the URL id {id_!r}",
                                  expression=[f"{type_}.id"])
            check_id(id_)
            if type_ == "Appointment" and id_.startswith(PROPOSAL_ID_PREFIX):
                raise unprocessable(f"ids beginning {PROPOSAL_ID_PREFIX!r} name $find "
                                    "proposals, never a stored Appointment; hold or book the "
                                    "proposal, or choose another id", [f"{type_}.id"])
        validate(body)
        return body

    async def put_in_unit(
        self,
        unit: Unit,
        ctx: RequestContext,
        type_: str,
        id_: str,
        body: Json | None,
        *,
        if_match: int | None = None,
        check_refs: bool = True,
        authorize: bool = True,
    ) -> Saved:
        """Write (or, with ``body=None``, delete) one resource inside ``unit``: the one write
        pipeline. Every door's writes end here: authorization with the content in hand, the
        type's write rule, reference checks, index extraction and the change-log append.

        ``authorize=False`` is for the follow-up writes a rule asks for (a Slot following its
        Appointment): the caller was authorized for the write that caused them."""
        prev = await unit.get(type_, id_)
        current = prev.version if prev else 0
        if if_match is not None and (prev is None or prev.deleted or current != if_match):
            shown = "deleted" if prev and prev.deleted else f"W/\"{current}\"" if prev else "none"
            raise precondition_failed(
                f"If-Match W/\"{if_match}\" does not match the current version ({shown})")
        old = orjson.loads(prev.body) if prev and prev.body and not prev.deleted else None
        if body is None and old is None:
            # deleting what is not there: nothing to record
            return Saved(prev or Record(type_, id_, 0, now_instant(), True, None), False, False)
        if authorize:
            kind = (Interaction.DELETE if body is None else
                    Interaction.CREATE if old is None else Interaction.UPDATE)
            self.authorizer.check(ctx, kind, type_, id_, resource=old if body is None else body)
            if old is not None and body is not None and self.authorizer.needs_content(ctx, type_):
                # moving a resource out of the caller's reach is a write to what it was
                self.authorizer.check(ctx, kind, type_, id_, resource=old)
        if authorize and type_ in SERVER_MADE and ctx.door != "system":
            raise FhirError(405, "not-supported", f"{type_} resources are made by this server "
                            f"only ({SERVER_MADE[type_]}); they cannot be written directly",
                            headers={"Allow": "GET"})
        # The type's write rule (resources/<type>.py WRITE_RULE; for Appointment the booking
        # guard) runs here, in the unit, for every write from every door.
        rule = get_type(type_).write_rule
        follow_ups: list[FollowUp] = []
        if rule is not None:
            event = WriteEvent(ctx, type_, id_, old, body, self.config)
            follow_ups = await rule(unit, event)
            body = event.new
        if body is not None and check_refs:
            await self.check_references(unit, body)
        version = current + 1
        updated = now_instant()
        if body is None:
            rec = Record(type_, id_, version, updated, True, None, "DELETE", origin=origin_of(ctx))
            await unit.write(rec, [], current)
            if self.audit is not None:
                await self.audit.in_unit(unit, audit_entry(
                    ctx, "delete", entity=f"{type_}/{id_}", patient=patient_of(type_, old)))
            await self._follow(unit, ctx, follow_ups)
            return Saved(rec, False)
        body = dict(body)
        body["id"] = id_
        meta = dict(body.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = updated
        body["meta"] = meta
        method = "POST" if old is None else "PUT"
        rec = Record(type_, id_, version, updated, False, orjson.dumps(body), method,
                     origin=origin_of(ctx))
        # Index extraction walks every element: for a body at the size limit, tens of
        # milliseconds, kept off the loop as its validation is (prepare_off_loop).
        index = (await asyncio.to_thread(extract, type_, body)
                 if len(rec.body or b"") > BIG_BODY_BYTES else extract(type_, body))
        await unit.write(rec, index, current)
        if self.audit is not None:
            patient = patient_of(type_, body)
            action = "create" if old is None else "update"
            entries = [audit_entry(ctx, action, entity=f"{type_}/{id_}", patient=patient)]
            if type_ == "Appointment" and overbook_requested(body):
                # The front-desk override is a power, used on this write: the guard let it
                # book past capacity or availability only because the caller holds it.
                reason = override_reason(body)
                entries.append(audit_entry(
                    ctx, "overbook", action="C" if old is None else "U",
                    entity=f"{type_}/{id_}", patient=patient,
                    detail="booked with the front-desk override (capacity, availability and "
                    "booking rules)" + (f"; reason: {reason[:500]}" if reason else "")))
            for item in entries:
                await self.audit.in_unit(unit, item)
        await self._follow(unit, ctx, follow_ups)
        return Saved(rec, old is None)

    async def audit_operation(self, unit: Unit, ctx: RequestContext, name: str,
                              saved: Saved, body: Json) -> None:
        """An operation's own entry (``$hold``, ``$book``), in the unit of the writes it made,
        beside their create/update entries: the trail says which operation made them.
        ``body`` is the resource the operation wrote (its patient, without a second parse)."""
        if self.audit is None:
            return
        rec = saved.record
        await self.audit.in_unit(unit, audit_entry(
            ctx.through("operation"), name, action="C" if saved.created else "U",
            entity=f"{rec.type}/{rec.id}", patient=patient_of(rec.type, body)))

    async def _follow(self, unit: Unit, ctx: RequestContext, follow_ups: list[FollowUp]) -> None:
        """The further writes a rule asked for, through this same pipeline (and their rules)."""
        for f in follow_ups:
            await self.put_in_unit(unit, ctx, f.type, f.id, f.body, check_refs=False,
                                   authorize=False)

    async def check_references(self, unit: Unit, body: Json) -> None:
        type_ = body["resourceType"]
        contained = {f"#{c.get('id')}" for c in body.get("contained") or [] if isinstance(c, dict)}
        for path, ref in iter_references(body, type_):
            value = ref["reference"]
            if value.startswith("#"):
                if value != "#" and value not in contained:
                    raise unprocessable(f"{path}.reference {value!r} names no contained resource",
                                        expression=[f"{path}.reference"])
                continue
            if value.startswith(("urn:uuid:", "urn:oid:")):
                # Bundle-local names: a transaction rewrites the ones its entries define, so one
                # left here points at nothing and would dangle forever once stored.
                raise unprocessable(
                    f"{path}.reference {value!r} names no entry of a transaction; urn: "
                    "references only resolve inside a transaction Bundle",
                    expression=[f"{path}.reference"], code="not-found")
            m = RELATIVE.match(value)
            if not m or "://" in value or not is_hosted(m[1]):
                continue  # absolute, or a type this server does not host: kept as given
            target = await unit.get(m[1], m[2])
            if target is None or target.deleted:
                raise unprocessable(
                    f"{path}.reference {value!r} does not resolve on this server",
                    expression=[f"{path}.reference"], code="not-found")

    async def atomic(self, fn: Callable[[Unit], Awaitable[T]]) -> T:
        """``fn`` in one unit. A unit that stops because a booking needs a payer's answer
        (``NeedsEligibility``) has it asked, outside any unit, and runs again; at most
        ``MAX_PER_REQUEST`` times, after which the guard stops asking."""
        for _ in range(MAX_PER_REQUEST + 1):
            try:
                return await self.store.atomic(fn)
            except VersionConflict as exc:
                msg = f"version conflict: current version is {exc.current}"
                raise precondition_failed(msg) from exc
            except NeedsEligibility as need:
                if self.consult is None:
                    raise
                remember(need.ctx.consulted, need.need.coverage,
                         await self.consult(need.ctx, need.need))
        raise AssertionError("the guard asked for more eligibility answers than it may")

    # -- interactions -------------------------------------------------------------------------
    async def create(
        self, ctx: RequestContext, type_: str, body: Any, if_none_exist: Query | None = None
    ) -> Saved:
        self.authorizer.check(ctx, Interaction.CREATE, type_)
        body = await self.prepare_off_loop(type_, body, None)
        id_ = new_id()

        async def run(unit: Unit) -> Saved:
            if if_none_exist is not None:
                found = await unit.find_ids(if_none_exist, limit=2)
                if len(found) > 1:
                    raise precondition_failed(
                        f"If-None-Exist matched {len(found)} or more {type_} resources")
                if found:
                    rec = await unit.get(type_, found[0])
                    assert rec is not None
                    return Saved(rec, False, False)
            return await self.put_in_unit(unit, ctx, type_, id_, body)

        return await self.atomic(run)

    async def update(
        self, ctx: RequestContext, type_: str, id_: str, body: Any, if_match: int | None = None
    ) -> Saved:
        self.authorizer.check(ctx, Interaction.UPDATE, type_, id_)
        body = await self.prepare_off_loop(type_, body, id_)
        return await self._put_from_current(ctx, type_, id_, lambda _old: body, if_match)

    async def _put_from_current(
        self,
        ctx: RequestContext,
        type_: str,
        id_: str,
        make: Callable[[Json | None], Json | None],
        if_match: int | None,
    ) -> Saved:
        async def run(unit: Unit) -> Saved:
            prev = await unit.get(type_, id_)
            old = orjson.loads(prev.body) if prev and prev.body and not prev.deleted else None
            return await self.put_in_unit(unit, ctx, type_, id_, make(old), if_match=if_match)

        return await self.atomic(run)

    async def conditional_update(
        self, ctx: RequestContext, type_: str, query: Query, body: Any,
        if_match: int | None = None,
    ) -> Saved:
        self.authorizer.check(ctx, Interaction.UPDATE, type_)
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object (a FHIR resource)")

        async def run(unit: Unit) -> Saved:
            found = await unit.find_ids(query, limit=2)
            if len(found) > 1:
                raise precondition_failed(
                    f"conditional update matched {len(found)} or more {type_} resources")
            if found:
                id_ = found[0]
                if body.get("id") not in (None, id_):
                    raise bad_request(
                        f"body id {body.get('id')!r} differs from the matched resource {id_!r}")
            else:
                id_ = body.get("id") or new_id()
            checked = self.prepare(type_, {**body, "id": id_}, id_)
            return await self.put_in_unit(unit, ctx, type_, id_, checked, if_match=if_match)

        return await self.atomic(run)

    async def patch(
        self, ctx: RequestContext, type_: str, id_: str, ops: Any, if_match: int | None = None
    ) -> Saved:
        self.authorizer.check(ctx, Interaction.UPDATE, type_, id_)
        if not isinstance(ops, list):
            raise bad_request("a JSON Patch body must be an array of operations")
        try:
            patch = jsonpatch.JsonPatch(ops)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError,
                KeyError, AttributeError, ValueError) as exc:
            raise bad_request(f"invalid JSON Patch: {exc}") from exc

        def make(old: Json | None) -> Json:
            if old is None:
                raise not_found(f"{type_}/{id_} is not known (or was deleted)")
            try:
                patched = patch.apply(copy.deepcopy(old))
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException,
                    TypeError, KeyError, IndexError, ValueError) as exc:
                raise unprocessable(f"JSON Patch could not be applied: {exc}") from exc
            if not isinstance(patched, dict) or patched.get("id") != id_ or patched.get(
                    "resourceType") != type_:
                raise unprocessable("a patch may not change resourceType or id")
            return self.prepare(type_, patched, id_)

        return await self._put_from_current(ctx, type_, id_, make, if_match)

    async def delete(
        self, ctx: RequestContext, type_: str, id_: str, if_match: int | None = None
    ) -> Saved:
        self.authorizer.check(ctx, Interaction.DELETE, type_, id_)

        async def run(unit: Unit) -> Saved:
            return await self.put_in_unit(unit, ctx, type_, id_, None, if_match=if_match)

        return await self.atomic(run)

    async def conditional_delete(self, ctx: RequestContext, type_: str, query: Query) -> int:
        self.authorizer.check(ctx, Interaction.DELETE, type_)

        async def run(unit: Unit) -> int:
            found = await unit.find_ids(query, limit=2)
            if len(found) > 1:
                raise precondition_failed(
                    f"conditional delete matched {len(found)} or more {type_} resources")
            for id_ in found:
                await self.put_in_unit(unit, ctx, type_, id_, None)
            return len(found)

        return await self.atomic(run)

    async def history(
        self, ctx: RequestContext, type_: str | None, id_: str | None, since: str | None,
        count: int, before_seq: int | None,
    ) -> list[Record]:
        self.authorizer.check(ctx, Interaction.HISTORY, type_, id_)
        if id_ is not None and type_ is not None:
            rec = await self.store.get(type_, id_)
            if rec is None:
                raise not_found(f"{type_}/{id_} is not known")
            if rec.body is not None and self.authorizer.needs_content(ctx, type_):
                # an instance's history is refused as a read of it would be, not answered
                # with its versions filtered away
                self.authorizer.check(ctx, Interaction.HISTORY, type_, id_,
                                      resource=orjson.loads(rec.body))
        records = await self.store.history(type_, id_, since, count, before_seq)
        if self.audit is not None:
            self.audit.read(ctx, "history", type_ or "", id_, None)
        return [r for r in records if self._shows(ctx, r)]

    def _shows(self, ctx: RequestContext, rec: Record) -> bool:
        if rec.body is None or not self.authorizer.needs_content(ctx, rec.type):
            return True
        return self.authorizer.visible(ctx, rec.type, orjson.loads(rec.body))

