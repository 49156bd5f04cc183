"""The subscription notifier (Subscriptions R5 Backport IG 1.1.0, rest-hook): turns the change
feed into numbered events per Subscription and delivers them, in order, to each endpoint.

- **Events.** The feed is read forward from a cursor; each Appointment or Slot change is
  tested against every active subscription's topic and filters, and the matching events are
  numbered and kept (``service/subscription_events.py``) in ONE unit with the new cursor, so
  numbers have no gaps and no repeats, whatever crashes or how many processes run this.
- **Handshake.** A ``requested`` subscription gets a ``handshake`` notification; a 2xx answer
  makes it ``active`` (events count from then), anything else is retried, and after
  ``max_attempts`` the subscription goes to ``error`` with the reason.
- **Delivery.** An active subscription's unsent events go out oldest first, up to its
  ``max-count`` per notification, with its ``channel.header`` lines; a 2xx answer moves its
  sent mark. Failures are retried with doubling backoff; after ``max_attempts`` it goes to
  ``error``. Its events stay numbered and kept: ``$events`` hands back what was missed, and
  a subscription made ``requested`` again (any update by its owner) is told from its new
  handshake on. A lease per subscription keeps two processes from sending to one endpoint
  at once.
- **Heartbeat.** A subscription with a heartbeat period that has had nothing sent for that
  long gets a ``heartbeat`` notification.
- **Websocket channels** are numbered here like any other, but delivered by each process's
  socket hub (``engage/socket_hub.py``) to the sockets bound there: this notifier only tells
  its hub (``on_progress``) when it has moved past a batch of changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from ..context import RequestContext
from ..ids import unique_id
from ..metrics import SUBSCRIPTION_NOTIFICATIONS
from ..outbound import tls_context
from ..query import Cond, Entry, Query
from ..resources import subscription as profile
from ..scheduling.topics import BY_URL, matches, parse_filter
from ..service import subscription_events as events
from ..service.resources import ResourceService
from ..storage.base import Unit
from ..timeutil import format_instant, now_instant
from .follow import Cursor, before_and_after, body_of, forever

log = logging.getLogger("fhir_sched.engage.subscriptions")

CURSOR = "engage/subscriptions"
CTX = RequestContext.system("subscriptions")
LEASE = "sub-deliver/"
LEASE_SECONDS = 15  # how long a dead process's endpoints wait for another
DEFAULT_TIMEOUT = 10
MAX_BACKOFF_SECONDS = 600.0
FOLLOWED = frozenset({"Appointment", "Slot"})
REFRESH_SECONDS = 5.0


class Notifier:
    def __init__(self, resources: ResourceService, *, base: str, max_attempts: int = 6,
                 retry_seconds: float = 5.0, batch: int = 200, poll_seconds: float = 0.05,
                 on_progress: Callable[[], None] | None = None) -> None:
        self.resources = resources
        self.store = resources.store
        self.base = base.rstrip("/")
        self.max_attempts = max(1, max_attempts)
        self.retry_seconds = retry_seconds
        self.batch = batch
        self.poll_seconds = poll_seconds
        # Called once a batch of changes is behind the cursor, numbered by this process or
        # (when it lost the race) by the one that won it: its events are committed by then.
        self.on_progress = on_progress
        self.worker = unique_id()
        self.cursor = Cursor(self.store, CURSOR)
        self._subs: dict[str, dict[str, Any]] = {}
        self._loaded = 0.0
        self._failures: dict[str, tuple[int, float]] = {}  # id -> (attempts, not before)
        self._last_sent: dict[str, float] = {}
        self._http = httpx.AsyncClient(follow_redirects=False, verify=tls_context())

    async def step(self) -> int:
        collected = await self.collect()
        if collected and self.on_progress is not None:
            self.on_progress()
        return collected + await self.deliver()

    async def run(self) -> None:
        try:
            await forever(self.step, "subscription notification", log, self.poll_seconds,
                          lambda: self.cursor.settle(False, 0))
        finally:
            await self._http.aclose()

            async def release(unit: Unit) -> None:  # hand the endpoints over at once
                await unit.release("subscriptions", self.worker)

            with contextlib.suppress(Exception):
                await self.store.atomic(release)

    # -- subscriptions -------------------------------------------------------------------------
    async def subscriptions(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        now = asyncio.get_running_loop().time()
        if refresh or now - self._loaded > REFRESH_SECONDS:
            subs: dict[str, dict[str, Any]] = {}
            after = None
            while True:  # every one, page by page: none may go untold
                page = await self.store.search(Query("Subscription", (Entry("status", (
                    Cond("val", "!=", "off"),)),), count=1000, after=after))
                subs.update((id_, orjson.loads(body)) for id_, body in page.rows)
                if page.next_after is None:
                    break
                after = page.next_after
            self._subs = subs
            self._loaded = now
        return self._subs

    # -- events ----------------------------------------------------------------------------
    async def collect(self) -> int:
        start, changes = await self.cursor.read(self.batch)
        if not changes:
            return 0
        end = changes[-1].seq
        if any(c.type == "Subscription" for c in changes):
            await self.subscriptions(refresh=True)
        subs = [s for s in (await self.subscriptions()).values() if s.get("status") == "active"]
        found: list[tuple[str, str, str, int]] = []  # (subscription, topic, focus, version)
        for rec in changes:
            if rec.type not in FOLLOWED or not subs:
                continue
            old, new = await before_and_after(self.store, rec)
            focus = new or old
            if focus is None:
                continue
            for sub in subs:
                topic = BY_URL.get(str(sub.get("criteria")))
                if topic is None or not topic.fires(rec.type, old, new):
                    continue
                if matches(rec.type, focus, _filters(sub)):
                    found.append((sub["id"], topic.url, f"{rec.type}/{rec.id}", rec.version))

        if not found and not self.cursor.skip(end):
            return len(changes)

        async def run(unit: Unit) -> bool:
            if not await self.cursor.advance(unit, start, end):
                return False
            for sub_id, topic, focus, version in found:
                await events.append(unit, sub_id, topic, focus, version)
            return True

        self.cursor.settle(await self.store.atomic(run), end)
        return len(changes)

    # -- delivery ----------------------------------------------------------------------------
    async def deliver(self) -> int:
        loop = asyncio.get_running_loop()
        subs = await self.subscriptions()
        work = []
        for sub in subs.values():
            _attempts, not_before = self._failures.get(sub["id"], (0, 0.0))
            if loop.time() < not_before or sub.get("status") not in ("requested", "active") or (
                    profile.channel_type(sub) != "rest-hook"):
                continue  # websocket channels: each process's socket hub
            work.append(self._serve(sub))
        if not work:
            return 0
        return sum(await asyncio.gather(*work))

    async def _lease(self, sub_id: str) -> bool:
        now = datetime.now(UTC)

        async def run(unit: Unit) -> bool:
            return await unit.claim(LEASE + sub_id, "subscriptions", self.worker,
                                    expires=format_instant(now + timedelta(
                                        seconds=LEASE_SECONDS)), now=format_instant(now))

        return bool(await self.store.atomic(run))

    async def _serve(self, sub: dict[str, Any]) -> int:
        """One step for one subscription; 1 when a notification went out."""
        if sub.get("status") == "requested":
            if not await self._lease(sub["id"]):
                return 0
            return await self._handshake(sub)

        async def state(unit: Unit) -> tuple[int, int]:
            return await events.count(unit, sub["id"]), await events.sent(unit, sub["id"])

        total, done = await self.store.atomic(state)
        loop = asyncio.get_running_loop()
        heartbeat = profile.channel_setting(sub, profile.HEARTBEAT_URL)
        last = self._last_sent.setdefault(sub["id"], loop.time())
        due_heartbeat = heartbeat is not None and loop.time() - last >= heartbeat
        if total <= done and not due_heartbeat:
            return 0
        if not await self._lease(sub["id"]):
            return 0
        if total <= done:
            bundle = events.notification(sub, self.base, "heartbeat", total)
            return 1 if await self._post(sub, bundle, "heartbeat") else 0
        most = profile.channel_setting(sub, profile.MAX_COUNT_URL) or profile.MAX_COUNT
        shown = await events.events(self.store, sub["id"], done + 1, min(total, done + most))
        content = profile.content(sub)
        resources: dict[str, dict[str, Any]] = {}
        if content == "full-resource":
            for e in shown:
                type_, _, id_ = e.focus.partition("/")
                rec = await self.store.get_version(type_, id_, e.version)
                if rec is not None and rec.body is not None:
                    resources[f"{e.focus}/{e.version}"] = orjson.loads(rec.body)
        bundle = events.notification(sub, self.base, "event-notification", total, shown,
                                     content, resources)
        if not await self._post(sub, bundle, "event-notification"):
            return 0
        last = shown[-1].number if shown else total

        async def move(unit: Unit) -> None:
            if await events.sent(unit, sub["id"]) < last:
                await events.mark_sent(unit, sub["id"], last)

        await self.store.atomic(move)
        return 1

    async def _handshake(self, sub: dict[str, Any]) -> int:
        async def total(unit: Unit) -> int:
            return await events.count(unit, sub["id"])

        count = await self.store.atomic(total)
        bundle = events.notification({**sub, "status": "requested"}, self.base, "handshake",
                                     count)
        if not await self._post(sub, bundle, "handshake"):
            return 0
        await self._set_status(sub["id"], "active", None)
        return 1

    async def _post(self, sub: dict[str, Any], bundle: dict[str, Any], kind: str) -> bool:
        channel = sub.get("channel") or {}
        headers = {"content-type": "application/fhir+json"}
        for line in channel.get("header") or []:
            name, sep, value = str(line).partition(":")
            if sep and name.strip().lower() not in ("content-type", "content-length", "host"):
                headers[name.strip()] = value.strip()
        timeout = profile.channel_setting(sub, profile.TIMEOUT_URL) or DEFAULT_TIMEOUT
        loop = asyncio.get_running_loop()
        try:
            response = await self._http.post(str(channel.get("endpoint")),
                                             content=orjson.dumps(bundle), headers=headers,
                                             timeout=float(timeout))
            ok, detail = 200 <= response.status_code < 300, f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok, detail = False, type(exc).__name__
        SUBSCRIPTION_NOTIFICATIONS.labels(kind, "ok" if ok else "failed").inc()
        if ok:
            self._failures.pop(sub["id"], None)
            self._last_sent[sub["id"]] = loop.time()
            return True
        attempts = self._failures.get(sub["id"], (0, 0.0))[0] + 1
        if attempts >= self.max_attempts:
            self._failures.pop(sub["id"], None)
            log.warning("subscription %s: %s failed %d times (%s); status error", sub["id"],
                        kind, attempts, detail)
            await self._set_status(sub["id"], "error", f"{kind} failed {attempts} times, "
                                   f"last: {detail} at {now_instant()}")
        else:
            backoff = min(self.retry_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
            self._failures[sub["id"]] = (attempts, loop.time() + backoff)
        return False

    async def _set_status(self, sub_id: str, status: str, error: str | None) -> None:
        async def run(unit: Unit) -> None:
            rec = await unit.get("Subscription", sub_id)
            body = body_of(rec)
            if body is None or body.get("status") == "off":
                return
            new = {**body, "status": status}
            if error:
                new["error"] = error
            else:
                new.pop("error", None)
            await self.resources.put_in_unit(unit, CTX, "Subscription", sub_id, new,
                                             check_refs=False, authorize=False)
            if status == "active":  # events count from activation: nothing owed before it
                await events.mark_sent(unit, sub_id, await events.count(unit, sub_id))

        await self.resources.atomic(run)
        await self.subscriptions(refresh=True)


def _filters(sub: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for text in profile.filters(sub):
        type_, pairs = parse_filter(text)
        out.setdefault(type_, []).extend(pairs)
    return out
