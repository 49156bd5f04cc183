"""Fuzz: mutated real SIU messages (byte flips, truncations, inserted VT/FS/CR/LF, random MSH-18
charsets, huge fields, broken delimiters, garbage between frames) through one Listener over a
few socket connections, in two rounds of over 5,000 frames each.

The oracle is independent of the decoder: a frame is a VT followed by bytes that are neither VT
nor FS, then FS (a later VT restarts it; an FS outside a frame is nothing). Every such frame must
get exactly one ACK, in order; when our parser can read its MSH-10 the ACK is AA and MSA-2 is
that MSH-10, otherwise it is AR or AE. After both rounds the listener still answers a clean
message, and the process did not grow by more than a generous bound between the rounds.
"""

from __future__ import annotations

import asyncio
import gc
import random
import re
from dataclasses import dataclass
from pathlib import Path

from fhir_sched.hl7v2 import er7
from fhir_sched.hl7v2.ack import codec_for
from fhir_sched.hl7v2.listener import Listener, ListenerSettings, PeerInfo
from fhir_sched.hl7v2.mllp import Decoder, Frame, encode
from tests.support.mllp import parse_and_ack, read_frames, running, siu

FIXTURES = Path(__file__).parent / "fixtures"
SEED = 20261202
MAX_FRAME = 96 * 1024
CONNECTIONS = 4
BATCH = 40
ROUND_FRAMES = 6000  # per round, two rounds
FRAME = re.compile(rb"\x0b([^\x0b\x1c]*)\x1c", re.DOTALL)
CHARSETS = [
    b"UNICODE UTF-8", b"UTF-8", b"8859/1", b"8859/15", b"8859/7", b"WINDOWS-1252", b"ASCII",
    b"UTF-16", b"base64", b"rot13", b"zlib", b"KLINGON", b"", b"\xff\xfe", b"ISO IR87",
    b"UNICODE UTF-8~8859/1", b"8859/1^x",
]


def _fixtures() -> list[bytes]:
    paths = sorted([*FIXTURES.glob("siu/*.hl7"), *FIXTURES.glob("siu-vendor/*.hl7")])
    return [p.read_bytes() for p in paths]


def _with_control_id(raw: bytes, cid: bytes) -> bytes:
    head, sep, rest = raw.partition(b"\r")
    parts = head.split(b"|")
    while len(parts) < 12:
        parts.append(b"")
    parts[9] = cid
    return b"|".join(parts) + sep + rest


def _set_msh18(raw: bytes, value: bytes) -> bytes:
    head, sep, rest = raw.partition(b"\r")
    parts = head.split(b"|")
    while len(parts) < 18:
        parts.append(b"")
    parts[17] = value
    return b"|".join(parts) + sep + rest


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    # Huge fields are rare (they cost the parser most); the cheap mutations carry the count.
    kind = rng.choices(range(10), weights=[12, 10, 12, 12, 2, 10, 8, 8, 8, 8])[0]
    data = bytearray(raw)
    if kind == 0:  # byte flips, any value (VT and FS included)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # truncation
        del data[rng.randrange(len(data)) :]
    elif kind == 2:  # framing bytes inside the message
        for _ in range(rng.randint(1, 3)):
            data.insert(rng.randrange(len(data) + 1), rng.choice([0x0B, 0x1C, 0x0D, 0x0A]))
    elif kind == 3:  # a random charset in MSH-18, and maybe bytes that contradict it
        data = bytearray(_set_msh18(bytes(data), rng.choice(CHARSETS)))
        if rng.random() < 0.5:
            data += "ZZZ|Zoë Ωμέγα 東京".encode(rng.choice(["utf-8", "latin-1", "utf-16"]),
                                            "replace")
    elif kind == 4:  # a huge field, sometimes past the frame limit
        size = rng.choice([2_000, 30_000, 90_000, 150_000])
        at = data.find(b"\r") + 1 or len(data)
        unit = b"x" * 60 + bytes(rng.choice(b"^~&|") for _ in range(4))
        data[at:at] = b"NTE|1||" + unit * (size // len(unit)) + b"\r"
    elif kind == 5:  # segments dropped, duplicated or shuffled
        segs = bytes(data).split(b"\r")
        body = segs[1:]
        rng.shuffle(body)
        if body and rng.random() < 0.5:
            body += body[: rng.randint(1, len(body))]
        data = bytearray(b"\r".join(segs[:1] + body[: rng.randint(0, len(body))]))
    elif kind == 6:  # broken delimiters in MSH-1/MSH-2
        data[3 : 8] = bytes(rng.randrange(32, 127) for _ in range(5))
    elif kind == 7:  # LF or CRLF segment ends
        data = bytearray(bytes(data).replace(b"\r", rng.choice([b"\n", b"\r\n", b"\n\n"])))
    elif kind == 8:  # nothing but a few random bytes
        data = bytearray(rng.randbytes(rng.randint(0, 40)))
    # kind 9: unchanged
    return bytes(data)


@dataclass
class Expectation:
    payload: bytes
    control_id: str | None  # what MSA-2 must be when our parser reads the frame


def _expected(stream: bytes) -> list[Expectation]:
    out = []
    for m in FRAME.finditer(stream):
        payload = m.group(1)
        control_id = None
        if len(payload) <= MAX_FRAME:
            try:
                control_id = er7.parse(payload).header.control_id
            except Exception:  # the listener answers whatever the parser does
                control_id = None
        out.append(Expectation(payload, control_id))
    return out


def _msa(ack: bytes) -> tuple[str, str]:
    first = ack.split(b"\r", 1)[0]
    fs = first[3:4] or b"|"
    fields = first.split(fs)
    codec = codec_for(fields[17].decode("latin-1")) if len(fields) > 17 else "utf-8"
    for seg in ack.split(b"\r"):
        if seg.startswith(b"MSA"):
            parts = seg.decode(codec, "replace").split(fs.decode("latin-1"))
            return parts[1], parts[2] if len(parts) > 2 else ""
    raise AssertionError("ACK without MSA")


@dataclass
class Tally:
    frames: int = 0
    aa: int = 0
    rejected: int = 0


async def _sender(lst: Listener, rng: random.Random, fixtures: list[bytes], frames: int,
                  tag: str, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lst.port)
    decoder = Decoder(max_frame_bytes=4 * 1024 * 1024)
    sent = 0
    while sent < frames:
        stream = bytearray()
        for i in range(BATCH):
            base = _with_control_id(rng.choice(fixtures), f"{tag}-{sent + i}".encode())
            if rng.random() < 0.1:
                stream += rng.choice([b"junk", b"\x1c\r", b"\n", b"\x00\x00", rng.randbytes(9)])
            stream += encode(_mutate(rng, base))
        expected = _expected(bytes(stream))
        data = bytes(stream)
        i = 0
        while i < len(data):  # cut the stream at random places
            step = rng.choice([1, 7, 300, 4096, 65536])
            writer.write(data[i : i + step])
            i += step
        await writer.drain()
        acks = await read_frames(reader, len(expected), timeout=30, decoder=decoder)
        for exp, ack in zip(expected, acks, strict=True):
            code, msa2 = _msa(ack)
            if exp.control_id is not None:
                assert (code, msa2) == ("AA", exp.control_id), exp.payload[:300]
                tally.aa += 1
            else:
                assert code in ("AR", "AE"), exp.payload[:300]
                tally.rejected += 1
        tally.frames += len(expected)
        sent += BATCH
    # Nothing more is pending: a clean message on the same connection is answered at once.
    writer.write(encode(siu(f"{tag}-END")))
    (ack,) = await read_frames(reader, 1, decoder=decoder)
    assert _msa(ack) == ("AA", f"{tag}-END")
    writer.close()


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _round(lst: Listener, rng: random.Random, fixtures: list[bytes], name: str) -> Tally:
    tally = Tally()
    per = ROUND_FRAMES // CONNECTIONS
    await asyncio.gather(*(
        _sender(lst, random.Random(rng.random()), fixtures, per, f"{name}{c}", tally)
        for c in range(CONNECTIONS)))
    return tally


async def _parse_and_ack(frame: bytes, peer: PeerInfo) -> bytes:
    return parse_and_ack(frame)  # keeps nothing, so any growth is the listener's


async def test_ten_thousand_mutated_frames_each_get_one_ack_and_nothing_leaks() -> None:
    fixtures = _fixtures()
    rng = random.Random(SEED)
    settings = ListenerSettings(port=0, max_frame_bytes=MAX_FRAME, idle_seconds=30)
    async with running(settings, _parse_and_ack) as lst:
        first = await _round(lst, rng, fixtures, "a")
        gc.collect()
        rss_after_first = _rss_kib()
        second = await _round(lst, rng, fixtures, "b")
        gc.collect()
        grown = _rss_kib() - rss_after_first
        total = first.frames + second.frames
        assert total >= 10_000
        ends = 2 * CONNECTIONS
        assert lst.stats.frames == total + ends
        assert lst.stats.acks == total + ends
        # The mix really exercised both outcomes, and the limit.
        assert first.aa > 1000 and first.rejected > 500
        assert lst.stats.too_large > 10
        assert grown < 8 * 1024, f"RSS grew by {grown} KiB over the second round"
        print(f"fuzz: {total} frames, AA {first.aa + second.aa}, AR/AE "
              f"{first.rejected + second.rejected}, too large {lst.stats.too_large}, handler "
              f"errors {lst.stats.handler_errors}, RSS growth {grown} KiB")
        reader, writer = await asyncio.open_connection("127.0.0.1", lst.port)
        writer.write(encode(siu("AFTER")))
        (ack,) = await read_frames(reader, 1)
        assert _msa(ack) == ("AA", "AFTER")
        writer.close()


def test_the_oracle_agrees_with_the_decoder_on_framing() -> None:
    # The oracle is only useful if it is right: check it against the decoder on mutated streams.
    rng = random.Random(SEED + 1)
    fixtures = _fixtures()
    for _ in range(200):
        stream = b"".join(encode(_mutate(rng, rng.choice(fixtures))) for _ in range(10))
        events = Decoder(max_frame_bytes=10 * 1024 * 1024).feed(stream)
        assert [e.payload for e in events if isinstance(e, Frame)] == [
            m.group(1) for m in FRAME.finditer(stream)]
