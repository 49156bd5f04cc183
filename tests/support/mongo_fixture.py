"""Which stores the suite runs against, and a real MongoDB-wire server when MongoDB is one.

SQLite always; MongoDB whenever the adapter exists. Against ``MONGODB_URI`` when it is set (a real
``mongod`` replica set), otherwise against a SecantusDB process started here: a real server over
a socket, never a mock, so transactions, write conflicts and unique indexes are the database's
own. It starts only when a MongoDB-parametrised test runs, and a failure to start fails the run
loudly: a suite that skipped its MongoDB half would report green while proving nothing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from tests.support.server import free_port


def _store_kinds() -> list[str]:
    kinds = ["sqlite"]
    if importlib.util.find_spec("fhir_sched.storage.mongo") is not None:
        kinds.append("mongo")
    return kinds


STORE_KINDS = _store_kinds()


def _secantus_command() -> str:
    beside = Path(sys.executable).with_name("secantusd-py")
    found = str(beside) if beside.exists() else shutil.which("secantusd-py")
    if found is None:
        raise RuntimeError("secantusd-py not found: install the test extras "
                           "(pip install -e '.[test]') or set MONGODB_URI")
    return found


@dataclass
class SecantusServer:
    """One SecantusDB process; stop/start keep port and storage, as a database restart does."""

    port: int = field(default_factory=free_port)
    storage: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="secantus-")))
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.storage.with_name(self.storage.name + ".log")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 30.0) -> SecantusServer:
        cmd = [_secantus_command(), "--host", "127.0.0.1", "--port", str(self.port),
               "--storage-path", str(self.storage / "data"), "--log-level", "WARNING",
               *self.extra_args]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SecantusDB exited at start (code {self.proc.returncode}):\n"
                                   f"{self.log()[-4000:]}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"SecantusDB did not answer hello within {timeout}s:\n"
                           f"{self.log()[-4000:]}")

    def _answers(self) -> bool:
        client: MongoClient[dict[str, object]] = MongoClient(
            self.uri, serverSelectionTimeoutMS=300, directConnection=True)
        try:
            client.admin.command("hello")
            return True
        except PyMongoError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.storage, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session", params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def secantus() -> Iterator[SecantusServer]:
    """The session's SecantusDB; requested (and so started) only by MongoDB tests."""
    server = SecantusServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def mongo_uri(store_kind: str, request: pytest.FixtureRequest) -> str | None:
    if store_kind != "mongo":
        return None
    return os.environ.get("MONGODB_URI") or request.getfixturevalue("secantus").uri
