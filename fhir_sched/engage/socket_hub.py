"""Websocket delivery of Subscription notifications (Subscriptions R5 Backport IG 1.1.0,
channel ``websocket``): one hub per process, for the sockets that process accepted.

**Why the hub reads the numbered events instead of following the feed itself.** The notifier
(``engage/subscriptions.py``) runs in every process and numbers each subscription's events
exactly once across all of them, in the unit that moves the shared feed cursor; which process
wins a batch is chance. A socket, though, is bound to the ONE process that accepted it. So each
process's hub reads the numbered events (``service/subscription_events.py``) of the
subscriptions bound on its own sockets, onward from the last number each binding was sent:
every process delivers every event to its own sockets, with the numbers ``$status`` and
``$events`` report. A binding starts at the subscription's count when it binds (told in the
handshake's ``events-since-subscription-start``); a client that sees a jump in
``event-number``, or comes back after a disconnection, fetches what it missed with ``$events``,
the IG's recovery path.

**When it looks.** The local notifier wakes the hub each time it has moved past a batch of
changes (``Notifier.on_progress``); by then that batch's events are committed, whichever
process numbered them (a process that lost the race learns of it only after the winner's
commit). A tick every ``TICK_SECONDS`` sends heartbeats and catches anything else; with no
socket bound the hub reads nothing at all.

**Slow clients.** The hub never awaits a socket: each socket has a bounded queue of frames
that its own sender drains (``rest/subscription_socket.py``), and a socket whose queue is full
is dropped (close 1013), so one stalled reader can hold up neither the hub, the notifier nor
the event loop. Its client reconnects and catches up with ``$events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..resources import subscription as profile
from ..service import subscription_events as events
from ..storage.base import DocumentStore, Unit
from ..storage.errors import StoreUnavailable
from .follow import body_of

log = logging.getLogger("fhir_sched.engage.socket_hub")

TICK_SECONDS = 1.0
REFRESH_SECONDS = 5.0  # how often bound subscriptions are re-read (turned off, changed)
QUEUE_FRAMES = 32
TOO_SLOW = 1013  # "try again later": the client did not keep up
GOING_AWAY = 1001
NORMAL = 1000


@dataclass(slots=True)
class Bound:
    """One subscription bound on one socket."""

    sub: dict[str, Any]
    last: int  # the last event number this socket has been sent (or was told of)
    sent_at: float  # loop time of the last notification, for heartbeats


@dataclass(eq=False, slots=True)
class Socket:
    """What the hub knows of one connection; its door (``rest/``) sends the queued frames."""

    queue: asyncio.Queue[str]
    bound: dict[str, Bound] = field(default_factory=dict)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    code: int = NORMAL
    reason: str = ""
    final: str | None = None  # an error frame to send before closing

    def offer(self, frame: dict[str, Any]) -> bool:
        """Queue a frame without waiting; a full queue ends the socket."""
        if self.ended.is_set():
            return False
        try:
            self.queue.put_nowait(orjson.dumps(frame).decode())
        except asyncio.QueueFull:
            self.end(TOO_SLOW, "the client reads too slowly; reconnect and fetch what was "
                     "missed with $events")
            return False
        return True

    def end(self, code: int, reason: str, final: dict[str, Any] | None = None) -> None:
        if self.ended.is_set():
            return
        self.code, self.reason = code, reason[:120]  # a close reason is at most 123 bytes
        self.final = orjson.dumps(final).decode() if final is not None else None
        self.ended.set()


class Hub:
    def __init__(self, store: DocumentStore, *, base: str, max_sockets: int = 1000,
                 max_bindings: int = 20, queue_frames: int = QUEUE_FRAMES) -> None:
        self.store = store
        self.base = base.rstrip("/")
        self.max_sockets = max(0, max_sockets)
        self.max_bindings = max(1, max_bindings)
        self.queue_frames = max(2, queue_frames)
        self.sockets: set[Socket] = set()
        self._wake: asyncio.Event | None = None
        self._refreshed = 0.0

    # -- sockets (called by the door) ---------------------------------------------------------
    def open(self) -> Socket | None:
        """A new socket, or None when this process already has ``max_sockets``."""
        if len(self.sockets) >= self.max_sockets:
            return None
        sock = Socket(asyncio.Queue(self.queue_frames))
        self.sockets.add(sock)
        return sock

    def close(self, sock: Socket) -> None:
        self.sockets.discard(sock)
        sock.end(NORMAL, "")

    async def bind(self, sock: Socket, sub_id: str) -> str | None:
        """Bind ``sub_id`` on ``sock`` and queue its handshake; why not, when it cannot be.
        Binding it again (a fresh token before the last expires) sends a new handshake and
        keeps the place, so nothing is skipped."""
        sub = body_of(await self.store.get("Subscription", sub_id))
        if sub is None or profile.channel_type(sub) != "websocket":
            return f"Subscription/{sub_id} is not a websocket subscription"
        if sub.get("status") != "active":
            return f"Subscription/{sub_id} is {sub.get('status')}"
        if sub_id not in sock.bound and len(sock.bound) >= self.max_bindings:
            return f"at most {self.max_bindings} subscriptions may be bound on one socket"
        total = await events.counted(self.store, sub_id)
        now = asyncio.get_running_loop().time()
        had = sock.bound.get(sub_id)
        sock.bound[sub_id] = Bound(sub, had.last if had else total, now)
        sock.offer(events.notification(sub, self.base, "handshake", total))
        self.wake()
        return None

    def wake(self) -> None:
        """Look now: the notifier has moved past a batch of changes (or a socket bound)."""
        if self._wake is not None:
            self._wake.set()

    # -- the loop (a background job of the process) -------------------------------------------
    async def run(self) -> None:
        self._wake = asyncio.Event()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
                self._wake.clear()
                if not any(s.bound for s in self.sockets):
                    continue
                try:
                    await self.step()
                except StoreUnavailable:
                    await asyncio.sleep(1.0)
                except Exception as exc:
                    log.error("websocket delivery failed: %s", type(exc).__name__)
                    await asyncio.sleep(1.0)
        finally:
            for sock in list(self.sockets):
                sock.end(GOING_AWAY, "the server is shutting down")

    async def step(self) -> None:
        """One look: new events to every binding that is behind, heartbeats to the quiet."""
        loop = asyncio.get_running_loop()
        ids = sorted({i for s in self.sockets for i in s.bound})
        if loop.time() - self._refreshed >= REFRESH_SECONDS:
            await self._refresh(ids)
            ids = sorted({i for s in self.sockets for i in s.bound})

        async def read(unit: Unit) -> dict[str, int]:
            return {i: await events.count(unit, i) for i in ids}

        counts = await self.store.atomic(read)
        for sub_id in ids:
            await self._deliver(sub_id, counts[sub_id])
        now = loop.time()
        for sock in list(self.sockets):
            for sub_id, b in sock.bound.items():
                beat = profile.channel_setting(b.sub, profile.HEARTBEAT_URL)
                if beat is not None and now - b.sent_at >= beat:
                    b.sent_at = now
                    sock.offer(events.notification(b.sub, self.base, "heartbeat",
                                                   counts.get(sub_id, b.last)))

    async def _refresh(self, ids: list[str]) -> None:
        """Re-read the bound subscriptions: one turned off, deleted or moved to another
        channel is unbound (a socket left with none is closed); a changed one is sent as
        it now is (its content, heartbeat)."""
        self._refreshed = asyncio.get_running_loop().time()

        async def read(unit: Unit) -> dict[str, dict[str, Any] | None]:
            return {i: body_of(await unit.get("Subscription", i, decides=False)) for i in ids}

        subs = await self.store.atomic(read)
        for sock in list(self.sockets):
            for sub_id in list(sock.bound):
                sub = subs.get(sub_id)
                if sub is None or sub.get("status") != "active" or (
                        profile.channel_type(sub) != "websocket"):
                    del sock.bound[sub_id]
                    if not sock.bound:
                        sock.end(NORMAL, f"Subscription/{sub_id} is no longer active")
                else:
                    sock.bound[sub_id].sub = sub

    async def _deliver(self, sub_id: str, total: int) -> None:
        behind = [(s, s.bound[sub_id]) for s in self.sockets
                  if sub_id in s.bound and s.bound[sub_id].last < total]
        if not behind:
            return
        since = min(b.last for _, b in behind) + 1
        until = min(total, since + events.MAX_PER_QUERY - 1)
        found = await events.events(self.store, sub_id, since, until)
        if until < total:
            self.wake()  # more than one read's worth behind: the rest on the next look
        resources: dict[str, dict[str, Any]] = {}
        if any(profile.content(b.sub) == "full-resource" for _, b in behind):
            for e in found:
                type_, _, id_ = e.focus.partition("/")
                rec = await self.store.get_version(type_, id_, e.version)
                if rec is not None and rec.body is not None:
                    resources[f"{e.focus}/{e.version}"] = orjson.loads(rec.body)
        now = asyncio.get_running_loop().time()
        for sock, b in behind:
            mine = [e for e in found if e.number > b.last]
            most = profile.channel_setting(b.sub, profile.MAX_COUNT_URL) or profile.MAX_COUNT
            content = profile.content(b.sub)
            for start in range(0, len(mine), most):
                shown = mine[start:start + most]
                if not sock.offer(events.notification(b.sub, self.base, "event-notification",
                                                      total, shown, content, resources)):
                    break
            # Numbers no longer kept (past KEEP) are skipped: the client sees the jump.
            b.last, b.sent_at = until, now

