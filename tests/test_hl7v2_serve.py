"""The HL7 v2 door of a real ``fhir-sched serve``: MLLP beside HTTP, ``POST /hl7v2``, TLS, the
``hl7v2 send`` command, and nothing lost across a ``kill -9``.

Every test drives a real server process over sockets; peers are raw sockets, python-hl7's
asyncio MLLP client, and the project's own command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hl7
import hl7.mllp
import pytest

from tests.support import web
from tests.support.server import ServerProcess, cleanup_dir, free_port, store_url

FIXTURES = Path(__file__).parent / "fixtures" / "siu"
BASE_TIME = datetime(2037, 3, 2, 8, 0, tzinfo=UTC)
FILLER = "urn:fhir-sched:hl7v2:CLINIC:NORTH:filler"


def s12(n: int, *, control: str | None = None, minutes: int = 30) -> bytes:
    """A minimal S12 with its own patient and time, one practitioner for all."""
    start = BASE_TIME + timedelta(minutes=minutes * n)
    end = start + timedelta(minutes=minutes)
    fmt = "%Y%m%d%H%M%S+0000"
    segments = [
        f"MSH|^~\\&|CLINIC|NORTH|FHIRSCHED|HOSP|20370101120000||SIU^S12^SIU_S12|"
        f"{control or f'MSG{n}'}|P|2.5.1",
        f"SCH|P{n}^CLINIC|F{n}^CLINIC|||||ROUTINE^Routine||30|min|||||||||||||||Booked",
        f"TQ1|1||||||{start.strftime(fmt)}|{end.strftime(fmt)}",
        f"PID|1||MRN{n}^^^CLINIC^MR||Doe^Jane{n}||19800101|F",
        "RGS|1",
        f"AIP|1||9001^Smith^Ann^^^Dr|||{start.strftime(fmt)}|||30|min",
    ]
    return ("\r".join(segments) + "\r").encode()


def frame(message: bytes) -> bytes:
    return b"\x0b" + message + b"\x1c\x0d"


def msa(ack: bytes) -> list[str]:
    for segment in ack.split(b"\r"):
        if segment.startswith(b"MSA|"):
            return segment.decode().split("|")
    raise AssertionError(f"no MSA in {ack!r}")


class RawPeer:
    """A blocking socket that sends frames and reads ACK frames, for exact framing checks."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def ack(self) -> bytes:
        while b"\x1c" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\x1c")
        self.buf = self.buf.removeprefix(b"\r")
        return head.removeprefix(b"\x0b")

    def send(self, message: bytes) -> bytes:
        self.sock.sendall(frame(message))
        return self.ack()

    def deliver(self, message: bytes, patience: float = 120.0) -> bytes:
        """Send as an interface engine does: an AR (a transient refusal) is resent after a
        pause, until some other answer comes or ``patience`` runs out."""
        deadline = time.monotonic() + patience
        while True:
            ack = self.send(message)
            if msa(ack)[1] != "AR" or time.monotonic() > deadline:
                return ack
            time.sleep(1.0)

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def hl7_server(store_kind: str, mongo_uri: str | None, env: dict[str, str] | None = None,
               url: str | None = None) -> Iterator[tuple[ServerProcess, int]]:
    """A server with MLLP on; a store made here is removed after, one passed in is kept."""
    owned = url is None
    url = url or store_url(store_kind, mongo_uri, "fhir_sched_hl7v2")
    mllp = free_port()
    proc = ServerProcess(url, env={"FHIR_SCHED_MLLP_PORT": str(mllp), **(env or {})}).start()
    try:
        yield proc, mllp
    finally:
        proc.stop()
        if owned and url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def appointments(base: str, **params: str) -> list[dict[str, object]]:
    bundle = web.get(f"{base}/Appointment", params={"_count": "1000", **params},
                     timeout=30).json()
    return [e["resource"] for e in bundle.get("entry", [])]


@pytest.fixture
def door(store_kind: str, mongo_uri: str | None) -> Iterator[tuple[ServerProcess, int]]:
    with hl7_server(store_kind, mongo_uri) as pair:
        yield pair


def test_s12_over_mllp_is_acked_aa_and_readable_over_fhir(
        door: tuple[ServerProcess, int]) -> None:
    proc, port = door
    peer = RawPeer(port)
    try:
        fields = msa(peer.send(s12(1)))
    finally:
        peer.close()
    assert fields[1:3] == ["AA", "MSG1"]
    found = appointments(proc.base, identifier=f"{FILLER}|F1")
    assert len(found) == 1
    assert found[0]["status"] == "booked"
    assert found[0]["start"] == "2037-03-02T08:30:00+00:00"


def test_two_messages_in_one_write_get_two_acks_in_order(
        door: tuple[ServerProcess, int]) -> None:
    _proc, port = door
    peer = RawPeer(port)
    try:
        peer.sock.sendall(frame(s12(1)) + frame(s12(2)))
        first, second = msa(peer.ack()), msa(peer.ack())
    finally:
        peer.close()
    assert (first[1], first[2], second[1], second[2]) == ("AA", "MSG1", "AA", "MSG2")


def test_python_hl7_client_gets_its_acks_from_the_server(
        door: tuple[ServerProcess, int]) -> None:
    proc, port = door

    async def run() -> list[str]:
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port)
        codes = []
        try:
            for n in range(3):
                writer.writemessage(hl7.parse(s12(n).decode()))
                await writer.drain()
                ack = await asyncio.wait_for(reader.readmessage(), 10)
                codes.append(f"{ack.segment('MSA')[1]}:{ack.segment('MSA')[2]}")
        finally:
            writer.close()
        return codes

    assert asyncio.run(run()) == ["AA:MSG0", "AA:MSG1", "AA:MSG2"]
    assert len(appointments(proc.base)) == 3


def test_post_hl7v2_answers_the_ack_as_the_body(door: tuple[ServerProcess, int]) -> None:
    proc, _ = door
    r = web.post(proc.base.removesuffix("/fhir") + "/hl7v2", content=s12(5),
                 headers={"content-type": "x-application/hl7-v2+er7"}, timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("x-application/hl7-v2+er7")
    assert msa(r.content)[1:3] == ["AA", "MSG5"]
    assert len(appointments(proc.base, identifier=f"{FILLER}|F5")) == 1


def test_post_hl7v2_takes_several_messages_separated_by_blank_lines(
        door: tuple[ServerProcess, int]) -> None:
    proc, _ = door
    body = s12(1).replace(b"\r", b"\n") + b"\n" + s12(2).replace(b"\r", b"\n")
    r = web.post(proc.base.removesuffix("/fhir") + "/hl7v2", content=body,
                 headers={"content-type": "x-application/hl7-v2+er7"}, timeout=30)
    assert r.status_code == 200
    acks = [a for a in r.content.split(b"\n") if a]
    assert [msa(a)[2] for a in acks] == ["MSG1", "MSG2"]


def test_a_message_delivered_over_http_and_again_over_mllp_is_applied_once(
        door: tuple[ServerProcess, int]) -> None:
    proc, port = door
    first = web.post(proc.base.removesuffix("/fhir") + "/hl7v2", content=s12(7),
                     headers={"content-type": "x-application/hl7-v2+er7"}, timeout=30).content
    peer = RawPeer(port)
    try:
        again = peer.send(s12(7))
    finally:
        peer.close()
    assert again == first
    assert len(appointments(proc.base, identifier=f"{FILLER}|F7")) == 1


def test_post_hl7v2_refuses_other_media_types_and_empty_bodies(
        door: tuple[ServerProcess, int]) -> None:
    proc, _ = door
    url = proc.base.removesuffix("/fhir") + "/hl7v2"
    wrong = web.post(url, content=s12(1), headers={"content-type": "application/json"})
    assert wrong.status_code == 415
    assert wrong.json()["resourceType"] == "OperationOutcome"
    empty = web.post(url, content=b"\r\n", headers={"content-type": "x-application/hl7-v2+er7"})
    assert empty.status_code == 400


def test_garbage_on_the_socket_gets_an_ar_and_the_server_keeps_serving(
        door: tuple[ServerProcess, int]) -> None:
    proc, port = door
    peer = RawPeer(port)
    try:
        garbage = msa(peer.send(b"\x00\xff not hl7 at all"))
        after = msa(peer.send(s12(3)))
    finally:
        peer.close()
    assert garbage[1] == "AR"
    assert after[1:3] == ["AA", "MSG3"]
    assert web.get(f"{proc.base}/metadata").status_code == 200


def test_send_command_prints_each_ack_and_exits_zero(door: tuple[ServerProcess, int],
                                                     tmp_path: Path) -> None:
    _proc, port = door
    path = tmp_path / "feed.hl7"
    path.write_bytes(s12(1).replace(b"\r", b"\n") + b"\n" + s12(2).replace(b"\r", b"\n"))
    done = subprocess.run([sys.executable, "-m", "fhir_sched.cli", "hl7v2", "send", str(path),
                           "--to", f"mllp://127.0.0.1:{port}"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("MSA|AA|") == 2
    assert "--- message 2: AA" in done.stdout


def test_send_command_exits_one_when_an_ack_is_not_aa(door: tuple[ServerProcess, int],
                                                      tmp_path: Path) -> None:
    _proc, port = door
    path = tmp_path / "bad.hl7"
    path.write_bytes(b"MSH|^~\\&|CLINIC|NORTH|X|Y|20370101||ADT^A01|BAD1|P|2.5.1\rPID|1\r")
    done = subprocess.run([sys.executable, "-m", "fhir_sched.cli", "hl7v2", "send", str(path),
                           "--to", f"127.0.0.1:{port}"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "MSA|AR|BAD1" in done.stdout


def test_send_command_exits_two_when_nobody_listens(tmp_path: Path) -> None:
    path = tmp_path / "one.hl7"
    path.write_bytes(s12(1))
    done = subprocess.run([sys.executable, "-m", "fhir_sched.cli", "hl7v2", "send", str(path),
                           "--to", f"127.0.0.1:{free_port()}", "--timeout", "2"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "cannot connect" in done.stderr


def test_mllp_over_tls_with_the_send_command(store_kind: str, mongo_uri: str | None,
                                             tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    env = {"FHIR_SCHED_MLLP_TLS_CERT": str(cert), "FHIR_SCHED_MLLP_TLS_KEY": str(key)}
    with hl7_server(store_kind, mongo_uri, env=env) as (proc, port):
        path = tmp_path / "one.hl7"
        path.write_bytes(s12(4))
        done = subprocess.run([sys.executable, "-m", "fhir_sched.cli", "hl7v2", "send",
                               str(path), "--to", f"127.0.0.1:{port}", "--tls", "--tls-ca",
                               str(cert)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "MSA|AA|MSG4" in done.stdout
        plain = RawPeer(port)  # a plain-text sender on the TLS port gets no ACK
        try:
            plain.sock.settimeout(3)
            plain.sock.sendall(frame(s12(5)))
            with pytest.raises((ConnectionError, TimeoutError, OSError)):
                plain.ack()
        finally:
            plain.close()
        assert len(appointments(proc.base, identifier=f"{FILLER}|F5")) == 0


def test_kill_9_while_streaming_loses_no_acked_message_and_applies_each_once(
        store_kind: str, mongo_uri: str | None) -> None:
    # 2,000 messages as the issue asks on SQLite and on a real mongod (MONGODB_URI); SecantusDB,
    # a Python server, slows as its collections grow (3 messages/s by a few hundred), and a
    # transaction the kill leaves open stalls every write for its 60 s lifetime, so the test
    # stream there is shorter: the same kill in mid-stream, the same resend, the same
    # exactly-once check.
    slow = store_kind == "mongo" and not os.environ.get("MONGODB_URI")
    total, kill_after = (200, 80) if slow else (2000, 700)
    url = store_url(store_kind, mongo_uri, "fhir_sched_kill")
    acked: set[int] = set()
    try:
        with hl7_server(store_kind, mongo_uri, url=url) as (proc, port):
            peer = RawPeer(port)
            for n in range(kill_after):
                assert msa(peer.send(s12(n)))[1] == "AA"
                acked.add(n)
            # Messages in flight when the process dies: sent, never answered.
            peer.sock.sendall(b"".join(frame(s12(n)) for n in range(kill_after, kill_after + 50)))
            proc.kill()
            peer.close()
        with hl7_server(store_kind, mongo_uri, url=url) as (proc, port):
            count = web.get(f"{proc.base}/Appointment", params={"_summary": "count"}).json()
            assert count["total"] >= len(acked)
            peer = RawPeer(port)
            # A transaction the killed process left open can hold what it touched until the
            # database expires it (MongoDB: transactionLifetimeLimitSeconds, 60 s), so the first
            # messages after the restart may wait that long, or be refused AR 207 (store busy)
            # and resent; the sender keeps at it.
            peer.sock.settimeout(90)
            try:
                # The sender resends everything not ACKed, and a few that were.
                for n in [*range(kill_after - 5, kill_after), *range(kill_after, total)]:
                    assert msa(peer.deliver(s12(n)))[1] == "AA"
            finally:
                peer.close()
            count = web.get(f"{proc.base}/Appointment", params={"_summary": "count"}).json()
            assert count["total"] == total
            seen: list[str] = []
            link: str | None = f"{proc.base}/Appointment?_count=1000&_elements=identifier"
            while link:
                bundle = web.get(link, timeout=60).json()
                seen += [i["value"] for e in bundle.get("entry", [])
                         for i in e["resource"]["identifier"] if i["system"] == FILLER]
                link = next((lk["url"] for lk in bundle.get("link", [])
                             if lk["relation"] == "next"), None)
            assert sorted(seen) == sorted(f"F{n}" for n in range(total))
    finally:
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def test_dead_letters_lists_refused_messages_and_replay_applies_them(
        store_kind: str, mongo_uri: str | None, tmp_path: Path) -> None:
    url = store_url(store_kind, mongo_uri, "fhir_sched_dead")
    try:
        with hl7_server(store_kind, mongo_uri, url=url) as (proc, port):
            peer = RawPeer(port)
            try:
                assert msa(peer.send(s12(1)))[1] == "AA"
                # 08:30-08:45, inside message 1's 08:30-09:00 with the same doctor: AE
                assert msa(peer.send(s12(2, minutes=15)))[1] == "AE"
            finally:
                peer.close()
            cli = [sys.executable, "-m", "fhir_sched.cli", "hl7v2", "dead-letters", "--store", url]
            listed = subprocess.run(cli, capture_output=True, text=True, timeout=60)
            assert listed.returncode == 0, listed.stderr
            assert "MSG2" in listed.stdout and "1 refused inbound" in listed.stdout
            # staff cancel the booking in the way, then replay
            first = appointments(proc.base, identifier=f"{FILLER}|F1")[0]
            web.put(f"{proc.base}/Appointment/{first['id']}",
                    json={**first, "status": "cancelled"}, timeout=30).raise_for_status()
            replayed = subprocess.run([*cli, "--replay"], capture_output=True, text=True,
                                      timeout=60)
            assert replayed.returncode == 0, replayed.stdout + replayed.stderr
            assert "AE -> AA" in replayed.stdout
            assert len(appointments(proc.base, identifier=f"{FILLER}|F2")) == 1
    finally:
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])
