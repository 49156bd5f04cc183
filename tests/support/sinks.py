"""Real receivers for what the server sends: an SMTP server (aiosmtpd) that keeps every
message it accepts, and an HTTP receiver that keeps every request and answers from a script
(so a test can make the first attempts fail and see the retries)."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.server import free_port


@dataclass
class Mail:
    envelope_to: list[str]
    message: EmailMessage

    def part(self, content_type: str) -> Any:
        for part in self.message.walk():
            if part.get_content_type() == content_type:
                return part
        return None


class SmtpSink:
    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.lock = threading.Lock()
        self.port = free_port()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                with sink.lock:
                    sink.mails.append(Mail(list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def to(self, address: str) -> list[Mail]:
        with self.lock:
            return [m for m in self.mails if address in m.envelope_to]

    def wait_for(self, address: str, n: int = 1, timeout: float = 20.0) -> list[Mail]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.to(address)
            if len(found) >= n:
                return found
            time.sleep(0.05)
        return self.to(address)


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpSink:
    """Answers each request with ``script(hit, n)`` -> status (n: how many came before)."""

    script: Callable[[Hit, int], int] = lambda hit, n: 200
    hits: list[Hit] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def __enter__(self) -> HttpSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                hit = Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with lock:
                    n = len(sink.hits)
                    sink.hits.append(hit)
                status = sink.script(hit, n)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, check: Callable[[list[Hit]], bool], timeout: float = 20.0) -> list[Hit]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(list(self.hits)):
                break
            time.sleep(0.05)
        return list(self.hits)
