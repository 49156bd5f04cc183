"""Helpers for the MLLP transport, peer and fuzz tests: a real parse-and-ACK handler, message
builders, and a reader that collects ACK frames from a socket."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fhir_sched.hl7v2 import er7
from fhir_sched.hl7v2.ack import AckCode, build_ack, reject_unparseable
from fhir_sched.hl7v2.listener import Listener, ListenerSettings, PeerInfo
from fhir_sched.hl7v2.mllp import Decoder, Frame

_ids = itertools.count(1)


def siu(control_id: str, *, patient: str = "P1", note: str = "Élysées 東京",
        charset: str = "UNICODE UTF-8") -> bytes:
    """A small S12 with multi-byte UTF-8 in it (so splits can land inside a character)."""
    text = (
        f"MSH|^~\\&|EHR|CLINIC|SCHED|HOSP|20240101120000||SIU^S12^SIU_S12|{control_id}|P|2.5.1"
        f"|||||FR|{charset}\r"
        f"SCH|A{control_id}|F{control_id}||||||||||^^60^20240102090000+0100\r"
        f"NTE|1||{note}\r"
        f"PID|1||{patient}^^^MRN||Dupont^Zoé\r"
        "RGS|1\r"
        "AIL|1||ROOM1\r"
    )
    return text.encode("utf-8")


@dataclass
class Recorder:
    """A handler that parses with er7 and answers AA echoing MSH-10, AR when unreadable; it
    records every payload it was given, in order."""

    payloads: list[bytes] = field(default_factory=list)

    async def __call__(self, frame: bytes, peer: PeerInfo) -> bytes:
        self.payloads.append(frame)
        return parse_and_ack(frame)


def parse_and_ack(frame: bytes) -> bytes:
    control_id = f"A{next(_ids)}"
    try:
        msg = er7.parse(frame)
    except er7.Er7Error as exc:
        if exc.header is not None:
            return build_ack(exc.header, AckCode.AR, control_id=control_id,
                             timestamp="20240101120000", text=str(exc), error_code=exc.code)
        return reject_unparseable(frame, control_id=control_id, timestamp="20240101120000",
                                  text=str(exc), error_code=exc.code)
    return build_ack(msg.header, AckCode.AA, control_id=control_id, timestamp="20240101120000")


def msa(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK, read by splitting on its own field separator."""
    fs = ack[3:4] if ack.startswith(b"MSH") else b"|"
    for seg in ack.replace(b"\n", b"\r").split(b"\r"):
        if seg.startswith(b"MSA"):
            parts = seg.split(fs)
            code = parts[1].decode("latin-1") if len(parts) > 1 else ""
            cid = parts[2].decode("utf-8", "replace") if len(parts) > 2 else ""
            return code, cid
    raise AssertionError(f"no MSA segment in {ack[:200]!r}")


def err_code(ack: bytes) -> str:
    """ERR-3.1 (v2.5+) of an ACK, "" when there is no ERR."""
    for seg in ack.split(b"\r"):
        if seg.startswith(b"ERR"):
            parts = seg.split(b"|")
            return parts[3].split(b"^")[0].decode() if len(parts) > 3 else ""
    return ""


async def read_frames(reader: asyncio.StreamReader, count: int, timeout: float = 10.0,
                      decoder: Decoder | None = None) -> list[bytes]:
    decoder = decoder or Decoder()
    out: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(out) < count:
        chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - loop.time()))
        assert chunk, f"connection closed after {len(out)} of {count} frames"
        out += [e.payload for e in decoder.feed(chunk) if isinstance(e, Frame)]
    assert len(out) == count, f"{len(out)} frames where {count} were expected"
    return out


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the peer closes (EOF or reset) within ``timeout`` without sending anything."""
    try:
        data = await asyncio.wait_for(reader.read(65536), timeout)
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return data == b""


@asynccontextmanager
async def running(settings: ListenerSettings | None = None,
                  handler: object = None) -> AsyncIterator[Listener]:
    lst = Listener(settings or ListenerSettings(port=0), handler or Recorder())  # type: ignore[arg-type]
    await lst.start()
    try:
        yield lst
    finally:
        await lst.stop()
