"""The asyncio MLLP listener: one task per connection, frames answered strictly in order.

Each connection reads, decodes, awaits the handler for one frame, writes its ACK, then takes the
next frame, so every frame gets exactly one ACK in order even when several arrive in one write.
Connections are independent tasks; past ``max_connections`` a new one is closed at once. An
oversize frame gets an AR (table 0357 code 207 is not right for size; 100-range has none, so the
AR says "frame too large" in its text) and the connection is kept: the decoder already skipped
the rest of that frame. Logs carry counts and peer addresses, never message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fhir_sched.hl7v2.ack import reject_unparseable
from fhir_sched.hl7v2.mllp import Decoder, Frame, Restarted, Skipped, TooLarge, encode

log = logging.getLogger("fhir_sched.hl7v2.mllp")


@dataclass(frozen=True, slots=True)
class PeerInfo:
    host: str
    port: int
    tls: bool


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    port: int = 2575
    host: str = "127.0.0.1"
    max_frame_bytes: int = 1024 * 1024
    idle_seconds: float = 300.0
    max_connections: int = 64
    tls_cert: str = ""
    tls_key: str = ""

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.tls_cert, self.tls_key or None)
        return ctx


Handler = Callable[[bytes, PeerInfo], Awaitable[bytes]]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


class Listener:
    def __init__(self, settings: ListenerSettings, handler: Handler) -> None:
        self.settings = settings
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._acks = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept,
            self.settings.host,
            self.settings.port,
            ssl=self.settings.ssl_context(),
        )

    async def stop(self) -> None:
        """Stop accepting, let each connection finish the frame in hand, then close."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = writer.get_extra_info("peername") or ("?", 0)
        peer = PeerInfo(str(name[0]), int(name[1]), writer.get_extra_info("sslcontext") is not None)
        if len(self._tasks) >= self.settings.max_connections:
            log.warning("mllp refused %s:%s: %d connections open", peer.host, peer.port,
                        len(self._tasks))
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: PeerInfo
    ) -> None:
        decoder = Decoder(self.settings.max_frame_bytes)
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), self.settings.idle_seconds)
            except TimeoutError:
                log.info("mllp idle timeout %s:%s", peer.host, peer.port)
                return
            if not chunk:
                return
            for event in decoder.feed(chunk):
                await self._answer(event, writer, peer)

    async def _answer(self, event: object, writer: asyncio.StreamWriter, peer: PeerInfo) -> None:
        if isinstance(event, Frame):
            ack = await asyncio.shield(self.handler(event.payload, peer))
        elif isinstance(event, TooLarge):
            log.warning("mllp frame of %d bytes over the limit from %s:%s", event.size,
                        peer.host, peer.port)
            ack = reject_unparseable(event.head, control_id=f"R{_now()}", timestamp=_now(),
                                     text="frame too large", error_code=207)
        elif isinstance(event, Skipped):
            log.info("mllp skipped %d bytes outside frames from %s:%s", event.count,
                     peer.host, peer.port)
            return
        elif isinstance(event, Restarted):
            log.info("mllp dropped %d-byte partial frame from %s:%s", event.dropped,
                     peer.host, peer.port)
            return
        else:
            return
        writer.write(encode(ack))
        await writer.drain()
        self._acks += 1
