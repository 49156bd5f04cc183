"""Bulk Data ``$export`` jobs (FHIR Bulk Data Access 2.0): kicked off, run in the background,
polled, downloaded, deleted.

A job's state is kept in the store (a mark, ``bulk-export/<id>``), so any server process on
the store answers its status; its files are written under ``FHIR_SCHED_EXPORT_DIR``, which
several machines must share for any of them to serve the files. The job runs in the process
that accepted it, at most ``RUNNING`` at once per process (the rest wait their turn), and
writes a heartbeat as it goes: a job whose process died stops beating and is reported as an
error, so a client never polls forever. Jobs and their files are deleted ``ttl`` after they
finish, and a client may delete its own at any time. Only the caller that kicked a job off
sees it: anyone else is told it does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from ..context import RequestContext
from ..errors import FhirError
from ..ids import unique_id
from ..logsafe import describe
from ..storage.base import DocumentStore, Unit
from ..timeutil import format_instant, now_instant, parse_instant
from .bulk import export_ndjson, in_some_patient_compartment

log = logging.getLogger("fhir_sched.export")
T = TypeVar("T")

PREFIX = "bulk-export/"
RUNNING = 2  # jobs one process runs at once
PER_CALLER = 5  # unfinished jobs one caller may have
STALE = timedelta(minutes=2)  # a running job without a heartbeat this long has died
# A queued job waits for its process's turn (RUNNING at a time) without beating; one queued
# this long belonged to a process that is gone.
QUEUED_STALE = timedelta(hours=1)


@dataclass(slots=True)
class Job:
    id: str
    owner: str  # subject|client id of the caller who kicked it off
    level: str  # "system" or "patient"
    types: list[str]
    since: str | None
    request: str  # the kick-off URL, echoed in the manifest
    created: str
    state: str = "queued"  # queued, running, done, error
    heartbeat: str = ""
    transaction_time: str = ""
    done_types: int = 0
    output: list[dict[str, Any]] = field(default_factory=list)  # {type, count}
    error: str = ""
    finished: str = ""

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, raw: str) -> Job:
        return cls(**orjson.loads(raw))


def owner_of(ctx: RequestContext) -> str:
    return f"{ctx.subject}|{ctx.client_id or ''}"


class ExportJobs:
    def __init__(self, store: DocumentStore, directory: Path, ttl: timedelta) -> None:
        self.store = store
        self.directory = directory
        self.ttl = ttl
        self._gate = asyncio.Semaphore(RUNNING)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._beats: set[asyncio.Task[None]] = set()

    async def start(self, ctx: RequestContext, level: str, types: list[str],
                    since: str | None, request: str) -> Job:
        await self.purge_expired()
        owner = owner_of(ctx)
        mine = [j for j in await self._all() if j.owner == owner
                and j.state in ("queued", "running") and not self._dead(j)]
        if len(mine) >= PER_CALLER:
            raise FhirError(429, "throttled", f"{len(mine)} exports of yours are still "
                            "running; wait for one to finish or delete one",
                            headers={"Retry-After": "30"})
        job = Job(unique_id(), owner, level, types, since, request, now_instant())
        await self._save(job)
        self._tasks[job.id] = asyncio.get_running_loop().create_task(self._run(job))
        return job

    async def get(self, ctx: RequestContext, id_: str) -> Job:
        raw = await self._atomic(lambda u: u.mark_get(PREFIX + id_)) if _plain(id_) else None
        job = Job.from_json(raw) if raw else None
        if job is None or job.owner != owner_of(ctx):
            raise FhirError(404, "not-found", f"no export job {id_!r} of yours")
        if job.state in ("queued", "running") and self._dead(job):
            job.state, job.error = "error", ("the server running this export stopped before "
                                             "it finished; start the export again")
        return job

    async def delete(self, ctx: RequestContext, id_: str) -> None:
        job = await self.get(ctx, id_)
        task = self._tasks.pop(job.id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._atomic(lambda u: u.mark_delete(PREFIX + job.id))
        await asyncio.to_thread(shutil.rmtree, self.directory / job.id, True)

    def file(self, job: Job, type_: str) -> Path:
        if job.state != "done" or not any(o["type"] == type_ for o in job.output):
            raise FhirError(404, "not-found", f"export {job.id} has no {type_} file")
        return self.directory / job.id / f"{type_}.ndjson"

    async def purge_expired(self) -> int:
        now = datetime.now(UTC)
        gone = 0
        for job in await self._all():
            ended = job.finished or (job.created if self._dead(job) else "")
            if ended and parse_instant(ended) + self.ttl < now:
                key = PREFIX + job.id
                await self._atomic(lambda u, key=key: u.mark_delete(key))  # type: ignore[misc]
                await asyncio.to_thread(shutil.rmtree, self.directory / job.id, True)
                gone += 1
        return gone

    async def close(self) -> None:
        """Stop this process's jobs (shutdown); they read as stopped to whoever polls."""
        for task in self._tasks.values():
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # -- running -------------------------------------------------------------------------------
    async def _run(self, job: Job) -> None:
        try:
            async with self._gate:
                job.state, job.heartbeat = "running", now_instant()
                job.transaction_time = job.heartbeat
                await self._save(job)
                keep = in_some_patient_compartment if job.level == "patient" else None
                target = self.directory / job.id
                loop = asyncio.get_running_loop()
                last = loop.time()

                def beat(_type: str, _n: int) -> None:
                    """Every page: a heartbeat at most every 30 s, so a long type does not
                    read as a dead job."""
                    nonlocal last
                    if loop.time() - last > 30:
                        last = loop.time()
                        job.heartbeat = now_instant()
                        saving = loop.create_task(self._save(job))
                        self._beats.add(saving)
                        saving.add_done_callback(self._beats.discard)

                for type_ in job.types:
                    counts = await export_ndjson(self.store, target, [type_], job.since,
                                                 beat, keep=keep)
                    if counts.get(type_):
                        job.output.append({"type": type_, "count": counts[type_]})
                    job.done_types += 1
                    job.heartbeat = now_instant()
                    await self._save(job)
                job.state, job.finished = "done", now_instant()
                await self._save(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # recorded for the client; logged without its message
            log.error("export %s failed: %s", job.id, describe(exc))
            job.state, job.error, job.finished = "error", "the export failed", now_instant()
            with contextlib.suppress(Exception):
                await self._save(job)
        finally:
            self._tasks.pop(job.id, None)

    def _dead(self, job: Job) -> bool:
        """An unfinished job no live process is running (this one's tasks are known)."""
        if job.id in self._tasks or job.state not in ("queued", "running"):
            return False
        beat, patience = ((job.created, QUEUED_STALE) if job.state == "queued"
                          else (job.heartbeat, STALE))
        return parse_instant(beat) + patience < datetime.now(UTC)

    async def _save(self, job: Job) -> None:
        text = job.to_json()
        await self._atomic(lambda u: u.mark_put(PREFIX + job.id, text))

    async def _all(self) -> list[Job]:
        marks = await self._atomic(lambda u: u.mark_list(PREFIX, limit=10_000))
        return [Job.from_json(v) for _, v in marks]

    async def _atomic(self, fn: Callable[[Unit], Awaitable[T]]) -> T:
        return await self.store.atomic(fn)


def _plain(id_: str) -> bool:
    return 0 < len(id_) <= 64 and id_.isalnum()


def expires(job: Job, ttl: timedelta) -> str:
    return format_instant(parse_instant(job.finished or job.created) + ttl)
