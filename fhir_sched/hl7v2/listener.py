"""The asyncio MLLP listener: one task per connection, frames answered strictly in order.

Each connection reads, decodes, awaits the handler for one frame, writes its ACK, then takes the
next frame, so every frame gets exactly one ACK in order even when several arrive in one write.
The handler never sees a second frame from a connection before the first is answered, and
reading stops while a frame is in hand, so TCP back-pressure, not memory, holds a fast sender.

Every frame gets an answer, whatever happens behind it: a handler that raises or runs past
``handler_seconds`` is answered AE with table 0357 code 207 (application internal error),
addressed from what ``recover_header`` can read, and the connection goes on. An oversize frame
gets an AR (0357 has no size code; the AR says "frame too large" in its text) and the connection
is kept: the decoder already skipped the rest of that frame.

Connections are independent tasks; past ``max_connections`` a new one is closed at once (and
counted). Every wait on the peer is bounded by ``idle_seconds``, including writing an ACK to a
peer that never reads, so a slow or hostile sender holds one task and at most one frame of
memory, never the event loop. ``stop`` stops accepting, closes idle connections, lets one with a
frame in hand finish it and write its ACK (bounded by ``stop_grace_seconds``), then closes.

The handler's reply is the ACK message; an empty reply means the sender asked for none
(enhanced mode, MSH-15/16 NE) and nothing is written. MLLP release 2 is opt-in
(``release2``): each frame the handler returned for is answered with a commit acknowledgement
block ``<VT><ACK><FS><CR>`` then the ACK message as content; a frame that was not committed
(handler error or timeout, too large) gets a NAK block ``<VT><NAK><FS><CR>`` alone, which asks
for a resend. In either mode a peer's commit ACK/NAK block (its receipt for one of our ACKs) is
recognised and ignored, never answered as a message.

Logs carry counts, peer addresses and at most the control id, never message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fhir_sched.hl7v2.ack import AckCode, build_ack, recover_header
from fhir_sched.hl7v2.mllp import Decoder, Event, Frame, Restarted, Skipped, TooLarge, encode

log = logging.getLogger("fhir_sched.hl7v2.mllp")

_READ_BYTES = 65536
_COMMIT_ACK, _COMMIT_NAK = b"\x06", b"\x15"  # MLLP release 2 commit blocks' content
_COMMIT_BLOCKS = (_COMMIT_ACK, _COMMIT_NAK)


@dataclass(frozen=True, slots=True)
class PeerInfo:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    port: int = 2575
    host: str = "127.0.0.1"
    max_frame_bytes: int = 1024 * 1024
    idle_seconds: float = 300.0
    max_connections: int = 64
    handler_seconds: float = 30.0
    stop_grace_seconds: float = 10.0
    release2: bool = False  # MLLP release 2: commit ACK/NAK blocks (see Listener._wire)
    tls_cert: str = ""
    tls_key: str = ""
    # Several server processes (``--workers``) each listen on the port; the kernel spreads
    # connections among them. Order and idempotency live in the store, so any may take one.
    reuse_port: bool = False

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.tls_cert, self.tls_key or None)
        return ctx


Handler = Callable[[bytes, PeerInfo], Awaitable[bytes]]
# Told of a frame the listener answered itself, without the handler (too large): the first
# bytes it kept, the frame's size and the peer. Must not block: the ACK waits on it.
Refused = Callable[[bytes, int, PeerInfo], None]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


def _control_id() -> str:
    return "R" + datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")


def internal_error_ack(frame: bytes, text: str, code: AckCode = AckCode.AE) -> bytes:
    """An ACK with ERR 207 for a frame the application failed on: AE for a failure of ours the
    same frame would meet again, AR for a transient one (timeout, size) the sender may retry.

    Built from whatever ``recover_header`` reads; should even that fail on some header nobody
    foresaw, the reply is a bare ACK with the standard delimiters, because a frame without an
    answer stalls the sender's queue."""
    try:
        header = recover_header(frame)
        return build_ack(header, code, control_id=_control_id(), timestamp=_now(), text=text,
                         error_code=207)
    except Exception as exc:
        log.error("mllp could not address an ACK from the frame's MSH: %s", type(exc).__name__)
        return build_ack(recover_header(b""), code, control_id=_control_id(), timestamp=_now(),
                         text=text, error_code=207)


@dataclass(slots=True)
class ListenerStats:
    """Counters for health checks and tests; never reset while the listener runs."""

    accepted: int = 0
    refused: int = 0
    frames: int = 0
    acks: int = 0
    too_large: int = 0
    handler_errors: int = 0
    handler_timeouts: int = 0
    idle_closed: int = 0  # sent nothing for idle_seconds
    stalled_closed: int = 0  # read none of its ACKs for idle_seconds
    skipped_bytes: int = 0
    commit_blocks: int = 0  # MLLP release 2 <VT>ACK<FS> / <VT>NAK<FS> blocks, not answered
    naks: int = 0  # release 2 NAK blocks sent


@dataclass(eq=False, slots=True)
class _Connection:
    peer: PeerInfo
    task: asyncio.Task[None]
    busy: bool = False  # a frame is in hand: stop() waits for its ACK
    frames: int = 0
    skipped: int = 0


class Listener:
    def __init__(self, settings: ListenerSettings, handler: Handler,
                 refused: Refused | None = None) -> None:
        self.settings = settings
        self.handler = handler
        self.refused = refused
        self.stats = ListenerStats()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving() and not self._stopping

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        self._stopping = False
        ctx = self.settings.ssl_context()
        # A TLS client that never finishes its handshake is not yet a connection (it is not
        # counted against max_connections), so it gets the idle limit too, not asyncio's 60 s.
        handshake = min(60.0, self.settings.idle_seconds) if ctx is not None else None
        self._server = await asyncio.start_server(
            self._accept,
            self.settings.host,
            self.settings.port,
            ssl=ctx,
            ssl_handshake_timeout=handshake,
            limit=_READ_BYTES,
            reuse_port=self.settings.reuse_port or None,
        )

    async def stop(self) -> None:
        """Stop accepting; close idle connections now, let busy ones write the ACK in hand."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            if not conn.busy:
                conn.task.cancel()
        tasks = [c.task for c in self._connections]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.settings.stop_grace_seconds)
            for task in pending:
                log.warning("mllp stop: a handler did not finish within %.1f s; cancelled",
                            self.settings.stop_grace_seconds)
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = writer.get_extra_info("peername") or ("?", 0)
        peer = PeerInfo(str(name[0]), int(name[1]), writer.get_extra_info("sslcontext") is not None)
        if self._stopping or len(self._connections) >= self.settings.max_connections:
            self.stats.refused += 1
            log.warning("mllp refused %s: %d connections open (max %d)", peer,
                        len(self._connections), self.settings.max_connections)
            writer.transport.abort()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:  # dead peers behind NAT or a VPN are found even when idle is long
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        task = asyncio.current_task()
        assert task is not None
        conn = _Connection(peer, task)
        self._connections.add(conn)
        self.stats.accepted += 1
        decoder = Decoder(self.settings.max_frame_bytes)
        try:
            await self._serve(reader, writer, conn, decoder)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError) as exc:
            log.info("mllp connection %s lost: %s", peer, type(exc).__name__)
        except Exception as exc:  # a bug here must cost one connection, never the listener
            log.error("mllp connection %s failed: %s at\n%s", peer, type(exc).__name__,
                      "".join(traceback.format_tb(exc.__traceback__, limit=-3)))
        except asyncio.CancelledError:
            # stop() closing an idle connection. This task is the server's own callback task
            # and nothing awaits it but stop(), so ending quietly is right (asyncio would
            # otherwise log the cancellation as an error in its stream callback).
            pass
        finally:
            self._connections.discard(conn)
            for event in decoder.flush_skipped():
                self._note(event, conn)
            if decoder.in_frame and decoder.buffered:
                log.info("mllp %s closed with a %d-byte partial frame, not answered", peer,
                         decoder.buffered)
            log.info("mllp connection %s closed after %d frames", peer, conn.frames)
            if self._stopping:
                writer.transport.abort()
            else:
                writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     conn: _Connection, decoder: Decoder) -> None:
        idle = self.settings.idle_seconds
        while not self._stopping:
            try:
                chunk = await asyncio.wait_for(reader.read(_READ_BYTES), idle)
            except TimeoutError:
                self.stats.idle_closed += 1
                log.info("mllp idle timeout %s after %.1f s", conn.peer, idle)
                return
            if not chunk:
                return
            events = decoder.feed(chunk)
            if not events:
                continue
            conn.busy = True
            try:
                for event in events:
                    wire = await self._answer(event, conn)
                    if wire is None:
                        continue
                    writer.write(wire)
                    try:
                        await asyncio.wait_for(writer.drain(), idle)
                    except TimeoutError:
                        self.stats.stalled_closed += 1
                        log.info("mllp %s does not read its ACKs; closed", conn.peer)
                        return
                    self.stats.acks += 1
                    if self._stopping:
                        # The frame in hand is answered; the rest were never taken, so the
                        # sender, having no ACK for them, sends them again.
                        return
            finally:
                conn.busy = False

    async def _answer(self, event: Event, conn: _Connection) -> bytes | None:
        """The bytes to write for one decoder event, framed; None when nothing is owed."""
        if isinstance(event, Frame) and event.payload in _COMMIT_BLOCKS:
            # An MLLP release 2 peer commit-acknowledging our ACK. Not a message: answering it
            # with an AR would start an endless exchange of rejections.
            self.stats.commit_blocks += 1
            log.info("mllp release 2 %s block from %s ignored",
                     "ACK" if event.payload == _COMMIT_ACK else "NAK", conn.peer)
            return None
        if isinstance(event, Frame):
            conn.frames += 1
            self.stats.frames += 1
            ack, committed = await self._handle(event.payload, conn.peer)
            return self._wire(ack, committed)
        if isinstance(event, TooLarge):
            conn.frames += 1
            self.stats.frames += 1
            self.stats.too_large += 1
            log.warning("mllp frame of %d bytes over the %d-byte limit from %s", event.size,
                        self.settings.max_frame_bytes, conn.peer)
            if self.refused is not None:
                try:
                    self.refused(event.head, event.size, conn.peer)
                except Exception as exc:  # the frame is still answered
                    log.error("mllp refused-frame hook failed: %s", type(exc).__name__)
            return self._wire(internal_error_ack(event.head, "frame too large", AckCode.AR),
                              committed=False)
        self._note(event, conn)
        return None

    def _wire(self, ack: bytes, committed: bool) -> bytes | None:
        """Release 1: the ACK message (nothing when the handler wants none, b""). Release 2:
        a commit acknowledgement block once the handler has returned (it commits before it
        returns), then the ACK message as content; a NAK block alone when nothing was
        committed (the handler failed or hung, or the frame was too large), so the sender
        resends it."""
        if not self.settings.release2:
            return encode(ack) if ack else None
        if not committed:
            self.stats.naks += 1
            return encode(_COMMIT_NAK)
        return encode(_COMMIT_ACK) + (encode(ack) if ack else b"")

    def _note(self, event: Event, conn: _Connection) -> None:
        if isinstance(event, Skipped):
            conn.skipped += event.count
            self.stats.skipped_bytes += event.count
            log.info("mllp skipped %d bytes outside frames from %s", event.count, conn.peer)
        elif isinstance(event, Restarted):
            log.info("mllp dropped a %d-byte partial frame from %s (start block inside it)",
                     event.dropped, conn.peer)

    async def _handle(self, payload: bytes, peer: PeerInfo) -> tuple[bytes, bool]:
        """The handler's ACK, or AE 207 when it fails or hangs: never an unanswered frame.

        Only the handler's own timeout, or ``stop`` past its grace period, cancels it; a
        connection with a frame in hand is never cancelled before that. Commit-before-ACK
        makes a cancel safe: the handler either committed, and a resend finds the stored ACK,
        or it did not, and the resend is applied."""
        task = asyncio.ensure_future(self.handler(payload, peer))
        try:
            done, _pending = await asyncio.wait({task}, timeout=self.settings.handler_seconds)
        except Exception as exc:  # a bug here must cost one connection, never the listener
            log.error("mllp connection %s failed: %s at\n%s", peer, type(exc).__name__,
                      "".join(traceback.format_tb(exc.__traceback__, limit=-3)))
        except asyncio.CancelledError:
            # stop() past its grace (or the loop going down): the handler goes too, so nothing
            # of it outlives the store the server closes next.
            task.cancel()
            task.add_done_callback(_swallow)
            raise
        if not done:
            task.cancel()
            task.add_done_callback(_swallow)
            self.stats.handler_timeouts += 1
            log.error("mllp handler for %s (control id %r) took over %.1f s; answered AR",
                      peer, _control_id_of(payload), self.settings.handler_seconds)
            return internal_error_ack(payload, "timed out processing the message",
                                      AckCode.AR), False
        try:
            return task.result(), True
        except Exception as exc:
            self.stats.handler_errors += 1
            # The type and where, not str(exc): an exception text may quote the message.
            where = "".join(traceback.format_tb(exc.__traceback__, limit=-3))
            log.error("mllp handler failed for %s (control id %r): %s at\n%s", peer,
                      _control_id_of(payload), type(exc).__name__, where)
            return internal_error_ack(payload, "application internal error"), False


def _swallow(task: asyncio.Future[bytes]) -> None:
    if not task.cancelled():
        task.exception()


def _control_id_of(payload: bytes) -> str:
    return recover_header(payload).control_id[:64]
