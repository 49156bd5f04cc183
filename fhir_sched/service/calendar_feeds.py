"""Calendar feeds: a secret, revocable URL per practitioner, location or patient that any
calendar application subscribes to (an RFC 5545 feed, rendered by ``engage/ics.py``).

Calendar applications cannot do SMART, so the URL is the credential: 256 random bits, of which
the store keeps only a SHA-256 (a copy of the database does not hand out live feed URLs).
Making one needs what reading that calendar through the API needs (reading the resource and
searching Appointments, within the caller's compartment for a patient token); revoking one, or
all of an owner's, likewise. Each feed read is audited, naming the owner.

A feed holds the owner's visits from a month back to a year ahead, at most ``MAX_EVENTS``,
cancelled ones included (as CANCELLED, so subscribed calendars drop them), and shows no
patient's name in a practitioner's or location's feed.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ..context import RequestContext
from ..errors import FhirError
from ..query import Cond, Entry, Query, SortKey
from ..resources.names import display_name
from ..scheduling.booking_rules import TIMEZONE_URL
from ..scheduling.templates import schedule_zone
from ..storage.base import DocumentStore, Unit
from ..timeutil import now_instant, to_us
from .audit import AuditLog
from .audit import entry as audit_entry
from .authorization import Authorizer, Interaction

OWNERS = ("Practitioner", "Location", "Patient")
FEED = "ics-feed/"
BY_OWNER = "ics-owner/"
MAX_EVENTS = 2000
BACK = timedelta(days=31)
AHEAD = timedelta(days=366)
SHOWN = ("proposed", "pending", "booked", "arrived", "fulfilled", "checked-in", "cancelled",
         "noshow")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CalendarFeeds:
    def __init__(self, store: DocumentStore, authorizer: Authorizer, audit: AuditLog | None
                 ) -> None:
        self.store = store
        self.authorizer = authorizer
        self.audit = audit

    async def _owned(self, ctx: RequestContext, type_: str, id_: str) -> None:
        if type_ not in OWNERS:
            raise FhirError(400, "not-supported", f"{type_} has no calendar feed")
        rec = await self.store.get(type_, id_)
        if rec is None or rec.deleted or rec.body is None:
            raise FhirError(404, "not-found", f"{type_}/{id_} is not known")
        self.authorizer.check(ctx, Interaction.READ, type_, id_, resource=orjson.loads(rec.body))
        self.authorizer.check(ctx, Interaction.SEARCH, "Appointment")

    async def issue(self, ctx: RequestContext, type_: str, id_: str) -> str:
        """A new feed token for ``type_/id_``; earlier ones stay valid until revoked."""
        await self._owned(ctx, type_, id_)
        token = secrets.token_urlsafe(32)
        owner = f"{type_}/{id_}"
        digest = _digest(token)

        async def run(unit: Unit) -> None:
            await unit.mark_put(FEED + digest, orjson.dumps(
                {"owner": owner, "created": now_instant(), "by": ctx.subject}).decode())
            await unit.mark_put(f"{BY_OWNER}{owner}/{digest}", "")
            if self.audit is not None:
                await self.audit.in_unit(unit, audit_entry(
                    ctx, "calendar-link", entity=owner, action="C",
                    patient=owner if type_ == "Patient" else None))

        await self.store.atomic(run)
        return token

    async def revoke(self, ctx: RequestContext, type_: str, id_: str, token: str | None) -> int:
        """Revoke one of the owner's feeds (``token``), or all of them (None): how many."""
        await self._owned(ctx, type_, id_)
        owner = f"{type_}/{id_}"

        async def run(unit: Unit) -> int:
            if token is not None:
                digests = [_digest(token)]
            else:
                prefix = f"{BY_OWNER}{owner}/"
                digests = [k.removeprefix(prefix) for k, _ in await unit.mark_list(prefix)]
            gone = 0
            for digest in digests:
                kept = await unit.mark_get(FEED + digest)
                if kept is None or orjson.loads(kept).get("owner") != owner:
                    continue
                await unit.mark_delete(FEED + digest)
                await unit.mark_delete(f"{BY_OWNER}{owner}/{digest}")
                gone += 1
            if self.audit is not None:
                await self.audit.in_unit(unit, audit_entry(
                    ctx, "calendar-link", entity=owner, action="D", detail=f"revoked {gone}",
                    patient=owner if type_ == "Patient" else None))
            return gone

        return int(await self.store.atomic(run))

    async def owner(self, token: str) -> str | None:
        """The owner a feed token opens, None when it is unknown or revoked."""
        if not token or len(token) > 100:
            return None

        async def run(unit: Unit) -> str | None:
            return await unit.mark_get(FEED + _digest(token))

        kept = await self.store.atomic(run)
        return str(orjson.loads(kept)["owner"]) if kept else None

    async def contents(self, owner: str, ctx: RequestContext
                       ) -> tuple[list[dict[str, Any]], ZoneInfo, dict[str, str]]:
        """The owner's appointments in the feed's window, the zone to show them in, and the
        names of the practitioners and locations they involve."""
        now = datetime.now(UTC)
        page = await self.store.search(Query("Appointment", (
            Entry("actor", (Cond("val", "=", owner),), unique=True),
            Entry("date", (Cond("hi", ">=", to_us(now - BACK)),
                           Cond("lo", "<=", to_us(now + AHEAD)))),
            Entry("status", (Cond("val", "!=", "entered-in-error"),))),
            sort=(SortKey("date", field="lo"),), count=MAX_EVENTS))
        appointments = [orjson.loads(body) for _id, body in page.rows]
        appointments = [a for a in appointments if a.get("status") in SHOWN]
        if self.audit is not None:
            self.audit.later(audit_entry(ctx, "calendar-feed", entity=owner, action="R",
                                         patient=owner if owner.startswith("Patient/")
                                         else None,
                                         detail=f"{len(appointments)} appointments"))
        names: dict[str, str] = {}
        for appt in appointments:
            for p in appt.get("participant") or []:
                ref = str(((p or {}).get("actor") or {}).get("reference") or "")
                if ref.startswith(("Practitioner/", "Location/")) and ref not in names:
                    names[ref] = await self.name_of(ref)
        return appointments, await self._zone(owner), names

    async def name_of(self, ref: str) -> str:
        type_, _, id_ = ref.partition("/")
        rec = await self.store.get(type_, id_)
        return display_name(orjson.loads(rec.body) if rec and rec.body and not rec.deleted
                            else None)

    async def _zone(self, owner: str) -> ZoneInfo:
        type_, _, id_ = owner.partition("/")
        rec = await self.store.get(type_, id_)
        body = orjson.loads(rec.body) if rec and rec.body and not rec.deleted else {}
        for ext in body.get("extension") or []:
            if isinstance(ext, dict) and ext.get("url") == TIMEZONE_URL:
                try:
                    return ZoneInfo(str(ext.get("valueCode")))
                except (ValueError, KeyError):
                    break
        page = await self.store.search(Query("Schedule", (
            Entry("actor", (Cond("val", "=", owner),), unique=True),), count=5))
        for _id, raw in page.rows:
            found = schedule_zone(orjson.loads(raw))
            if found is not None:
                return found
        return ZoneInfo("UTC")
