"""The MLLP listener over real loopback sockets, with a trivial handler echoing MSH-10."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fhir_sched.hl7v2.listener import Listener, ListenerSettings, PeerInfo
from fhir_sched.hl7v2.mllp import Decoder, Frame, encode


def msg(control_id: str) -> bytes:
    return f"MSH|^~\\&|A|B|C|D|2024||SIU^S12|{control_id}|P|2.5.1\rSCH|1\r".encode()


async def echo(frame: bytes, peer: PeerInfo) -> bytes:
    control_id = frame.split(b"\r")[0].split(b"|")[9]
    return b"MSA|AA|" + control_id + b"\r"


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    lst = Listener(ListenerSettings(port=0, max_frame_bytes=2048, idle_seconds=0.5), echo)
    await lst.start()
    yield lst
    await lst.stop()


async def read_acks(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    decoder, out = Decoder(), []
    while len(out) < count:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk, "connection closed early"
        out += [e.payload for e in decoder.feed(chunk) if isinstance(e, Frame)]
    return out


async def test_two_messages_in_one_write_get_two_acks_in_order(listener: Listener) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(encode(msg("1")) + encode(msg("2")))
    assert await read_acks(reader, 2) == [b"MSA|AA|1\r", b"MSA|AA|2\r"]
    writer.write(encode(msg("3")))
    assert await read_acks(reader, 1) == [b"MSA|AA|3\r"]
    writer.close()


async def test_frame_split_byte_by_byte_with_garbage_and_lf_gets_one_ack(
    listener: Listener,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    for b in b"junk" + encode(msg("9")) + b"\n":
        writer.write(bytes([b]))
        await writer.drain()
    assert await read_acks(reader, 1) == [b"MSA|AA|9\r"]
    writer.close()


async def test_oversize_frame_gets_ar_and_connection_stays_usable(listener: Listener) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(encode(msg("BIG") + b"x" * 5000) + encode(msg("4")))
    first, second = await read_acks(reader, 2)
    assert b"MSA|AR|BIG\r" in first
    assert second == b"MSA|AA|4\r"
    writer.close()


async def test_idle_sender_is_disconnected(listener: Listener) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    assert await asyncio.wait_for(reader.read(10), 3) == b""
    writer.close()


async def test_eight_concurrent_senders_each_get_their_own_acks(listener: Listener) -> None:
    async def sender(n: int) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        data = b"".join(encode(msg(f"{n}-{i}")) for i in range(20))
        for i in range(0, len(data), 37):
            writer.write(data[i : i + 37])
            await writer.drain()
            await asyncio.sleep(0)
        acks = await read_acks(reader, 20)
        writer.close()
        return acks

    results = await asyncio.gather(*(sender(n) for n in range(8)))
    for n, acks in enumerate(results):
        assert acks == [f"MSA|AA|{n}-{i}\r".encode() for i in range(20)]


async def test_slow_sender_does_not_delay_another(listener: Listener) -> None:
    _slow_reader, slow = await asyncio.open_connection("127.0.0.1", listener.port)
    slow.write(b"\x0bMSH|half a frame")
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(encode(msg("fast")))
    assert await asyncio.wait_for(read_acks(reader, 1), 0.4) == [b"MSA|AA|fast\r"]
    writer.close()
    slow.close()
