"""Pieces every benchmark script shares: a real server process, percentiles, and loading data
sets through the public store port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import orjson

from fhir_sched.query import IndexEntry
from fhir_sched.search.extract import extract
from fhir_sched.storage.base import DocumentStore, Origin, Record, Unit

# What a generated resource becomes: (type, id, stored body, index entries).
Stored = tuple[str, str, bytes, list[IndexEntry]]
BENCH_ORIGIN = Origin("system/bench", None, "system", None)


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
        # Anonymous unless the caller says otherwise: these measure the server's own work,
        # and a benchmark that wants SMART's cost in its figures sets FHIR_SCHED_AUTH itself.
        env = {**os.environ, "FHIR_SCHED_LOG_LEVEL": "warning", "FHIR_SCHED_AUTH": "none",
               **self.env}
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


def stored(res: dict[str, Any], updated: str) -> Stored:
    """``res`` as the write pipeline stores a first version: with ``meta``, and the index entries
    ``extract`` gives it (cheap enough to run in worker processes)."""
    res["meta"] = {"versionId": "1", "lastUpdated": updated}
    kind = res["resourceType"]
    return kind, res["id"], orjson.dumps(res), list(extract(kind, res))


async def load(store: DocumentStore, chunks: Iterable[list[Stored]], updated: str,
               per_unit: int, advance: Callable[[int], None] = lambda n: None) -> int:
    """Write every resource of ``chunks`` as version 1 through the store port, ``per_unit``
    resources to an atomic unit (``Unit.write_all``: the checks and rows of ``Unit.write``, in
    fewer round trips), so the store keeps its own rows, change log and indexes; returns how
    many were written."""
    written = 0
    for chunk in chunks:
        for start in range(0, len(chunk), per_unit):
            part = chunk[start:start + per_unit]

            async def run(unit: Unit, part: list[Stored] = part) -> None:
                await unit.write_all([(Record(kind, id_, 1, updated, False, body, "POST",
                                              origin=BENCH_ORIGIN), entries, 0)
                                      for kind, id_, body, entries in part])

            await store.atomic(run)
        written += len(chunk)
        advance(len(chunk))
    return written


def meta_path(path: Path) -> Path:
    """Where a generated data set records what it was generated with."""
    return path.with_name(path.name + ".meta.json")


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    meta_path(path).write_text(json.dumps(meta))


def read_meta(path: Path) -> dict[str, Any] | None:
    """The meta of a complete earlier generation of ``path``, else None."""
    try:
        meta: dict[str, Any] = json.loads(meta_path(path).read_text())
    except (OSError, ValueError):
        return None
    return meta if path.exists() else None
