"""``fhir-sched hl7v2 send FILE --to host:port``: replay a file of messages to an MLLP peer.

For an interface analyst testing a feed: each message goes out on one persistent connection and
its ACK is printed (segments on their own lines) before the next is sent, so the output reads as
a conversation. The exit status says how it went: 0 when every ACK accepted (AA/CA), 1 when any
said AE/AR/CE/CR, 2 when the peer could not be reached or stopped answering.
"""

from __future__ import annotations

import ssl
import sys
from pathlib import Path
from typing import TextIO

from fhir_sched.hl7v2.batch import split_messages
from fhir_sched.hl7v2.client import MllpClient, MllpError, parse_address


def ack_code(ack: bytes) -> str:
    """MSA-1 of an ACK (its first field), "" when there is no MSA segment."""
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA") and len(segment) > 4:
            return segment[4:].split(segment[3:4])[0].decode("latin-1").strip()
    return ""


def _readable(ack: bytes) -> str:
    return ack.decode("utf-8", errors="replace").replace("\r\n", "\r").replace("\r", "\n").strip()


async def send_file(path: str, to: str, *, timeout: float = 30.0, tls: bool = False,
                    ca_file: str | None = None, out: TextIO = sys.stdout) -> int:
    try:
        body = Path(path).read_bytes()
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    messages = split_messages(body)
    if not messages:
        print(f"{path} holds no HL7 v2 message (nothing starts with MSH)", file=sys.stderr)
        return 2
    host, port = parse_address(to)
    context: ssl.SSLContext | None = None
    if tls or to.lower().startswith("mllps://"):
        context = ssl.create_default_context(cafile=ca_file)
    worst = 0
    client = MllpClient(host, port, timeout=timeout, ssl_context=context)
    n = 0
    try:
        for n, message in enumerate(messages, 1):
            ack = await client.send(message)
            code = ack_code(ack)
            print(f"--- message {n}: {code or 'no MSA'}", file=out)
            print(_readable(ack), file=out, flush=True)
            if code not in ("AA", "CA"):
                worst = 1
    except MllpError as exc:
        print(f"message {n}: {exc}", file=sys.stderr)
        return 2
    finally:
        await client.close()
    return worst
