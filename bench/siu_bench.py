"""SIU ingest benchmark (issue 11): sustained S12 over MLLP against parse-only baselines.

    python bench/siu_bench.py --transport-only          # listener + parse/map/ACK, no store
    python bench/siu_bench.py --transport-only --commit # ... + one SQLite commit per message
    python bench/siu_bench.py --spawn                    # a real fhir-sched serve --mllp-port
    python bench/siu_bench.py --target 127.0.0.1:2575    # a server already running

Options: --messages N (per ingest run, default 3000), --parse-messages N (default 2000),
--pipeline W (also run with W messages in flight per connection), --connections 1,4.

In one run, on one machine, on the same generated S12 messages:

1. parse-only rates: hl7apy ``parse_message`` (what the design names for structure-aware work),
   python-hl7 ``hl7.parse``, and ours (``er7.parse`` then ``siu.map_message``, which does more:
   it also maps the message to the change it describes);
2. ingest over 1 and 4 persistent MLLP connections, each waiting for its ACK before sending the
   next (and, with --pipeline, W in flight), printing messages/s and ACK latency p50/p95/p99,
   and the ingest rate as a fraction of each parse-only rate.

Every message has a unique MSH-10, a unique appointment id, patient and time, and practitioners
and rooms unique to the run, so a server with a booking guard and idempotency refuses none of
them; a run against a store that keeps data can be repeated. Each ACK is checked (AA, MSA-2 is
the message's MSH-10); refusals are counted and the first few printed, never hidden.

``--transport-only`` runs the listener in a child process (so the load generator does not share
its event loop or GIL) with a handler that parses, maps and ACKs without a store: the ceiling
the real door can approach. ``--spawn`` starts ``fhir-sched serve --store sqlite:///TMP --port P
--mllp-port M`` and measures commit-before-ACK ingest. Targets (issue 11, 2-core machine):
>= 1,000 messages/s over 4 connections with ACK p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fhir_sched.hl7v2 import er7, siu
from fhir_sched.hl7v2.ack import AckCode, build_ack, reject_unparseable
from fhir_sched.hl7v2.mllp import Decoder, Frame, TooLarge, encode
from fhir_sched.hl7v2.senders import defaults as default_senders

# --- messages ------------------------------------------------------------------------------


def _ts(dt: datetime) -> str:
    return dt.strftime("%Y%m%d%H%M%S") + "+0000"


def s12(run: str, i: int, base: datetime) -> tuple[str, bytes]:
    """(MSH-10, message) for the i-th S12 of a run: all ids unique, 10 minutes each."""
    cid = f"{run}-{i}"
    start = base + timedelta(minutes=10 * i)
    end = start + timedelta(minutes=10)
    prac, room = f"{run}P{i % 40}", f"{run}R{i % 16}"
    sch = ["SCH", f"PL{cid}^BENCH", f"FL{cid}^BENCH", "", "", "", "NEW^New",
           "ROUTINE^Routine^HL70276", "OFFICE^Office visit", "10", "min",
           f"^^10^{_ts(start)}^{_ts(end)}"] + [""] * 13 + ["Booked"]
    segments = [
        f"MSH|^~\\&|BENCH|BENCHCLINIC|FHIRSCHED|FS|{_ts(datetime.now(UTC))}||SIU^S12^SIU_S12"
        f"|{cid}|P|2.5.1|||||USA|UNICODE UTF-8",
        "|".join(sch),
        f"TQ1|1||||10&min|R|{_ts(start)}|{_ts(end)}",
        f"NTE|1||Bench visit {i}: bring the referral letter",
        f"PID|1||M{cid}^^^BENCH^MR||Benchmark^Zoé^{i}||19800101|F|||1 Main St^^Town^ST^12345",
        "PV1|1|O",
        "RGS|1|A",
        f"AIS|1|A|OFFICE^Office visit|{_ts(start)}|||10|min||Booked",
        f"AIP|1|A|{prac}^Doctor^Bench^^^Dr|ATT^Attending||{_ts(start)}|||10|min||Booked",
        f"AIL|1|A|{room}^^^BENCHCLINIC|||{_ts(start)}|||10|min||Booked",
    ]
    return cid, ("\r".join(segments) + "\r").encode()


def make_messages(count: int, run: str) -> list[tuple[str, bytes]]:
    base = datetime(2031, 1, 6, 8, 0, tzinfo=UTC)
    return [s12(run, i, base) for i in range(count)]


# --- parse-only baselines -----------------------------------------------------------------


def _rate(fn: object, items: list[object], rounds: int = 3) -> float:
    """Best of ``rounds`` passes, messages per second."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for item in items:
            fn(item)  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return len(items) / best


HL7APY_MESSAGES = 300


def parse_baselines(messages: list[bytes]) -> dict[str, float]:
    import hl7
    from hl7apy.parser import parse_message

    texts = [m.decode() for m in messages]
    senders = default_senders()

    def ours(raw: bytes) -> None:
        msg = er7.parse(raw)
        sender = senders.find(msg.header.sending_application, msg.header.sending_facility)
        assert sender is not None
        siu.map_message(msg, sender)

    # hl7apy is two orders of magnitude slower: it gets the first few hundred of the same
    # messages, so the run stays short.
    rates = {
        "hl7apy parse_message": _rate(parse_message, texts[:HL7APY_MESSAGES]),  # type: ignore[arg-type]
        "python-hl7 hl7.parse": _rate(hl7.parse, texts),  # type: ignore[arg-type]
        "ours er7.parse": _rate(er7.parse, messages),  # type: ignore[arg-type]
        "ours er7.parse + siu.map_message": _rate(ours, messages),  # type: ignore[arg-type]
    }
    return rates


# --- the transport-only server ----------------------------------------------------------------


class CommitLog:
    """A stand-in for the bridge's commit: the message and its ACK stored under the idempotency
    key (MSH-3, MSH-4, MSH-10) in one SQLite transaction (WAL, synchronous=FULL, as the store
    runs), on one writer thread, before the ACK is sent. It shows what one durable commit per
    message costs on this disk; the real door does more in that transaction."""

    def __init__(self, path: str) -> None:
        import sqlite3
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(1, thread_name_prefix="commit")
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS inbound (app TEXT, fac TEXT, cid TEXT, "
                        "raw BLOB, ack BLOB, PRIMARY KEY (app, fac, cid))")

    def _write(self, key: tuple[str, str, str], raw: bytes, ack: bytes) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT OR IGNORE INTO inbound VALUES (?, ?, ?, ?, ?)", (*key, raw, ack))
        self.db.execute("COMMIT")

    async def commit(self, key: tuple[str, str, str], raw: bytes, ack: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(self.pool, self._write, key, raw, ack)


def transport_handler(commit: CommitLog | None = None) -> object:
    senders = default_senders()
    counter = iter(range(1, 1 << 62))

    async def handle(frame: bytes, peer: object) -> bytes:
        control_id = f"B{next(counter)}"
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        try:
            msg = er7.parse(frame)
            sender = senders.find(msg.header.sending_application, msg.header.sending_facility)
            assert sender is not None
            siu.map_message(msg, sender)
        except er7.Er7Error as exc:
            if exc.header is None:
                return reject_unparseable(frame, control_id=control_id, timestamp=stamp,
                                          text=str(exc), error_code=exc.code)
            return build_ack(exc.header, AckCode.AR, control_id=control_id, timestamp=stamp,
                             text=str(exc), error_code=exc.code)
        ack = build_ack(msg.header, AckCode.AA, control_id=control_id, timestamp=stamp)
        if commit is not None:
            h = msg.header
            await commit.commit((h.sending_application, h.sending_facility, h.control_id),
                                frame, ack)
        return ack

    return handle


async def _serve_transport(port: int, commit_path: str) -> None:
    from fhir_sched.hl7v2.listener import Listener, ListenerSettings

    commit = CommitLog(commit_path) if commit_path else None
    lst = Listener(ListenerSettings(port=port, max_connections=256),
                   transport_handler(commit))  # type: ignore[arg-type]
    await lst.start()
    print(f"PORT {lst.port}", flush=True)
    await asyncio.Event().wait()


# --- ingest -------------------------------------------------------------------------------


@dataclass
class Result:
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def _msa(ack: bytes) -> tuple[str, str]:
    for seg in ack.split(b"\r"):
        if seg.startswith(b"MSA"):
            parts = seg.decode("utf-8", "replace").split("|")
            return (parts[1] if len(parts) > 1 else ""), (parts[2] if len(parts) > 2 else "")
    return "", ""


def _why(ack: bytes) -> str:
    """The ERR segment (or else the MSA) of a refusal, for the report."""
    segments = ack.split(b"\r")
    chosen = next((s for s in segments if s.startswith(b"ERR")), None)
    chosen = chosen or next((s for s in segments if s.startswith(b"MSA")), ack)
    return chosen[:200].decode("utf-8", "replace")


async def _connection(host: str, port: int, messages: list[tuple[str, bytes]], window: int,
                      result: Result) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    decoder = Decoder(max_frame_bytes=4 * 1024 * 1024)
    acks: deque[bytes] = deque()

    async def next_ack() -> bytes:
        while not acks:
            chunk = await asyncio.wait_for(reader.read(65536), 60)
            if not chunk:
                raise ConnectionError("server closed the connection")
            for event in decoder.feed(chunk):
                if isinstance(event, Frame | TooLarge):
                    acks.append(event.payload if isinstance(event, Frame) else event.head)
        return acks.popleft()

    def check(cid: str, ack: bytes) -> None:
        code, echoed = _msa(ack)
        if code not in ("AA", "CA") or echoed != cid:
            result.refused.append(f"{cid}: {code} {echoed!r} {_why(ack)}")

    in_flight: deque[tuple[str, float]] = deque()
    for cid, raw in messages:
        writer.write(encode(raw))
        in_flight.append((cid, time.perf_counter()))
        if len(in_flight) >= window:
            await writer.drain()
            ack = await next_ack()
            sent_cid, t0 = in_flight.popleft()
            result.latencies.append(time.perf_counter() - t0)
            check(sent_cid, ack)
    await writer.drain()
    while in_flight:
        ack = await next_ack()
        sent_cid, t0 = in_flight.popleft()
        result.latencies.append(time.perf_counter() - t0)
        check(sent_cid, ack)
    result.sent += len(messages)
    writer.close()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def ingest(host: str, port: int, messages: list[tuple[str, bytes]], connections: int,
                 window: int) -> tuple[float, Result]:
    shares = [messages[c::connections] for c in range(connections)]
    result = Result()
    t0 = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, share, window, result) for share in shares))
    return result.sent / (time.perf_counter() - t0), result


# --- servers ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listening on MLLP port {port} after {seconds:.0f} s")


def spawn_transport(commit_path: str) -> tuple[subprocess.Popen[bytes], int]:
    extra = ["--commit-db", commit_path] if commit_path else []
    proc = subprocess.Popen([sys.executable, __file__, "--serve-transport-only", *extra],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        raise SystemExit("the transport-only listener did not start")
    return proc, int(line.split()[1])


def spawn_server(tmp: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    http_port, mllp_port = _free_port(), _free_port()
    log = tmp / "server.log"
    env = {**os.environ, "FHIR_SCHED_LOG_LEVEL": "warning"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fhir_sched.cli", "serve", "--host", "127.0.0.1",
             "--store", f"sqlite:///{tmp / 'bench.db'}", "--port", str(http_port),
             "--mllp-port", str(mllp_port)],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    _wait_port(mllp_port, proc, log)
    return proc, mllp_port, http_port


# --- outbound round trip ------------------------------------------------------------------


async def outbound_round_trip(http_port: int, count: int) -> tuple[list[float], list[float]]:
    """(change -> ACKed SIU seconds, the PUT's own response seconds) for ``count`` sequential
    Appointment writes through REST, received by python-hl7's MLLP server in this process."""
    import hl7.mllp
    import httpx

    arrived: dict[str, float] = {}
    waiters: dict[str, asyncio.Event] = {}

    async def handle(reader: Any, writer: Any) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                appt = str(message.segment("SCH")[2][0][0])
                arrived.setdefault(appt, time.perf_counter())
                writer.writemessage(message.create_ack("AA"))
                await writer.drain()
                if appt in waiters:
                    waiters[appt].set()
        except asyncio.IncompleteReadError:
            pass

    port = _free_port()
    server = await hl7.mllp.start_hl7_server(handle, host="127.0.0.1", port=port)
    base = f"http://127.0.0.1:{http_port}/fhir"
    round_trips, puts = [], []
    async with server, httpx.AsyncClient(base_url=base, timeout=30) as client:
        ext = "https://fhir-sched.org/fhir/StructureDefinition/hl7v2-version"
        r = await client.put("/Endpoint/bench", json={
            "resourceType": "Endpoint", "id": "bench", "status": "active",
            "connectionType": {"code": "hl7v2-mllp"}, "payloadType": [{"text": "SIU"}],
            "address": f"mllp://127.0.0.1:{port}",
            "extension": [{"url": ext, "valueCode": "2.5.1"}]})
        r.raise_for_status()
        await client.put("/Practitioner/rt", json={"resourceType": "Practitioner", "id": "rt"})
        start = datetime(2033, 1, 3, 8, 0, tzinfo=UTC)
        for i in range(count):
            appt = f"rt{i}"
            waiters[appt] = asyncio.Event()
            begin = start + timedelta(minutes=10 * i)
            body = {"resourceType": "Appointment", "id": appt, "status": "booked",
                    "start": begin.isoformat(), "end": (begin + timedelta(minutes=10)).isoformat(),
                    "participant": [{"actor": {"reference": "Practitioner/rt"},
                                     "status": "accepted"}]}
            t0 = time.perf_counter()
            r = await client.put(f"/Appointment/{appt}", json=body)
            t1 = time.perf_counter()
            r.raise_for_status()
            await asyncio.wait_for(waiters[appt].wait(), 30)
            round_trips.append(arrived[appt] - t0)
            puts.append(t1 - t0)
    return round_trips, puts


# --- report -------------------------------------------------------------------------------


def _report(label: str, rate: float, result: Result, baselines: dict[str, float]) -> None:
    lat = result.latencies
    print(f"  {label:<34} {rate:8.0f} msg/s   ACK p50 {pct(lat, 50) * 1e3:6.2f} ms  "
          f"p95 {pct(lat, 95) * 1e3:6.2f} ms  p99 {pct(lat, 99) * 1e3:6.2f} ms   "
          f"refused {len(result.refused)}/{result.sent}")
    ratios = ", ".join(f"{rate / r:.2f}x {name.split()[0]}{' (+map)' if 'map' in name else ''}"
                       for name, r in baselines.items())
    print(f"  {'':<34} ingest rate / parse-only rate: {ratios}")
    for line in result.refused[:3]:
        print(f"    refused: {line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="host:port of a running MLLP listener")
    where.add_argument("--spawn", action="store_true",
                       help="start fhir-sched serve --mllp-port on a temporary SQLite store")
    where.add_argument("--transport-only", action="store_true",
                       help="a listener in a child process with a parse+map+ACK handler")
    where.add_argument("--serve-transport-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--commit", action="store_true",
                    help="with --transport-only: one SQLite commit (WAL, FULL) per message "
                         "before its ACK, a stand-in for the bridge's durable write")
    ap.add_argument("--commit-db", default="", help=argparse.SUPPRESS)
    ap.add_argument("--messages", type=int, default=3000, help="messages per ingest run")
    ap.add_argument("--parse-messages", type=int, default=2000)
    ap.add_argument("--connections", default="1,4")
    ap.add_argument("--pipeline", type=int, default=0, help="also run with W in flight")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--outbound", type=int, default=0,
                    help="with --spawn: also time N FHIR changes until their SIU is ACKed")
    args = ap.parse_args(argv)
    if args.serve_transport_only:
        asyncio.run(_serve_transport(0, args.commit_db))
        return 0

    run = f"{int(time.time() * 1000) % 10**10:x}"
    sample = make_messages(args.parse_messages, run + "p")
    print(f"SIU S12 benchmark, run {run}, {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}")
    print(f"parse-only on {len(sample)} S12 messages ({len(sample[0][1])} bytes each; hl7apy on "
          f"the first {min(HL7APY_MESSAGES, len(sample))}), best of 3:")
    baselines = parse_baselines([raw for _cid, raw in sample])
    for name, rate in baselines.items():
        print(f"  {name:<34} {rate:8.0f} msg/s  ({1e6 / rate:6.1f} us/msg)")

    proc: subprocess.Popen[bytes] | None = None
    tmp = tempfile.TemporaryDirectory(prefix="siu-bench-")
    try:
        if args.target:
            host, _, port_text = args.target.rpartition(":")
            host, port = host or "127.0.0.1", int(port_text)
            what = f"target {args.target}"
        elif args.spawn:
            proc, port, http_port = spawn_server(Path(tmp.name))
            host, what = "127.0.0.1", "fhir-sched serve --mllp-port (SQLite, commit before ACK)"
        elif args.commit:
            proc, port = spawn_transport(str(Path(tmp.name) / "commit.db"))
            host, what = "127.0.0.1", ("transport + parse + map + one SQLite commit (WAL, FULL)"
                                       " per message before its ACK")
        else:
            proc, port = spawn_transport("")
            host, what = "127.0.0.1", "transport only: listener + parse + map + ACK, no store"
        print(f"ingest against {what}:")
        asyncio.run(ingest(host, port, make_messages(args.warmup, run + "w"), 1, 1))
        windows = [1] + ([args.pipeline] if args.pipeline > 1 else [])
        for window in windows:
            for n, connections in enumerate(int(c) for c in args.connections.split(",")):
                batch = make_messages(args.messages, f"{run}c{connections}w{window}n{n}")
                rate, result = asyncio.run(ingest(host, port, batch, connections, window))
                mode = "ACK before next" if window == 1 else f"{window} in flight"
                label = f"{connections} connection{'s' if connections > 1 else ''}, {mode}"
                _report(label, rate, result, baselines)
        if args.spawn and args.outbound:
            trips, puts = asyncio.run(outbound_round_trip(http_port, args.outbound))
            print(f"outbound: {args.outbound} Appointment PUTs over REST, each until its SIU "
                  "was received and ACKed by python-hl7's MLLP server:")
            print(f"  change -> ACKed SIU      p50 {pct(trips, 50) * 1e3:7.1f} ms  "
                  f"p95 {pct(trips, 95) * 1e3:7.1f} ms  p99 {pct(trips, 99) * 1e3:7.1f} ms")
            print(f"  the PUT alone (baseline) p50 {pct(puts, 50) * 1e3:7.1f} ms  "
                  f"p95 {pct(puts, 95) * 1e3:7.1f} ms  -> round trip / PUT at p95: "
                  f"{pct(trips, 95) / pct(puts, 95):.1f}x")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
