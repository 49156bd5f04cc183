"""MLLP framing as a pure, incremental decoder: chunks of bytes in, frames and events out.

Tolerant the way real feeds need (research section 3): bytes before a start block are skipped
and counted, never kept; FS without CR ends a frame; a stray FS, CR or LF outside a frame is
ignored. A VT inside an unterminated frame restarts the frame (the partial one is reported as
dropped): a sender that lost its connection state starts over with VT, and keeping the partial
bytes would glue two messages into one. Memory is bounded by ``max_frame_bytes``: an oversize
frame is reported once and its remaining bytes are discarded until its end block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VT = 0x0B
FS = 0x1C
CR = 0x0D

DEFAULT_MAX_FRAME_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete message, without its framing bytes."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Skipped:
    """Bytes outside any frame were discarded (garbage before a start block, stray end blocks)."""

    count: int


@dataclass(frozen=True, slots=True)
class TooLarge:
    """A frame passed the size limit; reported once, when its end block arrives (or at restart).

    ``head`` keeps the first bytes so an AR can still echo MSH-10 when the MSH is there."""

    size: int
    head: bytes


@dataclass(frozen=True, slots=True)
class Restarted:
    """A start block arrived inside an unterminated frame; the partial frame was dropped."""

    dropped: int


Event = Frame | Skipped | TooLarge | Restarted

_HEAD_BYTES = 4096
_SILENT = bytes([CR, 0x0A, FS, 0x00])


@dataclass(slots=True)
class Decoder:
    """Feed any chunks; get back, in order, the frames and events they complete."""

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    _buf: bytearray = field(default_factory=bytearray)
    _in_frame: bool = False
    _oversize: int = 0  # bytes seen in the current frame once it passed the limit
    _skipped: int = 0  # garbage bytes counted but not yet reported

    @property
    def buffered(self) -> int:
        """Bytes held now: never more than ``max_frame_bytes``."""
        return len(self._buf)

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        i, n = 0, len(chunk)
        while i < n:
            if not self._in_frame:
                start = chunk.find(VT, i)
                if start < 0:
                    self._skipped += self._garbage(chunk, i, n)
                    break
                self._skipped += self._garbage(chunk, i, start)
                self._flush_skipped(events)
                self._in_frame = True
                i = start + 1
                continue
            end = chunk.find(FS, i)
            restart = chunk.find(VT, i, end if end >= 0 else n)
            if restart >= 0:
                self._take(chunk[i:restart])
                events.append(Restarted(self._size()))
                self._reset_frame()
                i = restart + 1
                continue
            if end < 0:
                self._take(chunk[i:])
                break
            self._take(chunk[i:end])
            events.append(self._finish())
            i = end + 1
            if i < n and chunk[i] == CR:
                i += 1
        return events

    def _garbage(self, chunk: bytes, lo: int, hi: int) -> int:
        """Bytes between frames: whitespace (CR, LF) and NULs are silent, the rest is counted."""
        return len(chunk[lo:hi].translate(None, _SILENT)) if hi > lo else 0

    def _flush_skipped(self, events: list[Event]) -> None:
        if self._skipped:
            events.append(Skipped(self._skipped))
            self._skipped = 0

    def flush_skipped(self) -> list[Event]:
        """The garbage count so far (e.g. at end of stream), reported once."""
        events: list[Event] = []
        self._flush_skipped(events)
        return events

    def _take(self, data: bytes) -> None:
        if self._oversize:
            self._oversize += len(data)
            return
        if len(self._buf) + len(data) > self.max_frame_bytes:
            self._oversize = len(self._buf) + len(data)
            keep = min(_HEAD_BYTES, self.max_frame_bytes)
            del self._buf[keep:]
            head = data[: max(0, keep - len(self._buf))]
            self._buf += head
            return
        self._buf += data

    def _size(self) -> int:
        return self._oversize or len(self._buf)

    def _finish(self) -> Event:
        event: Event
        if self._oversize:
            event = TooLarge(self._oversize, bytes(self._buf))
        else:
            event = Frame(bytes(self._buf))
        self._reset_frame()
        self._in_frame = False
        return event

    def _reset_frame(self) -> None:
        self._buf.clear()
        self._oversize = 0


def encode(payload: bytes) -> bytes:
    """Wrap one message for the wire: VT, the message, FS, CR."""
    return b"\x0b" + payload + b"\x1c\x0d"
