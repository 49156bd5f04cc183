"""Batching hand-offs to the SQLite threads: units to the writer, point reads to the readers.

A hand-off to a thread costs a queue put, a thread wake-up and a loop wake-up; under load these
batchers make one hand-off serve many requests, and a lone request still goes at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from typing import Any

from ..base import Record
from .faults import translate
from .unit import SqliteUnit, get_current

UnitFn = Callable[[SqliteUnit], Awaitable[Any]]
# Runs a batch of units in one transaction on the writer thread: (ok, value or exception) each.
RunUnits = Callable[[list[UnitFn]], list[tuple[bool, Any]]]


class UnitBatcher:
    """Queues atomic units for the writer thread; whatever queued while a batch was being
    written goes together as the next batch (see ``SqliteStore._run_units``)."""

    def __init__(self, writer: Executor, run_units: RunUnits) -> None:
        self._writer = writer
        self._run_units = run_units
        self._pending: list[tuple[UnitFn, asyncio.Future[Any]]] = []
        self._running = False

    def submit(self, fn: UnitFn) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, fut))
        if not self._running:
            self._dispatch()
        return fut

    def _dispatch(self) -> None:
        batch, self._pending = self._pending, []
        self._running = True
        loop = asyncio.get_running_loop()
        done = self._writer.submit(self._run_units, [fn for fn, _ in batch])
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(self._finish, batch, f))

    def _finish(self, batch: list[tuple[UnitFn, asyncio.Future[Any]]],
                done: Future[list[tuple[bool, Any]]]) -> None:
        self._running = False
        try:
            results = done.result()
        except BaseException as exc:  # the writer thread itself failed
            results = [(False, exc)] * len(batch)
        for (_fn, fut), (ok, value) in zip(batch, results, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if self._pending:
            self._dispatch()


class GetBatcher:
    """Point reads, handed to the reader threads in batches.

    Reads that arrive while earlier batches are in flight wait and go together, so under load
    one hand-off serves many requests; a lone read still goes at once. The lookups never run on
    the event loop.
    """

    MAX_IN_FLIGHT = 1

    def __init__(self, readers: Executor, reader: Callable[[], sqlite3.Connection]) -> None:
        self._readers = readers
        self._reader = reader
        self._pending: list[tuple[str, str, asyncio.Future[Record | None]]] = []
        self._in_flight = 0

    def submit(self, type_: str, id_: str) -> asyncio.Future[Record | None]:
        fut: asyncio.Future[Record | None] = asyncio.get_running_loop().create_future()
        self._pending.append((type_, id_, fut))
        if self._in_flight < self.MAX_IN_FLIGHT:
            self._dispatch()
        return fut

    def _dispatch(self) -> None:
        batch, self._pending = self._pending, []
        self._in_flight += 1
        keys = [(t, i) for t, i, _ in batch]
        loop = asyncio.get_running_loop()
        done = self._readers.submit(self._run, keys)
        done.add_done_callback(
            lambda f: loop.call_soon_threadsafe(self._finish, batch, f))

    def _run(self, keys: list[tuple[str, str]]) -> list[Record | Exception | None]:
        conn = self._reader()
        out: list[Record | Exception | None] = []
        for t, i in keys:
            try:
                out.append(get_current(conn, t, i))
            except sqlite3.Error as exc:
                out.append(translate(exc))
            except Exception as exc:  # delivered to the one request it belongs to
                out.append(exc)
        return out

    def _finish(self, batch: list[tuple[str, str, asyncio.Future[Record | None]]],
                done: Future[list[Record | Exception | None]]) -> None:
        self._in_flight -= 1
        try:
            results: list[Record | Exception | None] = done.result()
        except Exception as exc:  # the executor itself failed (e.g. shut down)
            results = [exc] * len(batch)
        for (_t, _i, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)
        if self._pending and self._in_flight < self.MAX_IN_FLIGHT:
            self._dispatch()
