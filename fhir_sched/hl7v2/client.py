"""An asyncio MLLP client: one persistent connection, one message out, its ACK back.

Outbound delivery and ``fhir-sched hl7v2 send`` both use it. The reply is read with the same
tolerant decoder as the listener, so a peer that sends FS without CR, or stray bytes between
ACKs, is still understood; every wait is bounded by ``timeout`` so a peer that never answers
costs one timeout, not a stuck worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from types import TracebackType

from fhir_sched.hl7v2.mllp import Decoder, Frame, TooLarge, encode


class MllpError(ConnectionError):
    """The peer could not be reached, closed the connection, or did not answer in time."""


def parse_address(address: str, default_port: int = 2575) -> tuple[str, int]:
    """``host:port`` or ``mllp://host:port`` (also ``mllps://``) to a (host, port) pair."""
    text = address.strip()
    for scheme in ("mllp://", "mllps://", "tcp://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
            break
    text = text.rstrip("/")
    if text.startswith("["):  # [::1]:2575
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"no host in MLLP address {address!r}")
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in MLLP address {address!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"port out of range in MLLP address {address!r}")
    return host, number


class MllpClient:
    """``async with MllpClient(host, port) as c: ack = await c.send(message)``.

    ``send`` writes one framed message and returns the payload of the next frame the peer
    sends (its ACK), without framing bytes.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None,
                 max_frame_bytes: int = 1024 * 1024) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._decoder = Decoder(max_frame_bytes)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: list[bytes] = []

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ssl_context),
                self.timeout)
        except (OSError, TimeoutError) as exc:
            raise MllpError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def __aenter__(self) -> MllpClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def send(self, message: bytes) -> bytes:
        if self._writer is None or self._reader is None:
            await self.connect()
        assert self._writer is not None
        try:
            self._writer.write(encode(message))
            await asyncio.wait_for(self._writer.drain(), self.timeout)
            return await asyncio.wait_for(self._next_frame(), self.timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            await self.close()
            raise MllpError(f"no ACK from {self.host}:{self.port}: {exc or 'timed out'}") from exc

    async def _next_frame(self) -> bytes:
        while not self._pending:
            assert self._reader is not None
            chunk = await self._reader.read(65536)
            if not chunk:
                raise asyncio.IncompleteReadError(b"", None)
            for event in self._decoder.feed(chunk):
                if isinstance(event, Frame):
                    self._pending.append(event.payload)
                elif isinstance(event, TooLarge):
                    self._pending.append(event.head)
        return self._pending.pop(0)
