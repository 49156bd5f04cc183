"""Signed links in messages: the patient confirms, cancels or stops reminders by opening one,
with no login (a reminder's reader has no SMART session).

A link names one appointment, one patient and its expiry, signed with the server's key
(HMAC-SHA256, truncated to 128 bits: enough against forgery, short enough for an SMS). It
grants exactly that: answering for that patient about that appointment, until it ends. Opening
it (GET) only shows the choices; acting needs a POST from that page, so the link checkers of
mail systems, which open every link, never cancel a visit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from ..storage.base import DocumentStore, Unit

SECRET_MARK = "engage/link-secret"


@dataclass(frozen=True, slots=True)
class Link:
    appointment: str  # id
    patient: str  # id
    expires: int  # epoch seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, key: bytes) -> None:
        self.key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()[:16]

    def token(self, appointment: str, patient: str, expires: datetime) -> str:
        payload = f"{appointment}|{patient}|{int(expires.timestamp())}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str, now: datetime) -> Link | None:
        """The link a token names, when its signature holds and it has not expired."""
        head, _, mac = token.partition(".")
        try:
            payload = _unb64(head)
        except (ValueError, TypeError):
            return None
        # Compared as the text the server writes, not as decoded bytes: base64 leaves spare
        # bits in a last character, and a link altered there would otherwise still open.
        if not hmac.compare_digest(_b64(self._mac(payload)), mac) or _b64(payload) != head:
            return None
        try:
            appointment, patient, expires = payload.decode().split("|")
            link = Link(appointment, patient, int(expires))
        except ValueError:
            return None
        return link if link.expires > now.timestamp() else None


async def load_key(store: DocumentStore, configured: str) -> bytes:
    """The configured key, else the one kept in the store (made by the first process to ask),
    so links signed by one process open on every other."""
    if configured:
        return configured.encode()

    async def run(unit: Unit) -> str:
        kept = await unit.mark_get(SECRET_MARK)
        if kept is None:
            kept = secrets.token_urlsafe(32)
            await unit.mark_put(SECRET_MARK, kept)
        return kept

    return (await store.atomic(run)).encode()
