"""MLLP framing checked by code nobody here wrote: python-hl7's asyncio MLLP client sends to our
Listener and reads our ACKs; our MllpClient sends to python-hl7's MLLP server; and @medplum/hl7's
Node client (tests/peers/medplum, installed with npm from its lock file on first use) sends
every fixture to our Listener."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import hl7
import hl7.mllp

from fhir_sched.hl7v2 import er7
from fhir_sched.hl7v2.ack import codec_for
from fhir_sched.hl7v2.client import MllpClient
from tests.support.mllp import Recorder, running, siu

FIXTURES = Path(__file__).parent / "fixtures"
MEDPLUM = Path(__file__).parent / "peers" / "medplum"
MESSAGES = sorted([*FIXTURES.glob("siu/*.hl7"), *FIXTURES.glob("siu-vendor/*.hl7")])


def _fixture(path: Path) -> tuple[bytes, str, str]:
    """(raw bytes, MSH-10, codec) of one fixture, read by our parser."""
    raw = path.read_bytes()
    msg = er7.parse(raw)
    return raw, msg.header.control_id, codec_for(msg.header.character_set)


async def test_python_hl7_client_gets_an_aa_for_every_fixture_on_one_connection() -> None:
    assert len(MESSAGES) >= 30
    rec = Recorder()
    async with running(handler=rec) as lst:
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", lst.port)
        for path in MESSAGES:
            raw, control_id, codec = _fixture(path)
            writer.writeblock(raw)
            await writer.drain()
            reader.encoding = codec  # the ACK comes back in the message's own charset
            ack = await asyncio.wait_for(reader.readmessage(), 5)
            assert str(ack["MSA.F1"]) == "AA", path.name
            assert str(ack["MSA.F2"]) == control_id, path.name
            assert str(ack["MSH.F5"]) == str(er7.parse(raw).header.sending_application)
        writer.close()
        await writer.wait_closed()
    assert rec.payloads == [p.read_bytes() for p in MESSAGES]


async def test_python_hl7_client_pipelining_twenty_messages_reads_twenty_acks_in_order() -> None:
    async with running() as lst:
        reader, writer = await hl7.mllp.open_hl7_connection(
            "127.0.0.1", lst.port, encoding="utf-8")
        ids = [f"PIPE{i}" for i in range(20)]
        for cid in ids:
            writer.writemessage(hl7.parse(siu(cid).decode()))
        await writer.drain()
        acks = [await asyncio.wait_for(reader.readmessage(), 5) for _ in ids]
        assert [str(a["MSA.F2"]) for a in acks] == ids
        assert {str(a["MSA.F1"]) for a in acks} == {"AA"}
        writer.close()


async def test_our_client_against_python_hl7_server_pairs_each_ack_with_its_message() -> None:
    received: list[str] = []

    async def serve(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while True:
                message = await reader.readmessage()
                received.append(str(message["MSH.F10"]))
                writer.writemessage(message.create_ack())
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    server = await hl7.mllp.start_hl7_server(serve, "127.0.0.1", 0, encoding="utf-8")
    port = server.sockets[0].getsockname()[1]
    ids = [f"OUT{i}" for i in range(10)]
    async with server, MllpClient("127.0.0.1", port, timeout=5) as client:
        for cid in ids:
            ack = await client.send(siu(cid))
            parsed = hl7.parse(ack.decode("utf-8"))
            assert str(parsed["MSA.F1"]) == "AA"
            assert str(parsed["MSA.F2"]) == cid
    assert received == ids


async def test_python_hl7_server_reads_our_latin1_message_byte_exact() -> None:
    seen: list[bytes] = []

    async def serve(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        block = await reader.readblock()
        seen.append(block)
        message = hl7.parse(block.decode("latin-1"))
        writer.writemessage(message.create_ack())
        await writer.drain()
        writer.close()

    raw = (FIXTURES / "siu-vendor" / "cerner_S13_v251_tq1.hl7").read_bytes()
    server = await hl7.mllp.start_hl7_server(serve, "127.0.0.1", 0, encoding="latin-1")
    port = server.sockets[0].getsockname()[1]
    async with server, MllpClient("127.0.0.1", port, timeout=5) as client:
        ack = await client.send(raw)
    assert seen == [raw]
    assert str(hl7.parse(ack.decode("latin-1"))["MSA.F2"]) == er7.parse(raw).header.control_id


def _medplum_installed() -> Path:
    """The Node peer, installed from its lock file when missing (npm registry needed once)."""
    node = shutil.which("node")
    assert node, "node is needed for the @medplum/hl7 peer test"
    if not (MEDPLUM / "node_modules" / "@medplum" / "hl7").is_dir():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install the @medplum/hl7 peer"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=MEDPLUM, check=True, capture_output=True, timeout=300)
    return Path(node)


async def test_medplum_hl7_client_gets_an_aa_for_every_fixture_on_one_connection() -> None:
    node = _medplum_installed()
    rec = Recorder()
    async with running(handler=rec) as lst:
        proc = await asyncio.create_subprocess_exec(
            str(node), str(MEDPLUM / "send.mjs"), "127.0.0.1", str(lst.port),
            *map(str, MESSAGES), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    lines = [json.loads(line) for line in out.decode().splitlines()]
    expected = [er7.parse(p.read_bytes()).header.control_id for p in MESSAGES]
    assert [(d["msa1"], d["msa2"]) for d in lines] == [("AA", cid) for cid in expected]
    assert [d["sent"] for d in lines] == expected
    assert len(rec.payloads) == len(MESSAGES)  # one connection, one frame per message
