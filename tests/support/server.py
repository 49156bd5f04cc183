"""Start real ``fhir-sched serve`` processes (uvicorn over a socket) for integration tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fhir_sched.settings import Settings
from fhir_sched.storage import open_store
from fhir_sched.storage.base import DocumentStore
from tests.support import web
from tests.support.client import fhir_client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    store: str
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # An ASGI app factory ("module:function") to run under uvicorn instead of `fhir-sched
    # serve`, for a server composed differently (another authorization policy); it reads its
    # settings from FHIR_SCHED_* like serve does.
    factory: str | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        fd, log = tempfile.mkstemp(prefix="fhir-sched-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log)
        env = {**os.environ, "FHIR_SCHED_LOG_LEVEL": "warning", **self.env}
        cmd = [sys.executable, "-m", "fhir_sched.cli", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--store", self.store]
        if self.factory:
            env["FHIR_SCHED_STORE"] = self.store
            cmd = [sys.executable, "-m", "uvicorn", "--factory", self.factory, "--host",
                   "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if web.get(f"{self.base}/metadata", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def log_with(self, text: str, timeout: float = 10.0) -> str:
        """The log once ``text`` is in it: lines are written by the server's log thread, a
        moment after the response that caused them."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return log

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def kill(self) -> None:
        """A crash, not a shutdown: nothing gets to flush."""
        self.stop(signal.SIGKILL)


def sqlite_url(directory: str) -> str:
    return f"sqlite:///{directory}/fhir.db"


def cleanup_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------ stores and server sets


def store_url(kind: str, mongo_uri: str | None, name: str) -> str:
    """A fresh, empty database of ``kind`` (SQLite file or MongoDB database)."""
    if kind == "sqlite":
        return sqlite_url(tempfile.mkdtemp(prefix="fhir-sched-"))
    assert mongo_uri is not None, "store_kind is mongo but no MongoDB URI was provided"
    base = mongo_uri.rstrip("/").split("?")[0]
    if base.count("/") > 2:
        base = base.rsplit("/", 1)[0]
    return f"{base}/{name}_{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def served(store_kind: str, mongo_uri: str | None, name: str,
           env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """One real server on a fresh database of ``store_kind``, removed afterwards."""
    url = store_url(store_kind, mongo_uri, name)
    proc = ServerProcess(url, env=dict(env or {})).start()
    try:
        yield proc
    finally:
        proc.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@contextlib.contextmanager
def servers(url: str, n: int = 1, env: dict[str, str] | None = None
            ) -> Iterator[list[ServerProcess]]:
    """``n`` real ``fhir-sched serve`` processes sharing the database at ``url``."""
    procs: list[ServerProcess] = []
    try:
        for _ in range(n):
            procs.append(ServerProcess(url, env=dict(env or {})).start())
        yield procs
    finally:
        for p in procs:
            p.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@contextlib.asynccontextmanager
async def clients(procs: list[ServerProcess], schema: Any
                  ) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One schema-checking client per server, with room for 100 requests in flight."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with contextlib.AsyncExitStack() as stack:
        out = [await stack.enter_async_context(
            fhir_client(p.base, schema, limits=limits)) for p in procs]
        yield out


@contextlib.asynccontextmanager
async def opened_store(url: str) -> AsyncIterator[DocumentStore]:
    """The database a server uses, opened directly, to check what the guard really stored."""
    store = open_store(Settings(store=url))
    await store.start()
    try:
        yield store
    finally:
        await store.close()
