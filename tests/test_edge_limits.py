"""Limits at the edge, over raw sockets against a real server with short limits: a client that
trickles its headers (slowloris), says nothing, never finishes its body, or sends too many or
too large headers is cut off with 408/431 and the connection closed, while other clients are
served meanwhile; keep-alive between prompt requests still works. The request time limit is
checked on the middleware itself, with a handler that never ends."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from fhir_sched.rest.middleware import FrontDoor
from tests.support import web
from tests.support.server import ServerProcess

HEADER_SECONDS, BODY_SECONDS = 1, 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("edge")
    proc = ServerProcess(f"sqlite:///{root}/edge.db", env={
        "FHIR_SCHED_AUTH": "none", "FHIR_SCHED_HTTP_HEADER_SECONDS": str(HEADER_SECONDS),
        "FHIR_SCHED_HTTP_BODY_SECONDS": str(BODY_SECONDS)}).start()
    yield proc
    proc.stop()


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=15)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def trickle(sock: socket.socket, data: bytes, every: float, stop: threading.Event) -> None:
    for byte in data:
        if stop.is_set():
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        time.sleep(every)


def test_headers_trickled_a_byte_at_a_time_are_cut_off_with_408(server: ServerProcess) -> None:
    sock = connect(server)
    stop = threading.Event()
    sender = threading.Thread(target=trickle, args=(
        sock, b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200,
        0.2, stop), daemon=True)
    sender.start()
    try:
        # another client is served while the slow one holds its connection
        assert web.get(f"{server.base}/metadata").status_code == 200
        answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    finally:
        stop.set()
        sock.close()


def test_a_connection_that_says_nothing_is_closed(server: ServerProcess) -> None:
    with connect(server) as sock:
        assert sock.recv(1) == b""  # the server closed it (our own 15 s timeout would raise)


def test_a_body_that_never_ends_is_cut_off_with_408(server: ServerProcess) -> None:
    sock = connect(server)
    sock.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: localhost\r\n"
                 b"Content-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n")
    stop = threading.Event()
    sender = threading.Thread(target=trickle, args=(sock, b"1\r\n \r\n" * 200, 0.05, stop),
                              daemon=True)
    sender.start()
    try:
        assert web.get(f"{server.base}/metadata").status_code == 200
        answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    finally:
        stop.set()
        sock.close()


@pytest.mark.parametrize("headers", [
    b"".join(b"X-H%d: v\r\n" % n for n in range(150)),
    b"X-Big: " + b"b" * 20_000 + b"\r\n",
])
def test_too_many_or_too_large_headers_are_a_431(server: ServerProcess, headers: bytes) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\n" + headers +
                     b"\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]


def test_keep_alive_between_prompt_requests_still_works(server: ServerProcess) -> None:
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(rest) < length:
                rest += sock.recv(65536)
            time.sleep(HEADER_SECONDS * 0.6)  # idle between requests, under the limits


def test_a_request_running_past_its_time_is_stopped_with_a_503() -> None:
    async def forever(scope: object, receive: object, send: object) -> None:
        await asyncio.sleep(3600)

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    app = FrontDoor(forever, request_seconds=0.2)  # type: ignore[arg-type]
    asyncio.run(app({"type": "http", "method": "GET", "path": "/fhir/Patient", "headers": [],
                     "state": {}}, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 503
    assert b'"code":"timeout"' in sent[1]["body"]  # type: ignore[operator]
