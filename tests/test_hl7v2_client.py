"""The MLLP client against a real listener process-side socket: framing, ACK pairing, errors."""

from __future__ import annotations

import asyncio

import pytest

from fhir_sched.hl7v2.client import MllpClient, MllpError, parse_address


def test_parse_address_accepts_mllp_url_and_host_port() -> None:
    assert parse_address("mllp://ehr.example:6661") == ("ehr.example", 6661)
    assert parse_address("10.0.0.5:2575") == ("10.0.0.5", 2575)
    assert parse_address("[::1]:7000") == ("::1", 7000)
    assert parse_address("engine") == ("engine", 2575)


@pytest.mark.parametrize("bad", ["mllp://:2575", "host:notaport", "host:70000"])
def test_parse_address_refuses_bad_addresses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_address(bad)


async def _echo_server(replies: list[bytes]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in replies:
            data = await reader.readuntil(b"\x1c\x0d")
            assert data.startswith(b"\x0b")
            writer.write(reply)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_send_returns_each_ack_in_order_on_one_connection() -> None:
    # The second reply ends with FS alone and arrives with garbage before it.
    server = await _echo_server([b"\x0bACK-1\x1c\x0d", b"junk\x0bACK-2\x1c"])
    port = server.sockets[0].getsockname()[1]
    async with server, MllpClient("127.0.0.1", port, timeout=5) as client:
        assert await client.send(b"MSH|one") == b"ACK-1"
        assert await client.send(b"MSH|two") == b"ACK-2"


async def test_send_to_a_silent_peer_times_out_with_mllp_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client = MllpClient("127.0.0.1", port, timeout=0.3)
        with pytest.raises(MllpError):
            await client.send(b"MSH|x")
        assert not client.connected


async def test_connect_to_a_closed_port_raises_mllp_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(MllpError):
        await MllpClient("127.0.0.1", port, timeout=2).connect()
