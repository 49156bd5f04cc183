"""The websocket endpoint of Subscriptions (R5 Backport IG 1.1.0, channel ``websocket``):
``{FHIR base}/$subscription-ws``, the ``websocket-url`` that ``$get-ws-binding-token`` gives.

Outside the bearer gate on purpose: a browser cannot set an Authorization header on a
websocket, so the binding token is the credential. It was handed only to a caller allowed to
read that Subscription, is single-use and short-lived, and until one is shown the socket gets
nothing. The protocol, as the IG's websocket workflow draws it:

- the client sends ``bind-with-token <token>`` (``bind-with-token: <token>`` too); the server
  answers with a ``handshake`` notification Bundle for that Subscription, then sends its
  ``event-notification`` and ``heartbeat`` Bundles (``engage/socket_hub.py``). More tokens
  bind more Subscriptions on the same socket (up to FHIR_SCHED_WEBSOCKET_MAX_BINDINGS);
- an unknown, used or expired token, or any other message, gets an OperationOutcome frame,
  then a close with 1008 (policy violation);
- a socket that binds nothing within ``BIND_SECONDS`` is closed; past
  FHIR_SCHED_WEBSOCKET_MAX sockets in this process a new one is closed with 1013. Pings and
  dead peers are uvicorn's (websockets' ping every 20 s).

This module only moves frames: one task reads the client, one drains the socket's bounded
queue (a send that takes longer than ``SEND_SECONDS`` drops the socket), so a slow client
holds up nothing but itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from ..engage.socket_hub import TOO_SLOW, Hub, Socket
from ..service import ws_tokens
from ..storage.base import DocumentStore

log = logging.getLogger("fhir_sched.rest.subscription_socket")

PATH = "/$subscription-ws"
POLICY = 1008
BIND_SECONDS = 30.0
SEND_SECONDS = 10.0
MAX_MESSAGE_CHARS = 1024
_BIND = re.compile(r"bind-with-token:?\s+(\S+)\s*")


def _refusal(text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "security", "diagnostics": text}]}


async def _listen(ws: WebSocket, sock: Socket, hub: Hub, store: DocumentStore) -> None:
    """The client's messages, until it leaves or a refusal ends the socket."""
    while not sock.ended.is_set():
        try:
            message = await asyncio.wait_for(
                ws.receive(), None if sock.bound else BIND_SECONDS)
        except TimeoutError:
            sock.end(POLICY, "no subscription bound", _refusal(
                f"no bind-with-token within {BIND_SECONDS:.0f} seconds"))
            return
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        found = _BIND.fullmatch(text) if isinstance(text, str) and len(
            text) <= MAX_MESSAGE_CHARS else None
        if found is None:
            sock.end(POLICY, "unknown message", _refusal(
                "the messages this server reads are 'bind-with-token <token>', with a token "
                "from Subscription/{id}/$get-ws-binding-token"))
            return
        binding = await ws_tokens.redeem(store, found.group(1))
        if binding is None:
            sock.end(POLICY, "invalid binding token", _refusal(
                "the binding token is unknown, expired or already used; get a new one with "
                "Subscription/{id}/$get-ws-binding-token"))
            return
        refused = await hub.bind(sock, binding.subscription)
        if refused is not None:
            sock.end(POLICY, "cannot bind", _refusal(refused))
            return
        log.info("websocket bound Subscription/%s for %s", binding.subscription,
                 binding.subject)


async def _pump(ws: WebSocket, sock: Socket) -> None:
    """The queued frames, in order; a send that cannot finish in time drops the socket."""
    while True:
        frame = await sock.queue.get()
        try:
            await asyncio.wait_for(ws.send_text(frame), SEND_SECONDS)
        except TimeoutError:
            sock.end(TOO_SLOW, "the client reads too slowly")
            return


def socket_route(hub: Hub, store: DocumentStore, base_path: str) -> WebSocketRoute:
    async def endpoint(ws: WebSocket) -> None:
        sock = hub.open()
        await ws.accept()
        if sock is None:
            await ws.close(TOO_SLOW, "too many websocket connections; try again later")
            return
        tasks = [asyncio.ensure_future(_listen(ws, sock, hub, store)),
                 asyncio.ensure_future(_pump(ws, sock)),
                 asyncio.ensure_future(sock.ended.wait())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            left = not sock.ended.is_set()  # the client went (or its socket failed)
            hub.close(sock)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if left:
            return
        with contextlib.suppress(Exception):
            if sock.final is not None:
                await asyncio.wait_for(ws.send_text(sock.final), SEND_SECONDS)
            await ws.close(sock.code, sock.reason)

    return WebSocketRoute(base_path.rstrip("/") + PATH, endpoint)
