"""The ways a notice reaches someone: email over SMTP, a signed webhook, SMS through an HTTP
gateway. Each answers one attempt with ``Sent``: delivered, or failed and whether trying again
can help (a full mailbox, a 503) or not (no such address, a 400).

Every message carries the notice's own id (the email's Message-ID, the webhook's
``webhook-id``, the SMS body's ``id``), the same on every attempt: when the server stops
between sending and recording, the next attempt repeats that id, and a receiver that keeps
ids sees one message (see ``delivery.py``).
"""

from __future__ import annotations

import asyncio
import base64
import email.policy
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol

import aiosmtplib
import httpx
import orjson

from ..outbound import tls_context

TIMEOUT_SECONDS = 10.0
# CRLF, and headers folded only past RFC 5322's hard limit: Python folds a long Subject right
# after the colon, which readers then show with a leading space.
_POLICY = email.policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True, slots=True)
class Notice:
    id: str  # the CommunicationRequest id: stable across attempts
    channel: str
    to: str  # an email address, a phone number; "" for the webhook
    subject: str
    text: str
    ics: bytes | None = None  # a calendar invitation (email)
    ics_method: str = "REQUEST"
    data: dict[str, Any] = field(default_factory=dict)  # what the webhook receives


@dataclass(frozen=True, slots=True)
class Sent:
    ok: bool
    retry: bool = False  # a failure worth another attempt
    detail: str = ""


class Channel(Protocol):
    name: str

    async def send(self, notice: Notice) -> Sent: ...

    async def close(self) -> None: ...


def _http_outcome(status: int) -> Sent:
    if 200 <= status < 300:
        return Sent(True, detail=f"HTTP {status}")
    # 408 and 429 say "later"; any other 4xx says the request itself is wrong
    return Sent(False, retry=status >= 500 or status in (408, 429), detail=f"HTTP {status}")


class Email:
    """SMTP with a few kept connections (a connection per message would cost a TLS handshake
    and a login each): each message takes one, and a broken one is dropped and made anew."""

    name = "email"

    def __init__(self, host: str, port: int, sender: str, *, security: str = "auto",
                 user: str = "", password: str = "", connections: int = 4,
                 domain: str = "fhir-sched.invalid", timeout: float = TIMEOUT_SECONDS) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.security, self.user, self.password = security, user, password
        self.domain = domain
        self.timeout = timeout
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        self._slots = asyncio.Semaphore(max(1, connections))

    def message(self, notice: Notice) -> EmailMessage:
        msg = EmailMessage(policy=_POLICY)
        msg["From"] = self.sender
        msg["To"] = notice.to
        msg["Subject"] = notice.subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = f"<{notice.id}@{self.domain}>"
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        msg.set_content(notice.text)
        if notice.ics is not None:
            msg.add_attachment(notice.ics, maintype="text", subtype="calendar",
                               filename="invite.ics", params={"method": notice.ics_method})
        return msg

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout,
            use_tls=self.security == "tls",
            start_tls=None if self.security == "auto" else self.security == "starttls",
            validate_certs=True, tls_context=tls_context() if self.security != "none" else None)
        await client.connect()
        if self.user:
            await client.login(self.user, self.password)
        return client

    async def send(self, notice: Notice) -> Sent:
        async with self._slots:
            client = self._idle.get_nowait() if not self._idle.empty() else None
            try:
                if client is None or not client.is_connected:
                    client = await self._connect()
                _refused, response = await client.send_message(self.message(notice))
            except aiosmtplib.SMTPRecipientsRefused as exc:
                await _drop(client)
                client = None
                return Sent(False, retry=_temporary(exc.recipients), detail="recipient refused")
            except aiosmtplib.SMTPResponseException as exc:
                await _drop(client)
                client = None
                return Sent(False, retry=exc.code < 500, detail=f"SMTP {exc.code}")
            except (aiosmtplib.SMTPException, OSError) as exc:
                await _drop(client)
                client = None
                return Sent(False, retry=True, detail=type(exc).__name__)
            finally:
                if client is not None:
                    self._idle.put_nowait(client)
            return Sent(True, detail=response[:80])

    async def close(self) -> None:
        while not self._idle.empty():
            await _drop(self._idle.get_nowait())


def _temporary(refused: list[aiosmtplib.SMTPRecipientRefused]) -> bool:
    return all(r.code < 500 for r in refused)


async def _drop(client: aiosmtplib.SMTP | None) -> None:
    if client is not None:
        try:
            if client.is_connected:
                await asyncio.wait_for(client.quit(), 2.0)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()


def webhook_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks v1: base64 HMAC-SHA256 of ``id.timestamp.body``; a ``whsec_`` secret
    is base64 (as the spec's libraries make them), any other is used as its UTF-8 bytes."""
    key = (base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_")
           else secret.encode())
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


class Webhook:
    name = "webhook"

    def __init__(self, url: str, secret: str, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url, self.secret = url, secret
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                       verify=tls_context())

    async def send(self, notice: Notice) -> Sent:
        body = orjson.dumps({"id": notice.id, "type": f"notice.{notice.data.get('kind')}",
                             "subject": notice.subject, "text": notice.text, **notice.data})
        stamp = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": notice.id,
                   "webhook-timestamp": str(stamp)}
        if self.secret:
            headers["webhook-signature"] = webhook_signature(self.secret, notice.id, stamp,
                                                             body)
        try:
            response = await self._http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Sent(False, retry=True, detail=type(exc).__name__)
        return _http_outcome(response.status_code)

    async def close(self) -> None:
        await self._http.aclose()


class Sms:
    name = "sms"

    def __init__(self, url: str, token: str, sender: str,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.url, self.token, self.sender = url, token, sender
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                       verify=tls_context())

    async def send(self, notice: Notice) -> Sent:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = await self._http.post(self.url, headers=headers, json={
                "id": notice.id, "to": notice.to, "from": self.sender, "text": notice.text})
        except httpx.HTTPError as exc:
            return Sent(False, retry=True, detail=type(exc).__name__)
        return _http_outcome(response.status_code)

    async def close(self) -> None:
        await self._http.aclose()
