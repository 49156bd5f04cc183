"""Outbound SIU from a real ``fhir-sched serve`` to a real receiver process (python-hl7's MLLP
server): order, version, retries, dead letters and their replay, no echo, resume after restart.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import web
from tests.support.server import ServerProcess, cleanup_dir, free_port, store_url

EXT = "https://fhir-sched.org/fhir/StructureDefinition/"
FAST = {"FHIR_SCHED_HL7V2_RETRY_MS": "100", "FHIR_SCHED_HL7V2_MAX_ATTEMPTS": "3"}


class Receiver:
    """``python -m tests.support.mllp_receiver`` on a port, writing what it gets to a file."""

    def __init__(self, port: int | None = None, fail: int = 0) -> None:
        self.port = port or free_port()
        self.fail = fail
        self.out = Path(tempfile.mkstemp(prefix="mllp-recv-", suffix=".jsonl")[1])
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Receiver:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.mllp_receiver", "--port", str(self.port),
             "--out", str(self.out), "--fail", str(self.fail)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=Path(__file__).parent.parent)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "ready" in line, line
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def received(self) -> list[dict[str, Any]]:
        text = self.out.read_text(encoding="utf-8") if self.out.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line]

    def wait_for(self, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"receiver got {len(self.received())} of {n}: {self.received()}")


@contextlib.contextmanager
def receiver(port: int | None = None, fail: int = 0) -> Iterator[Receiver]:
    r = Receiver(port, fail).start()
    try:
        yield r
    finally:
        r.stop()
        r.out.unlink(missing_ok=True)


@contextlib.contextmanager
def server(store_kind: str, mongo_uri: str | None, url: str | None = None,
           env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    owned = url is None
    url = url or store_url(store_kind, mongo_uri, "fhir_sched_out")
    proc = ServerProcess(url, env={**FAST, **(env or {})}).start()
    try:
        yield proc
    finally:
        proc.stop()
        if owned and url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def endpoint(base: str, id_: str, port: int, *, version: str = "2.5.1", application: str = "",
             filters: tuple[str, ...] = ()) -> None:
    ext: list[dict[str, Any]] = [{"url": EXT + "hl7v2-version", "valueCode": version}]
    if application:
        ext.append({"url": EXT + "hl7v2-peer", "extension": [
            {"url": "application", "valueString": application}]})
    ext += [{"url": EXT + "hl7v2-filter", "valueReference": {"reference": f}} for f in filters]
    body = {"resourceType": "Endpoint", "id": id_, "status": "active", "extension": ext,
            "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/"
                                         "endpoint-connection-type", "code": "hl7v2-mllp"},
            "payloadType": [{"text": "SIU"}], "address": f"mllp://127.0.0.1:{port}"}
    web.put(f"{base}/Endpoint/{id_}", json=body, timeout=30).raise_for_status()


def people(base: str) -> None:
    for type_, body in (("Patient", {"name": [{"family": "Doe", "given": ["Jane"]}],
                                     "identifier": [{"system": "urn:mrn", "value": "M1"}]}),
                        ("Practitioner", {"name": [{"family": "Smith"}]}),
                        ("Location", {"name": "Room 1"})):
        web.put(f"{base}/{type_}/x1", json={"resourceType": type_, "id": "x1", **body},
                timeout=30).raise_for_status()


def book(base: str, id_: str, start: str = "2037-03-02T09:00:00+00:00",
         end: str = "2037-03-02T09:30:00+00:00", status: str = "booked",
         location: bool = False) -> None:
    participants = [{"actor": {"reference": "Patient/x1"}, "status": "accepted"},
                    {"actor": {"reference": "Practitioner/x1"}, "status": "accepted"}]
    if location:
        participants.append({"actor": {"reference": "Location/x1"}, "status": "accepted"})
    web.put(f"{base}/Appointment/{id_}", json={
        "resourceType": "Appointment", "id": id_, "status": status, "start": start, "end": end,
        "participant": participants}, timeout=30).raise_for_status()


def segment(message: str, name: str) -> list[str] | None:
    for seg in message.replace("\n", "\r").split("\r"):
        if seg.startswith(name + "|"):
            return seg.split("|")
    return None


def test_create_move_cancel_arrive_as_s12_s13_s15_in_order(
        store_kind: str, mongo_uri: str | None) -> None:
    with receiver() as r, server(store_kind, mongo_uri) as s:
        endpoint(s.base, "ehr", r.port)
        people(s.base)
        book(s.base, "a1")
        book(s.base, "a1", start="2037-03-02T10:00:00+00:00", end="2037-03-02T10:30:00+00:00")
        book(s.base, "a1", start="2037-03-02T10:00:00+00:00", end="2037-03-02T10:30:00+00:00",
             status="cancelled")
        got = r.wait_for(3)
        assert [m["event"] for m in got] == ["S12", "S13", "S15"]
        tq1 = segment(got[1]["message"], "TQ1")
        assert tq1 is not None and tq1[7].startswith("20370302100000")
        pid = segment(got[0]["message"], "PID")
        assert pid is not None and pid[3].startswith("M1^")


def audit_events(base: str, subtype: str, want: int) -> list[dict[str, Any]]:
    """The AuditEvents of ``subtype`` (auth is off here, so anyone may read them), once there
    are ``want`` of them: the delivery is recorded just after the receiver's ACK."""
    deadline = time.monotonic() + 15
    while True:
        bundle = web.get(f"{base}/AuditEvent", params={"subtype": subtype}, timeout=30).json()
        found = [e["resource"] for e in bundle.get("entry", [])]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_each_delivered_message_is_audited_as_an_export_for_its_patient(
        store_kind: str, mongo_uri: str | None) -> None:
    with receiver() as r, server(store_kind, mongo_uri) as s:
        endpoint(s.base, "ehr", r.port)
        people(s.base)
        book(s.base, "a1")
        r.wait_for(1)
        found = audit_events(s.base, "hl7v2-out/SIU^S12", 1)
        assert len(found) == 1
        event = found[0]
        assert event["type"]["code"] == "110106" and event["outcome"] == "0"
        refs = {e["what"].get("reference") for e in event["entity"]}
        assert {"Appointment/a1", "Patient/x1"} <= refs
        assert "Endpoint/ehr" in json.dumps(event)
        assert "Doe" not in json.dumps(event)  # the patient is a reference, never a name


def test_the_endpoint_version_decides_tq1_or_sch_11(store_kind: str,
                                                      mongo_uri: str | None) -> None:
    with receiver() as old, receiver() as new, server(store_kind, mongo_uri) as s:
        endpoint(s.base, "old", old.port, version="2.3")
        endpoint(s.base, "new", new.port, version="2.5.1")
        people(s.base)
        book(s.base, "a2")
        m23, m251 = old.wait_for(1)[0]["message"], new.wait_for(1)[0]["message"]
        assert segment(m23, "TQ1") is None
        sch = segment(m23, "SCH")
        assert sch is not None and "20370302090000" in sch[11]
        assert segment(m251, "TQ1") is not None
        assert segment(m251, "MSH")[11] == "2.5.1"  # type: ignore[index]


def test_an_ae_is_retried_until_aa_and_the_next_message_waits(
        store_kind: str, mongo_uri: str | None) -> None:
    with receiver(fail=2) as r, server(store_kind, mongo_uri) as s:
        endpoint(s.base, "ehr", r.port)
        people(s.base)
        book(s.base, "a3")
        book(s.base, "a4", start="2037-03-02T11:00:00+00:00", end="2037-03-02T11:30:00+00:00")
        got = r.wait_for(4)
        first = got[0]["control_id"]
        assert [m["control_id"] for m in got[:3]] == [first] * 3
        assert [m["code"] for m in got[:3]] == ["AE", "AE", "AA"]
        assert got[3]["control_id"] != first


def test_a_receiver_that_is_down_gets_the_message_when_it_comes_up(
        store_kind: str, mongo_uri: str | None) -> None:
    port = free_port()
    with server(store_kind, mongo_uri, env={"FHIR_SCHED_HL7V2_MAX_ATTEMPTS": "50"}) as s:
        endpoint(s.base, "ehr", port)
        people(s.base)
        book(s.base, "a5")
        time.sleep(0.5)  # a few refused connections
        with receiver(port) as r:
            got = r.wait_for(1)
            assert got[0]["event"] == "S12"


def test_dead_letters_are_listed_and_a_replay_delivers_them(
        store_kind: str, mongo_uri: str | None) -> None:
    url = store_url(store_kind, mongo_uri, "fhir_sched_out_dead")
    port = free_port()
    try:
        with server(store_kind, mongo_uri, url=url) as s:
            with receiver(port, fail=1000) as r:
                endpoint(s.base, "ehr", port)
                people(s.base)
                book(s.base, "a6")
                r.wait_for(3)  # three attempts, then dead
                dead = audit_events(s.base, "hl7v2-out/SIU^S12", 1)
                assert [e["outcome"] for e in dead] == ["4"]
            cli = [sys.executable, "-m", "fhir_sched.cli", "hl7v2", "dead-letters", "--store",
                   url]
            listed = subprocess.run(cli, capture_output=True, text=True, timeout=60)
            assert listed.returncode == 0, listed.stderr
            assert "outbound" in listed.stdout and "S12" in listed.stdout
            with receiver(port) as r:
                replayed = subprocess.run([*cli, "--replay"], capture_output=True, text=True,
                                          timeout=60)
                assert "1 outbound queued again" in replayed.stdout, replayed.stdout
                got = r.wait_for(1)
                assert got[0]["event"] == "S12" and got[0]["code"] == "AA"
    finally:
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def s12_from(application: str, n: int) -> bytes:
    segments = [
        f"MSH|^~\\&|{application}|NORTH|FHIRSCHED|HOSP|20370101120000||SIU^S12^SIU_S12|E{n}|P|2.5.1",
        f"SCH|P{n}^{application}|F{n}^{application}|||||||30|min|||||||||||||||Booked",
        "TQ1|1||||||20370303090000+0000|20370303093000+0000",
        f"PID|1||MRN{n}^^^{application}^MR||Roe^Rick||19800101|M",
        "RGS|1",
    ]
    return ("\r".join(segments) + "\r").encode()


def test_a_change_is_never_echoed_to_the_system_that_sent_it(
        store_kind: str, mongo_uri: str | None) -> None:
    mllp = free_port()
    with receiver() as a, receiver() as b, server(
            store_kind, mongo_uri, env={"FHIR_SCHED_MLLP_PORT": str(mllp)}) as s:
        endpoint(s.base, "ehr-a", a.port, application="EHRA")
        endpoint(s.base, "ehr-b", b.port, application="EHRB")
        with socket.create_connection(("127.0.0.1", mllp), timeout=10) as sock:
            sock.sendall(b"\x0b" + s12_from("EHRA", 1) + b"\x1c\x0d")
            assert b"MSA|AA|E1" in sock.recv(65536)
        got = b.wait_for(1)
        assert got[0]["event"] == "S12"
        people(s.base)
        book(s.base, "a7")  # a REST change goes to both
        a_got = a.wait_for(1)
        b.wait_for(2)
        assert len(a_got) == 1 and "a7" in a_got[0]["message"]


def test_filters_send_only_the_appointments_of_a_location(store_kind: str,
                                                          mongo_uri: str | None) -> None:
    with receiver() as r, server(store_kind, mongo_uri) as s:
        people(s.base)
        endpoint(s.base, "room", r.port, filters=("Location/x1",))
        book(s.base, "a8")
        book(s.base, "a9", start="2037-03-02T12:00:00+00:00", end="2037-03-02T12:30:00+00:00",
             location=True)
        got = r.wait_for(1)
        time.sleep(0.5)
        assert [m for m in r.received() if "a8^" in m["message"]] == []
        assert "a9^" in got[0]["message"]


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True, scope="session")
def test_pending_messages_survive_a_restart_and_are_delivered_once(
        store_kind: str, mongo_uri: str | None) -> None:
    directory = tempfile.mkdtemp(prefix="fhir-sched-out-")
    url = f"sqlite:///{directory}/fhir.db"
    port = free_port()
    try:
        with server(store_kind, mongo_uri, url=url,
                    env={"FHIR_SCHED_HL7V2_MAX_ATTEMPTS": "1000"}) as s:
            endpoint(s.base, "ehr", port)
            people(s.base)
            for n in range(10):
                book(s.base, f"r{n}", start=f"2037-03-04T{8 + n:02d}:00:00+00:00",
                     end=f"2037-03-04T{8 + n:02d}:30:00+00:00")
            time.sleep(0.3)
        with receiver(port) as r, server(store_kind, mongo_uri, url=url):
            got = r.wait_for(10)
            time.sleep(0.5)
            ids = [m["control_id"] for m in r.received()]
            assert len(ids) == len(set(ids)) == 10
            assert [m["event"] for m in got] == ["S12"] * 10
    finally:
        cleanup_dir(directory)
