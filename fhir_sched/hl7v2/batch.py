"""Several HL7 v2 messages in one body: how a file or an HTTP request carries them.

Engines that deliver over HTTP, and files handed to ``fhir-sched hl7v2 send``, hold one message
or many: MLLP-framed, separated by blank lines, or simply one after another (each new message
starts at an ``MSH`` segment). A body with any start block is read as MLLP (the same tolerant
decoder as the socket); otherwise it is split at each segment that begins with ``MSH`` followed
by its field separator, whatever the line endings, so a blank line is never needed and never
harmful. HL7 batch envelopes (FHS/BHS/BTS/FTS) are unwrapped: the envelope segments are dropped.
"""

from __future__ import annotations

import re

from fhir_sched.hl7v2.mllp import VT, Decoder, Frame, TooLarge

_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")
_LINES = re.compile(rb"\r\n|\n|\r")


def split_messages(body: bytes, max_frame_bytes: int = 1024 * 1024) -> list[bytes]:
    """The messages in ``body``, each with CR segment terminators; empty when there are none.

    An oversize framed message comes back as its first bytes (as the listener reports it), so
    the caller still answers it with an AR rather than dropping it silently.
    """
    if VT in body:
        decoder = Decoder(max_frame_bytes)
        out: list[bytes] = []
        for event in decoder.feed(body):
            if isinstance(event, Frame):
                out.append(event.payload)
            elif isinstance(event, TooLarge):
                out.append(event.head)
        return out
    messages: list[list[bytes]] = []
    for line in _LINES.split(body):
        if not line.strip() or line[:3] in _ENVELOPE:
            continue
        if (line.startswith(b"MSH") and len(line) > 3) or not messages:
            messages.append([])
        messages[-1].append(line)
    return [b"\r".join(segments) + b"\r" for segments in messages]


def is_framed(body: bytes) -> bool:
    return VT in body


def join_acks(acks: list[bytes], framed: bool) -> bytes:
    """Answers in the shape the messages came in: MLLP frames for framed input, otherwise the
    ACKs one after another with a blank line between them (each already ends with CR)."""
    if framed:
        return b"".join(b"\x0b" + ack + b"\x1c\x0d" for ack in acks)
    return b"\n".join(acks)
