"""Websocket binding tokens (``$get-ws-binding-token``, Subscriptions R5 Backport IG 1.1.0):
the one credential a websocket client shows, since a browser cannot set an Authorization
header on a websocket.

A token is 256 random bits, good for ONE ``bind-with-token`` within ``TTL_SECONDS``. It is
kept in the store, so a token one process issued binds on whichever process the socket
reached, and only as its SHA-256: a copy of the store does not hold usable tokens. The key
starts with the expiry, so the expired ones sort first and each issue sweeps a few of them
away without a job of its own. Redeeming deletes it in the same unit that reads it, so of two
binds racing with one token (two processes included) exactly one gets it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from ..storage.base import DocumentStore, Unit
from ..timeutil import format_instant

PREFIX = "ws-token/"
TTL_SECONDS = 60
SWEEP = 20  # expired tokens removed per issue, at most


@dataclass(frozen=True, slots=True)
class Binding:
    """What a redeemed token binds: one Subscription, for the caller who asked for it."""

    subscription: str
    subject: str


def _key(expires: int, token: str) -> str:
    return f"{PREFIX}{expires:012d}/{hashlib.sha256(token.encode()).hexdigest()}"


async def issue(store: DocumentStore, subscription: str, subject: str,
                ttl: int = TTL_SECONDS) -> tuple[str, str]:
    """A new token for ``subscription``: (token, its expiry as an instant)."""
    now = int(time.time())
    expires = now + ttl
    # The expiry leads the token, so redeeming finds its key without a scan; it is no secret
    # (the answer says it anyway), the 256 random bits after it are.
    token = f"{expires}.{secrets.token_urlsafe(32)}"

    async def run(unit: Unit) -> None:
        for key, _ in await unit.mark_list(PREFIX, limit=SWEEP):
            if int(key[len(PREFIX):].split("/", 1)[0]) >= now:
                break
            await unit.mark_delete(key)
        await unit.mark_put(_key(expires, token), orjson.dumps(
            {"sub": subscription, "who": subject}).decode())

    await store.atomic(run)
    return token, format_instant(datetime.fromtimestamp(expires, UTC))


async def redeem(store: DocumentStore, token: str) -> Binding | None:
    """The binding ``token`` grants, used up; None when it is unknown, used or expired."""
    head, dot, rest = token.partition(".")
    if not dot or not head.isdigit() or not rest or len(token) > 200:
        return None
    expires = int(head)
    if expires < time.time():
        return None
    key = _key(expires, token)

    async def run(unit: Unit) -> str | None:
        kept = await unit.mark_get(key)
        if kept is not None:
            await unit.mark_delete(key)
        return kept

    kept = await store.atomic(run)
    if kept is None:
        return None
    value = orjson.loads(kept)
    return Binding(str(value["sub"]), str(value.get("who") or ""))
