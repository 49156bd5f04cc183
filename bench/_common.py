"""Pieces every benchmark script shares: a real server process and percentiles."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Server:
    """A real ``fhir-sched serve`` process on a generated SQLite store."""

    def __init__(self, path: Path, env: dict[str, str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.path = path
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def __enter__(self) -> Server:
        env = {**os.environ, "FHIR_SCHED_LOG_LEVEL": "warning", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fhir_sched.cli", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--store", f"sqlite:///{self.path}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"server exited: {self.log.read().decode(errors='replace')}")
            try:
                if httpx.get(f"{self.base}/metadata", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("server did not start within 60 s")

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
