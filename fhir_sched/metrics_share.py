"""Metrics of every ``--workers`` process in one scrape.

The workers share one listening port, so a scrape of ``/metrics`` reaches whichever worker the
kernel picks; on its own, each would show only its share of the traffic, a different share at
each scrape. Each worker therefore writes its exposition to a shared directory every
``INTERVAL`` seconds, and the worker that answers a scrape serves its own live figures and the
others' latest, each sample labelled ``worker="<pid>"``. Per-worker series rather than sums:
a worker that is restarted starts its counters from zero as a new series, which Prometheus's
``rate()`` and ``sum by`` handle, where a sum that drops when one worker ends would read as a
counter reset of the whole server.

A file is used only while its worker is alive and the file is fresh (``STALE`` seconds); a
worker removes its own at shutdown, and the directory is the ``serve`` parent's, removed when
it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from .metrics import render

INTERVAL = 2.0
STALE = 15.0
SUFFIX = ".prom"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(directory: Path, pid: int) -> None:
    tmp = directory / f".{pid}{SUFFIX}.tmp"
    tmp.write_bytes(render())
    tmp.replace(directory / f"{pid}{SUFFIX}")  # atomic: a reader sees a whole file or none


async def share(directory: Path) -> None:
    """The background job: keep this worker's figures in ``directory`` until cancelled."""
    pid = os.getpid()
    try:
        while True:
            await asyncio.to_thread(_write, directory, pid)
            await asyncio.sleep(INTERVAL)
    finally:
        with contextlib.suppress(OSError):
            (directory / f"{pid}{SUFFIX}").unlink()


def _siblings(directory: Path, own: int) -> list[tuple[int, str]]:
    now = time.time()
    found = []
    for path in directory.glob(f"*{SUFFIX}"):
        try:
            pid = int(path.name[: -len(SUFFIX)])
            if pid == own or not _alive(pid) or now - path.stat().st_mtime > STALE:
                continue
            found.append((pid, path.read_text("utf-8")))
        except (ValueError, OSError):  # not ours, or removed as we looked
            continue
    return found


class _Merged(Collector):
    def __init__(self, texts: list[tuple[int, str]]) -> None:
        self.texts = texts

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for pid, text in self.texts:
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit)
                for s in family.samples:
                    merged.add_sample(s.name, {**s.labels, "worker": str(pid)}, s.value,
                                      s.timestamp, s.exemplar)
        return families.values()


def gather(directory: Path) -> bytes:
    """The exposition of every live worker: this one's live, the others' last written."""
    own = os.getpid()
    texts = [(own, render().decode("utf-8")), *_siblings(directory, own)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(texts))
    return generate_latest(registry)
