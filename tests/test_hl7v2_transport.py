"""The MLLP transport over raw loopback sockets, with a handler that really parses (er7) and
ACKs (build_ack): framing quirks, limits, timeouts, concurrency, TLS and graceful stop."""

from __future__ import annotations

import asyncio
import resource
import ssl
import subprocess
import sys
from pathlib import Path

from fhir_sched.hl7v2.listener import Listener, ListenerSettings, PeerInfo
from fhir_sched.hl7v2.mllp import encode
from tests.support.mllp import (
    Recorder,
    closed_by_peer,
    err_code,
    msa,
    parse_and_ack,
    read_frames,
    running,
    siu,
)

HOST = "127.0.0.1"


async def connect(lst: Listener) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, lst.port)


async def test_frame_split_at_every_byte_position_is_answered_each_time() -> None:
    rec = Recorder()
    async with running(handler=rec) as lst:
        reader, writer = await connect(lst)
        sample = encode(siu("SPLIT"))
        first_multibyte = sample.index("É".encode())
        positions = range(1, len(sample))
        assert first_multibyte + 1 in positions  # a split between the two bytes of É
        for pos in positions:
            message = siu(f"S{pos}")
            framed = encode(message)
            writer.write(framed[:pos])
            await writer.drain()
            await asyncio.sleep(0.002)
            writer.write(framed[pos:])
            (ack,) = await read_frames(reader, 1)
            assert msa(ack) == ("AA", f"S{pos}")
            assert rec.payloads[-1] == message
        writer.close()
    assert len(rec.payloads) == len(positions)


async def test_two_and_ten_messages_in_one_write_are_answered_in_order() -> None:
    async with running() as lst:
        reader, writer = await connect(lst)
        for count in (2, 10):
            ids = [f"B{count}-{i}" for i in range(count)]
            writer.write(b"".join(encode(siu(i)) for i in ids))
            acks = await read_frames(reader, count)
            assert [msa(a) for a in acks] == [("AA", i) for i in ids]
        writer.close()


async def test_garbage_before_a_start_block_is_skipped_and_counted() -> None:
    async with running() as lst:
        reader, writer = await connect(lst)
        writer.write(b"GET / HTTP/1.1\r\n\r\n" + encode(siu("G1")))
        (ack,) = await read_frames(reader, 1)
        assert msa(ack) == ("AA", "G1")
        assert lst.stats.skipped_bytes == len(b"GET / HTTP/1.1")
        writer.close()


async def test_garbage_after_the_last_frame_is_counted_at_disconnect() -> None:
    async with running() as lst:
        reader, writer = await connect(lst)
        writer.write(encode(siu("T1")) + b"trailing")
        await read_frames(reader, 1)
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            if lst.open_connections == 0:
                break
            await asyncio.sleep(0.01)
        assert lst.stats.skipped_bytes == len(b"trailing")


async def test_lf_after_fs_and_fs_without_cr_both_end_a_frame() -> None:
    async with running() as lst:
        reader, writer = await connect(lst)
        lf = b"\x0b" + siu("LF") + b"\x1c\r\n"
        fs_only = b"\x0b" + siu("FS") + b"\x1c"
        writer.write(lf + fs_only)
        writer.write(encode(siu("NEXT")))
        acks = await read_frames(reader, 3)
        assert [msa(a) for a in acks] == [("AA", "LF"), ("AA", "FS"), ("AA", "NEXT")]
        writer.close()


async def test_stray_end_blocks_do_not_wedge_the_connection() -> None:
    async with running() as lst:
        reader, writer = await connect(lst)
        writer.write(b"\x1c\r")
        await writer.drain()
        writer.write(b"\x1c\x1c\r\r" + encode(siu("AFTER")) + b"\x1c\r" + encode(siu("AGAIN")))
        acks = await read_frames(reader, 2)
        assert [msa(a) for a in acks] == [("AA", "AFTER"), ("AA", "AGAIN")]
        writer.close()


async def test_oversize_frame_gets_ar_and_the_next_message_is_answered() -> None:
    async with running(ListenerSettings(port=0, max_frame_bytes=4096)) as lst:
        reader, writer = await connect(lst)
        big = siu("BIG").replace(b"NTE|1||", b"NTE|1||" + b"x" * 20_000)
        writer.write(encode(big) + encode(siu("SMALL")))
        first, second = await read_frames(reader, 2)
        assert msa(first) == ("AR", "BIG")
        assert err_code(first) == "207"
        assert msa(second) == ("AA", "SMALL")
        assert lst.stats.too_large == 1
        writer.close()


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pragma: no cover


async def test_endless_bytes_without_start_or_end_block_keep_memory_bounded() -> None:
    settings = ListenerSettings(port=0, max_frame_bytes=64 * 1024)
    async with running(settings) as lst:
        reader, writer = await connect(lst)
        before = _rss_kib()
        chunk = b"g" * (1024 * 1024)
        for _ in range(48):  # 48 MiB of garbage without a start block
            writer.write(chunk)
            await writer.drain()
        writer.write(b"\x0b")
        for _ in range(48):  # then 48 MiB inside a frame that never ends
            writer.write(chunk)
            await writer.drain()
        writer.write(b"\x1c\r" + encode(siu("ALIVE")))
        too_large, alive = await read_frames(reader, 2, timeout=30)
        grown = _rss_kib() - before
        assert grown < 24 * 1024, f"RSS grew by {grown} KiB for 96 MiB streamed"
        assert msa(too_large)[0] == "AR"
        assert msa(alive) == ("AA", "ALIVE")
        assert lst.stats.skipped_bytes == 48 * 1024 * 1024
        writer.close()


async def test_idle_sender_is_disconnected_while_an_active_one_keeps_working() -> None:
    async with running(ListenerSettings(port=0, idle_seconds=0.5)) as lst:
        idle_reader, idle_writer = await connect(lst)
        idle_writer.write(b"\x0bMSH|^~\\&|half")  # a partial frame, then silence
        reader, writer = await connect(lst)
        loop = asyncio.get_running_loop()
        idle_closed = asyncio.ensure_future(closed_by_peer(idle_reader, 3.0))
        started, n = loop.time(), 0
        while loop.time() - started < 1.5:
            writer.write(encode(siu(f"K{n}")))
            (ack,) = await read_frames(reader, 1)
            assert msa(ack) == ("AA", f"K{n}")
            n += 1
            await asyncio.sleep(0.2)
        assert await idle_closed
        assert lst.stats.idle_closed == 1
        writer.write(encode(siu("STILL")))
        assert msa((await read_frames(reader, 1))[0]) == ("AA", "STILL")
        writer.close()
        idle_writer.close()


async def test_eight_concurrent_senders_each_get_all_their_acks_in_order() -> None:
    per_sender = 100

    async def sender(lst: Listener, n: int) -> list[tuple[str, str]]:
        reader, writer = await connect(lst)
        ids = [f"C{n}-{i}" for i in range(per_sender)]
        data = b"".join(encode(siu(i, patient=f"P{n}")) for i in ids)
        step = 97 + n * 13  # every sender cuts its stream differently
        for i in range(0, len(data), step):
            writer.write(data[i : i + step])
            await writer.drain()
            await asyncio.sleep(0)
        acks = await read_frames(reader, per_sender, timeout=30)
        writer.close()
        return [msa(a) for a in acks]

    async with running() as lst:
        results = await asyncio.gather(*(sender(lst, n) for n in range(8)))
    for n, got in enumerate(results):
        assert got == [("AA", f"C{n}-{i}") for i in range(per_sender)]


async def test_connections_past_the_maximum_are_closed_at_once_and_counted() -> None:
    async with running(ListenerSettings(port=0, max_connections=2)) as lst:
        first = await connect(lst)
        second = await connect(lst)
        for reader, writer in (first, second):  # both really accepted
            writer.write(encode(siu("OK")))
            assert msa((await read_frames(reader, 1))[0]) == ("AA", "OK")
        third_reader, third_writer = await connect(lst)
        assert await closed_by_peer(third_reader, 2.0)
        assert lst.stats.refused == 1
        first[1].close()
        await first[1].wait_closed()
        for _ in range(100):
            if lst.open_connections < 2:
                break
            await asyncio.sleep(0.01)
        reader, writer = await connect(lst)
        writer.write(encode(siu("AGAIN")))
        assert msa((await read_frames(reader, 1))[0]) == ("AA", "AGAIN")
        for w in (second[1], third_writer, writer):
            w.close()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True)
    return cert, key


async def test_tls_listener_answers_a_verifying_ssl_client(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    settings = ListenerSettings(port=0, tls_cert=str(cert), tls_key=str(key))
    seen: list[PeerInfo] = []

    async def handler(frame: bytes, peer: PeerInfo) -> bytes:
        seen.append(peer)
        return parse_and_ack(frame)

    async with running(settings, handler) as lst:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection(HOST, lst.port, ssl=client_ctx,
                                                       server_hostname="127.0.0.1")
        writer.write(encode(siu("TLS1")) + encode(siu("TLS2")))
        acks = await read_frames(reader, 2)
        assert [msa(a) for a in acks] == [("AA", "TLS1"), ("AA", "TLS2")]
        assert seen and all(p.tls for p in seen)
        # A plain-TCP client on the TLS port gets no ACK, and the listener survives it.
        plain_reader, plain_writer = await connect(lst)
        plain_writer.write(encode(siu("PLAIN")))
        assert await closed_by_peer(plain_reader, 5.0)
        writer.write(encode(siu("TLS3")))
        assert msa((await read_frames(reader, 1))[0]) == ("AA", "TLS3")
        writer.close()


async def test_tls_client_that_never_completes_the_handshake_is_dropped(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    settings = ListenerSettings(port=0, tls_cert=str(cert), tls_key=str(key), idle_seconds=0.5)
    async with running(settings) as lst:
        reader, writer = await connect(lst)  # plain TCP, says nothing
        assert await closed_by_peer(reader, 3.0)
        writer.close()


async def test_handler_exception_is_answered_ae_207_and_the_connection_goes_on() -> None:
    async def flaky(frame: bytes, peer: PeerInfo) -> bytes:
        if b"|BOOM|" in frame:
            raise RuntimeError("database exploded")
        return parse_and_ack(frame)

    async with running(handler=flaky) as lst:
        reader, writer = await connect(lst)
        writer.write(encode(siu("BOOM")) + encode(siu("FINE")))
        boom, fine = await read_frames(reader, 2)
        assert msa(boom) == ("AE", "BOOM")
        assert err_code(boom) == "207"
        assert msa(fine) == ("AA", "FINE")
        assert lst.stats.handler_errors == 1
        writer.close()


async def test_handler_past_its_timeout_is_answered_ar_207_and_the_next_frame_served() -> None:
    async def stuck(frame: bytes, peer: PeerInfo) -> bytes:
        if b"|HANG|" in frame:
            await asyncio.sleep(30)
        return parse_and_ack(frame)

    async with running(ListenerSettings(port=0, handler_seconds=0.3), stuck) as lst:
        reader, writer = await connect(lst)
        writer.write(encode(siu("HANG")) + encode(siu("NEXT")))
        hang, nxt = await read_frames(reader, 2, timeout=5)
        assert msa(hang) == ("AR", "HANG")
        assert err_code(hang) == "207"
        assert msa(nxt) == ("AA", "NEXT")
        assert lst.stats.handler_timeouts == 1
        writer.close()


async def test_ae_for_a_failed_handler_is_in_the_senders_charset() -> None:
    async def failing(frame: bytes, peer: PeerInfo) -> bytes:
        raise ValueError("no")

    message = siu("Ü7", note="Zoë", charset="8859/1").decode().encode("latin-1")
    async with running(handler=failing) as lst:
        reader, writer = await connect(lst)
        writer.write(encode(message))
        (ack,) = await read_frames(reader, 1)
        assert b"|AE|\xdc7" in ack  # MSA-2 as sent, in Latin-1
        assert b"|8859/1" in ack.split(b"\r")[0]  # MSH-18 echoed
        writer.close()


async def test_graceful_stop_answers_the_frame_in_hand_then_closes() -> None:
    started = asyncio.Event()

    async def slow(frame: bytes, peer: PeerInfo) -> bytes:
        started.set()
        await asyncio.sleep(0.4)
        return parse_and_ack(frame)

    lst = Listener(ListenerSettings(port=0, stop_grace_seconds=5), slow)
    await lst.start()
    busy_reader, busy_writer = await connect(lst)
    idle_reader, _idle_writer = await connect(lst)
    busy_writer.write(encode(siu("INHAND")) + encode(siu("NOTTAKEN")))
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.ensure_future(lst.stop())
    assert await closed_by_peer(idle_reader, 0.3)  # idle: closed at once, not after 0.4 s
    (ack,) = await read_frames(busy_reader, 1)
    assert msa(ack) == ("AA", "INHAND")
    assert await closed_by_peer(busy_reader, 2.0)  # the second frame was never taken
    await asyncio.wait_for(stopping, 5)
    assert lst.open_connections == 0


async def test_graceful_stop_cancels_a_handler_past_the_grace_period() -> None:
    cancelled = asyncio.Event()

    async def forever(frame: bytes, peer: PeerInfo) -> bytes:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b""

    lst = Listener(ListenerSettings(port=0, stop_grace_seconds=0.3), forever)
    await lst.start()
    reader, writer = await connect(lst)
    writer.write(encode(siu("X")))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(lst.stop(), 5)
    assert loop.time() - t0 < 2
    assert await closed_by_peer(reader, 2.0)
    await asyncio.wait_for(cancelled.wait(), 1)  # the handler does not outlive the listener


async def test_mllp_release2_commit_blocks_from_a_peer_are_not_answered() -> None:
    async with running() as lst:
        reader, writer = await connect(lst)
        writer.write(encode(siu("R2A")))
        assert msa((await read_frames(reader, 1))[0]) == ("AA", "R2A")
        # The peer commit-acknowledges our ACK (and NAKs something), then sends a message.
        writer.write(b"\x0b\x06\x1c\r" + b"\x0b\x15\x1c\r" + encode(siu("R2B")))
        (ack,) = await read_frames(reader, 1)
        assert msa(ack) == ("AA", "R2B")  # the very next frame is R2B's ACK, nothing before it
        assert lst.stats.commit_blocks == 2
        assert lst.stats.acks == 2
        writer.close()


async def test_a_peer_that_never_reads_its_acks_is_closed_and_others_go_on() -> None:
    big_ack = b"MSH|^~\\&|S|F|R|F|1||ACK|1|P|2.5.1\rMSA|AA|x\rNTE|" + b"x" * 65536 + b"\r"

    async def bulky(frame: bytes, peer: PeerInfo) -> bytes:
        return parse_and_ack(frame) if b"|FAST" in frame else big_ack

    async with running(ListenerSettings(port=0, idle_seconds=0.5), bulky) as lst:
        import socket as socket_mod

        sock = socket_mod.socket()
        sock.setsockopt(socket_mod.SOL_SOCKET, socket_mod.SO_RCVBUF, 4096)
        sock.connect((HOST, lst.port))
        sock.setblocking(False)
        _deaf_reader, deaf = await asyncio.open_connection(sock=sock)
        deaf.write(b"".join(encode(siu(f"D{i}")) for i in range(400)))  # never reads a byte
        reader, writer = await connect(lst)
        fast = 0
        for _ in range(30):  # up to 3 s: the other sender is served while the deaf one stalls
            writer.write(encode(siu(f"FAST{fast}")))
            assert msa((await read_frames(reader, 1, timeout=2))[0]) == ("AA", f"FAST{fast}")
            fast += 1
            if lst.stats.stalled_closed:
                break
            await asyncio.sleep(0.1)
        assert lst.stats.stalled_closed == 1
        assert lst.stats.acks < 400 + fast
        assert lst.stats.idle_closed == 0
        writer.write(encode(siu("FAST-AFTER")))
        assert msa((await read_frames(reader, 1, timeout=2))[0]) == ("AA", "FAST-AFTER")
        writer.close()
        deaf.close()


def test_siu_bench_transport_only_runs_and_every_message_is_acked() -> None:
    # The benchmark's own plumbing (no times asserted): spawn, send over 1 and 4 connections
    # and pipelined, check every ACK, report.
    bench = Path(__file__).resolve().parent.parent / "bench" / "siu_bench.py"
    out = subprocess.run(
        [sys.executable, str(bench), "--transport-only", "--commit", "--messages", "40",
         "--parse-messages", "10", "--warmup", "5", "--pipeline", "4"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    runs = [line for line in out.splitlines() if "msg/s   ACK p50" in line]
    assert len(runs) == 4, out
    assert all("refused 0/40" in line for line in runs), out
    for name in ("hl7apy parse_message", "python-hl7 hl7.parse", "ours er7.parse + siu"):
        assert name in out


async def test_empty_handler_reply_writes_nothing_and_the_next_frame_is_answered() -> None:
    async def no_ack_for_ne(frame: bytes, peer: PeerInfo) -> bytes:
        return b"" if b"|QUIET|" in frame else parse_and_ack(frame)

    async with running(handler=no_ack_for_ne) as lst:
        reader, writer = await connect(lst)
        writer.write(encode(siu("QUIET")) + encode(siu("LOUD")))
        (ack,) = await read_frames(reader, 1)
        assert msa(ack) == ("AA", "LOUD")  # nothing came before it
        assert lst.stats.frames == 2
        writer.close()


async def test_release2_commit_block_then_ack_content_and_nak_when_not_committed() -> None:
    async def flaky(frame: bytes, peer: PeerInfo) -> bytes:
        if b"|BOOM|" in frame:
            raise RuntimeError("not committed")
        return parse_and_ack(frame)

    settings = ListenerSettings(port=0, release2=True, max_frame_bytes=4096)
    async with running(settings, flaky) as lst:
        reader, writer = await connect(lst)
        writer.write(encode(siu("OK1")))
        commit, content = await read_frames(reader, 2)
        assert commit == b"\x06"
        assert msa(content) == ("AA", "OK1")
        # The peer commit-acknowledges our ACK, then sends a failing, an oversize and a good one.
        big = siu("BIG").replace(b"NTE|1||", b"NTE|1||" + b"x" * 9000)
        writer.write(b"\x0b\x06\x1c\r" + encode(siu("BOOM")) + encode(big) + encode(siu("OK2")))
        nak_boom, nak_big, commit2, content2 = await read_frames(reader, 4)
        assert (nak_boom, nak_big, commit2) == (b"\x15", b"\x15", b"\x06")
        assert msa(content2) == ("AA", "OK2")
        assert (lst.stats.naks, lst.stats.commit_blocks) == (2, 1)
        writer.close()
