"""MongoDB adapter: the same port as SQLite, on a replica set or sharded cluster.

Driver: PyMongo's own asyncio API (``pymongo.AsyncMongoClient``). Motor was deprecated by MongoDB
on 2026-05-14 in favour of it, so nothing here uses Motor.

Collections (see ``docs/scaling.md`` for indexes and shard keys):

- ``resources``: the current version of each resource, ``_id`` = ``Type/id``, with ``body`` kept
  as the stored JSON *bytes* (BSON binary). Reads serve those bytes, and keys MongoDB treats
  specially (``$``-prefixed, dotted) inside extensions or ``contained`` never meet BSON key rules.
  Search-index entries live beside the body as ``idx: [{p, s, v, r, lo, hi}]``.
- ``changes``: the change log, ``_id`` = a unique, roughly time-ordered number given when the
  change is written, ``seq`` = its position in the feed, given just after it commits (below);
  each with the ``origin`` (subject, client_id, door, request_id) of its write.
- ``claims``: unique keys (``_id``) with their owner, for booking guards and idempotency.
- ``proposals``: ``$find`` proposals by id (``_id``) with their body and expiry; written
  outside transactions (they are not resources and need no counter).
- ``locks``: one small document per search a unit decided on (below), dropped after an hour.
- ``counters``: one document, ``seq``, the last feed position given. Only numbering passes
  write it, never a unit of work.

Concurrency: each atomic unit is one multi-document transaction on its own snapshot, and units
that touch different documents run side by side, in this process and in others. Snapshot
isolation alone would allow two anomalies a booking server cannot have, so a unit makes what it
reads count as a write:

- a resource it reads (``get``) is touched (``_t`` incremented), so a concurrent unit that
  writes it, or also read it to decide, write-conflicts and runs again on a fresh snapshot (no
  write skew: two bookings that each checked the same Slot cannot both pass);
- a search it decides on (``find_ids``: If-None-Exist, conditional update, the SIU resolver's
  find-or-create; ``count_claims``: capacity) writes a lock document named after the search,
  so two units deciding on the same search are serialised (no phantom: one creates, the other
  finds it).

A unit that loses such a race runs again holding a turn (``turns.Turns``) on every document its
lost attempt touched, so many units of one process racing for one Slot take turns rather than
colliding until their retry budget is spent; the database still settles races between processes.

The feed needs an order no single transaction can give without serialising every writer, so
numbering comes after the commit: a short transaction takes committed changes that have no
``seq`` yet (in ``_id`` order, each resource's versions in version order), numbers them after
the counter and moves the counter, all at once. A writer runs such a pass right after its own
commit (a pass numbers every waiting change, so concurrent writers share one), and every feed
read runs one first, so a change whose writer died after its commit is numbered by the next
reader. Passes serialise on the counter, but they hold it for milliseconds and never while a
unit of work is open. A reader bounded by the counter's majority-committed value therefore sees
every change below it and never finds a smaller number appear later.

Faults: a short server-selection timeout turns a dead database into ``StoreUnavailable``
within seconds, and the driver's monitor reconnects by itself when the database is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

import pymongo
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from ...logsafe import describe
from ...metrics import STORE_RETRIES, timed_store
from ...query import IndexEntry, Page, Query
from ..base import (
    AuditEntry,
    InboundEntry,
    OutboundEntry,
    Record,
    Write,
    stored_origin,
)
from ..errors import QueryTimedOut, StoreUnavailable, VersionConflict
from . import inbox, outbox
from .query import (
    Compiler,
    Filter,
    Pipeline,
    base_filter,
    combine,
    keyset_filter,
    resource_key,
    sort_columns,
)
from .turns import Turns

T = TypeVar("T")
Doc = dict[str, Any]

DEFAULT_DB = "fhir_sched"
# Client options a URL may override. Short server selection so a request meets a dead database
# with a 503 in seconds rather than after the driver's 30 s default, and the driver keeps
# monitoring in the background, so recovery needs no restart.
DEFAULT_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 3000,
    "connectTimeoutMS": 3000,
    "socketTimeoutMS": 20000,
    "retryWrites": True,
    "retryReads": True,
}
# Server error codes meaning "not now" rather than "wrong": shutting down, stepping down,
# no primary, unreachable host. They are served as 503 so clients retry.
UNAVAILABLE_CODES = frozenset({
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
})
WRITE_CONFLICT = 112
# Retry budget for an atomic unit that keeps losing races; past it the client gets a 503.
CONTENTION_SECONDS = 20.0
BACKOFF_BASE, BACKOFF_CAP = 0.002, 0.05
# A numbering pass takes at most this many changes; a longer backlog takes several passes.
NUMBER_BATCH = 1000
# How long a numbering pass keeps trying against other processes' passes before it leaves the
# changes for the next one (the write it follows has committed either way).
NUMBERING_SECONDS = 5.0
# Lock documents matter only while the units that wrote them are open (60 s at most).
LOCK_TTL_SECONDS = 3600
# ``counters.seq.format``: 2 once change documents carry ``seq`` (before, ``_id`` was the seq).
FORMAT = 2
# Change ids before FORMAT 2 were feed positions: small. Newer ones are milliseconds << 20.
_OLD_IDS_BELOW = 1 << 40

log = logging.getLogger("fhir_sched.storage")
# A broken pooled connection (the server restarted) gets this many immediate retries.
CONNECTION_RETRIES = 2

_TXN_READ = ReadConcern("snapshot")
_TXN_WRITE = WriteConcern("majority")
# The change feed reads only what a majority holds: a change a reader has seen can never be
# rolled back by a failover (and its seq then reused for another change).
_FEED_READ = ReadConcern("majority")


class _Retry(Exception):
    """A race the database settled against this unit: run it again on a fresh snapshot."""


def _duplicate_only(exc: BaseException) -> bool:
    """A batch insert that lost a race on a key: as retryable as a single insert's."""
    if isinstance(exc, DuplicateKeyError):
        return True
    return isinstance(exc, BulkWriteError) and all(
        e.get("code") == 11000 for e in exc.details.get("writeErrors", [])) and bool(
        exc.details.get("writeErrors"))


def _change_ids() -> int:
    """The first ``_id`` of a unit's changes: milliseconds, then 20 random bits, so ids are
    unique without asking anyone (a rare collision is a duplicate key, and the unit runs
    again) and roughly in time order, which is the order numbering passes take them in."""
    return (time.time_ns() // 1_000_000) << 20 | secrets.randbits(20)


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionFailure, WTimeoutError, ExecutionTimeout)):
        return True
    return isinstance(exc, OperationFailure) and exc.code in UNAVAILABLE_CODES


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}"


def _client_options(url: str) -> dict[str, Any]:
    """Our defaults for whatever the URL does not set itself (keyword arguments would win)."""
    given = {k.lower() for k, _ in parse_qsl(urlsplit(url).query)}
    return {k: v for k, v in DEFAULT_OPTIONS.items() if k.lower() not in given}


@asynccontextmanager
async def _available() -> AsyncIterator[None]:
    try:
        yield
    except PyMongoError as exc:
        if _unavailable(exc):
            raise StoreUnavailable(f"MongoDB unavailable: {exc}") from exc
        raise


def _entry_doc(entry: IndexEntry) -> Doc:
    doc: Doc = {"p": entry.param}
    for name, value in (("s", entry.sys), ("v", entry.val), ("r", entry.raw),
                        ("lo", entry.lo), ("hi", entry.hi)):
        if value is not None:
            doc[name] = value
    return doc


def _body(doc: Doc) -> bytes | None:
    body = doc.get("body")
    return None if body is None else bytes(body)


def _current_record(doc: Doc) -> Record:
    return Record(doc["type"], doc["id"], doc["version"], doc["updated"], doc["deleted"],
                  _body(doc))


def _change_record(doc: Doc) -> Record:
    method = doc["method"]
    o = doc.get("origin") or {}
    return Record(doc["type"], doc["id"], doc["version"], doc["updated"], method == "DELETE",
                  _body(doc), method, doc.get("seq") or 0,
                  stored_origin(o.get("subject"), o.get("client_id"), o.get("door"),
                                o.get("request_id")))


class _Collection:
    """A collection of the store's database, named after the attribute that holds it."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, store: MongoStore, owner: type) -> AsyncCollection[Doc]:
        return store.db[self.name]


class MongoStore:
    name = "mongo"

    def __init__(self, url: str, search_seconds: float = 10.0) -> None:
        self.url = url
        self.search_seconds = search_seconds
        self._client: AsyncMongoClient[Doc] | None = None
        self._db: AsyncDatabase[Doc] | None = None
        # When a unit last found the database unreachable: units started before that give up
        # at once instead of each waiting out its own server-selection timeout.
        self._outage_at = 0.0
        self._turns = Turns()
        # Lock documents known to exist (id -> when made sure), see ``lock_exists``.
        self._locks_made: dict[str, float] = {}
        # One numbering pass at a time in this process; writers waiting behind it usually find
        # their changes numbered by it. ``_waiting`` holds the change ids they wait for and
        # ``_numbered`` what passes gave those ids, until each writer takes its own.
        self._numbering = asyncio.Lock()
        self._waiting: set[int] = set()
        self._numbered: dict[int, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def db(self) -> AsyncDatabase[Doc]:
        if self._db is None:
            raise RuntimeError("MongoStore used before start()")
        return self._db

    resources = _Collection()
    changes = _Collection()
    claims = _Collection()
    counters = _Collection()
    locks = _Collection()
    proposals = _Collection()
    hl7v2_inbox = _Collection()
    hl7v2_outbox = _Collection()
    marks = _Collection()
    audit = _Collection()

    async def start(self) -> None:
        # Created here, not in __init__: the client binds to the running event loop.
        client: AsyncMongoClient[Doc] = AsyncMongoClient(self.url, **_client_options(self.url))
        where = _redact(self.url)
        try:
            hello = await client.admin.command("hello")
        except PyMongoError as exc:
            await client.close()
            raise SystemExit(f"cannot reach MongoDB at {where}: {exc}") from exc
        if not hello.get("setName") and hello.get("msg") != "isdbgrid":
            await client.close()
            raise SystemExit(
                f"MongoDB at {where} is a standalone server, which has no multi-document "
                "transactions; fhir-sched needs them for version checks and the change log. "
                "Run it as a replica set (one member is enough): start mongod with "
                "--replSet rs0, run rs.initiate() once in mongosh, and use "
                "mongodb://host:port/db?replicaSet=rs0 (or connect to a sharded cluster's mongos).")
        self._client = client
        self._db = client.get_default_database(default=DEFAULT_DB)
        try:
            await self._ensure_schema()
        except PyMongoError as exc:
            await self.close()
            raise SystemExit(f"cannot prepare MongoDB database at {where}: {exc}") from exc

    async def _ensure_schema(self) -> None:
        """Indexes and the counter, idempotently: every worker runs this at start-up."""
        r = self.resources
        await r.create_index([("type", 1), ("deleted", 1), ("pos", 1)], name="type_pos")
        await r.create_index([("type", 1), ("idx.p", 1), ("idx.v", 1)], name="idx_val")
        await r.create_index([("type", 1), ("idx.p", 1), ("idx.lo", 1)], name="idx_lo")
        await r.create_index([("type", 1), ("id", 1)], name="type_id")
        c = self.changes
        await c.create_index([("type", 1), ("id", 1), ("version", 1)], unique=True,
                             name="changes_version")
        await c.create_index([("seq", 1)], name="changes_seq")
        await c.create_index([("type", 1), ("seq", -1)], name="changes_type_seq")
        await c.create_index([("updated", 1)], name="changes_updated")
        await self.locks.create_index([("at", 1)], expireAfterSeconds=LOCK_TTL_SECONDS,
                                      name="locks_ttl")
        await self.claims.create_index([("owner_type", 1), ("owner_id", 1)], name="claims_owner")
        await self.proposals.create_index([("expires", 1)], name="proposals_expires")
        await self.hl7v2_outbox.create_index([("status", 1), ("_id", 1)], name="outbox_status")
        await self.hl7v2_inbox.create_index([("received", -1)], name="inbox_received")
        await self.audit.create_index([("recorded", -1), ("_id", -1)], name="audit_recorded")
        await self.audit.create_index([("patient", 1), ("recorded", -1), ("_id", -1)],
                                      name="audit_patient")
        await self.audit.create_index([("entity", 1), ("recorded", -1), ("_id", -1)],
                                      name="audit_entity")
        await self.hl7v2_inbox.create_index([("outcome", 1), ("received", -1)],
                                            name="inbox_outcome")
        # An index becomes multikey with its first array value, and that is written to the
        # catalog: two open transactions that both do it write-conflict, and SecantusDB keeps
        # conflicting for as long as the first stays open. One array written and removed here
        # settles it before any unit runs (the state outlives the document).
        probe = {"_id": "~/multikey", "type": "~", "pos": 0, "deleted": True,
                 "idx": [{"p": "~", "v": "~", "lo": 0}, {"p": "~~", "v": "~", "lo": 0}]}
        await r.replace_one({"_id": probe["_id"]}, probe, upsert=True)
        await r.delete_one({"_id": probe["_id"]})
        counter = await self.counters.find_one({"_id": "seq"})
        if counter is not None and counter.get("format", 1) < FORMAT:
            await self._upgrade_numbering()
        with suppress(DuplicateKeyError):  # another worker created it at the same moment
            await self.counters.update_one(
                {"_id": "seq"}, {"$setOnInsert": {"n": 0, "w": 0, "format": FORMAT}},
                upsert=True)

    async def _upgrade_numbering(self) -> None:
        """A database from before FORMAT 2: its change ids *were* the feed positions, so each
        keeps its number as ``seq``. Idempotent, so workers starting together may all run it;
        workers of the older release must be stopped first (they would go on numbering the
        old way)."""
        old = {"seq": None, "_id": {"$lt": _OLD_IDS_BELOW}}
        while ids := [d["_id"] async for d in self.changes.find(old, {"_id": 1}).limit(
                NUMBER_BATCH)]:
            await self.changes.bulk_write(
                [pymongo.UpdateOne({"_id": i, "seq": None}, {"$set": {"seq": i}}) for i in ids],
                ordered=False)
        await self.counters.update_one({"_id": "seq"}, {"$set": {"format": FORMAT}})

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._db = None

    async def ping(self) -> None:
        async with _available():
            await self.db.command("ping")

    # -- atomic units ------------------------------------------------------------------------
    @timed_store("mongodb", "atomic")
    async def atomic(self, fn: Callable[[MongoUnit], Awaitable[T]]) -> T:
        """``fn`` in one transaction, retried (bounded, with jitter) while it loses races."""
        if self._client is None:
            raise RuntimeError("MongoStore used before start()")
        started = time.monotonic()
        attempt = 0
        broken_connections = 0
        contended: set[str] = set()
        made_locks = False
        retried = STORE_RETRIES.labels("mongodb")
        async with (_available(), self._client.start_session() as session,
                    AsyncExitStack() as stack):
            while True:
                attempt += 1
                if self._outage_at > started:
                    raise StoreUnavailable("MongoDB was unreachable for a unit running beside "
                                           "this one")
                unit = MongoUnit(self, session, make_locks=not made_locks)
                try:
                    result = await self._attempt(session, unit, fn)
                except (PyMongoError, _Retry) as exc:
                    if isinstance(exc, ConnectionFailure):
                        # A dead database fails server selection after its timeout: answer
                        # now. A pooled socket broken by a restart deserves another go.
                        broken_connections += 1
                        if (isinstance(exc, ServerSelectionTimeoutError)
                                or broken_connections > CONNECTION_RETRIES):
                            self._outage_at = time.monotonic()
                            raise
                        continue
                    transient = isinstance(exc, _Retry) or _duplicate_only(exc) or (
                        exc.has_error_label("TransientTransactionError"))
                    if not transient:
                        raise
                    if time.monotonic() - started > CONTENTION_SECONDS:
                        raise StoreUnavailable(
                            f"gave up after {attempt} attempts lost write conflicts") from exc
                    if unit.missing_locks:  # the attempt ended: make them, then run again
                        for lock_id in unit.missing_locks:
                            await self.lock_exists(lock_id)
                        made_locks = True
                        continue
                    retried.inc()
                    await stack.aclose()  # turns are given back while this unit waits
                    await asyncio.sleep(random.uniform(
                        0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 10))))
                    contended |= unit.touched
                    await self._turns.take(contended, stack)
                    continue
                await stack.aclose()
                await self._number_after_commit(unit.written)
                return result

    async def _attempt(self, session: AsyncClientSession, unit: MongoUnit,
                       fn: Callable[[MongoUnit], Awaitable[T]]) -> T:
        await session.start_transaction(read_concern=_TXN_READ, write_concern=_TXN_WRITE)
        try:
            result = await fn(unit)
            if unit.missing_locks and unit.may_make_locks:
                raise _Retry("lock documents are made before a unit commits on them")
        except BaseException:
            await _abort_quietly(session)
            raise
        try:
            await _commit(session)
        except PyMongoError as exc:
            if exc.has_error_label("UnknownTransactionCommitResult"):
                # It may have committed: running the unit again could apply it twice.
                raise StoreUnavailable(f"outcome of the commit is unknown: {exc}") from exc
            raise  # definitely not committed: the caller's retry rules apply
        return result

    def lock_known(self, lock_id: str) -> bool:
        made = self._locks_made.get(lock_id)
        return made is not None and time.monotonic() - made < LOCK_TTL_SECONDS / 2

    async def lock_exists(self, lock_id: str) -> None:
        """Make sure a lock document exists before a unit writes it. Two transactions that
        both insert a document neither snapshot holds need not conflict (one test server let
        both commit), and then both would decide on the same search; updates of one existing
        document always conflict. So a unit that met locks this process has not made lately
        does not commit: once its transaction is over they are made here, outside any, and
        the unit runs again (``MongoUnit.missing_locks``); the TTL index drops a lock an hour
        after its last use."""
        now = time.monotonic()
        with suppress(DuplicateKeyError):  # another unit made it first: it exists
            await self.locks.update_one({"_id": lock_id},
                                        {"$setOnInsert": {"at": datetime.now(UTC)}},
                                        upsert=True)
        if len(self._locks_made) >= 100_000:
            self._locks_made.clear()
        self._locks_made[lock_id] = now

    # -- feed numbering ----------------------------------------------------------------------
    async def _number_after_commit(self, written: list[tuple[int, Record]]) -> None:
        """Give the unit's changes their feed positions and set them on its records.

        The unit has committed, so nothing here may fail the caller: if the database goes away
        now, the records keep ``seq`` 0 and the next feed read numbers the changes. Nor may
        it hold the caller up in an outage: once a pass has found the database gone, writers
        queued behind it leave the numbering to the readers."""
        if not written:
            return
        committed = time.monotonic()
        mine = {cid for cid, _ in written}
        self._waiting |= mine
        try:
            async with self._numbering:
                while not mine <= self._numbered.keys():
                    if self._outage_at >= committed or not await self._number_pass():
                        break  # an outage, or nothing left waiting: another process's pass
            missing = [cid for cid in mine if cid not in self._numbered]
            if missing and self._outage_at < committed:
                async for d in self.changes.find({"_id": {"$in": missing}}, {"seq": 1}):
                    if d.get("seq"):
                        self._numbered[d["_id"]] = d["seq"]
            for cid, record in written:
                record.seq = self._numbered.get(cid, 0)
        except PyMongoError as exc:
            log.warning("feed numbering after a commit deferred to the next reader: %s",
                        describe(exc))
        finally:
            self._waiting -= mine
            for cid in mine:
                self._numbered.pop(cid, None)

    async def _catch_up(self) -> None:
        """Before a feed read: number what has committed without a number yet."""
        if await self.changes.find_one({"seq": None}, {"_id": 1}) is None:
            return
        async with self._numbering:
            while await self._number_pass() >= NUMBER_BATCH:
                pass

    async def _number_pass(self) -> int:
        """One short transaction numbering up to NUMBER_BATCH committed changes; how many.

        Two processes' passes write-conflict on the counter and the loser runs again on a
        fresh snapshot, which no longer holds what the winner numbered."""
        assert self._client is not None
        started = time.monotonic()
        attempt = 0
        async with self._client.start_session() as session:
            while True:
                attempt += 1
                await session.start_transaction(read_concern=_TXN_READ,
                                                write_concern=_TXN_WRITE)
                try:
                    numbers = await self._number_in(session)
                    if not numbers:
                        await _abort_quietly(session)
                        return 0
                    await _commit(session)
                except PyMongoError as exc:
                    await _abort_quietly(session)
                    if isinstance(exc, ConnectionFailure):
                        self._outage_at = time.monotonic()
                        raise
                    if exc.has_error_label("UnknownTransactionCommitResult"):
                        return 0  # either way, the next pass finds what is still unnumbered
                    if not exc.has_error_label("TransientTransactionError") or (
                            time.monotonic() - started > NUMBERING_SECONDS):
                        raise
                    await asyncio.sleep(random.uniform(
                        0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 10))))
                    continue
                for cid, seq in numbers.items():
                    if cid in self._waiting:
                        self._numbered[cid] = seq
                return len(numbers)

    async def _number_in(self, session: AsyncClientSession) -> dict[int, int]:
        """Four round trips: what waits, the counter moved past it (the write that makes a
        concurrent pass conflict), the numbers, the commit."""
        docs = await self.changes.find(
            {"seq": None}, {"_id": 1, "type": 1, "id": 1, "version": 1},
            session=session).sort("_id", 1).limit(NUMBER_BATCH).to_list()
        if not docs:
            return {}
        head = await self.counters.find_one_and_update(
            {"_id": "seq"}, {"$inc": {"n": len(docs), "w": 1}}, upsert=True,
            return_document=ReturnDocument.BEFORE, session=session)
        numbers = _numbering(docs, int(head.get("n", 0)) if head else 0)
        await self.changes.bulk_write(
            [pymongo.UpdateOne({"_id": cid}, {"$set": {"seq": seq}})
             for cid, seq in numbers.items()], ordered=False, session=session)
        return numbers

    # -- reads -------------------------------------------------------------------------------
    async def get(self, type_: str, id_: str) -> Record | None:
        async with _available():
            doc = await self.resources.find_one({"_id": resource_key(type_, id_)}, {"idx": 0})
        return None if doc is None else _current_record(doc)

    async def get_version(self, type_: str, id_: str, version: int) -> Record | None:
        async with _available():
            doc = await self.changes.find_one({"type": type_, "id": id_, "version": version})
        return None if doc is None else _change_record(doc)

    async def history(self, type_: str | None, id_: str | None, since: str | None, count: int,
                      before_seq: int | None) -> list[Record]:
        if count == 0:
            return []
        match: Filter = {}
        if type_ is not None:
            match["type"] = type_
        if id_ is not None:
            match["id"] = id_
        if since is not None:
            match["updated"] = {"$gte": since}
        # Numbered ones only: a change that commits while this reads is not history yet.
        match["seq"] = {"$gte": 1} if before_seq is None else {"$gte": 1, "$lt": before_seq}
        cursor = self.changes.find(match).sort("seq", -1)
        if count > 0:
            cursor = cursor.limit(count)
        async with _available():
            await self._catch_up()
            docs = await cursor.to_list()
        return [_change_record(d) for d in docs]

    async def changes_since(self, position: int, limit: int) -> list[Record]:
        """Read only up to the counter's committed value, and only what a majority holds.

        A numbering pass sets the counter and the numbers below it in one transaction (see
        the module docstring), so a reader that sees the counter at N has every change up to N
        in the same read, and never finds one below N appear later.
        """
        if limit <= 0:
            return []
        async with _available():
            await self._catch_up()
            head = await self._committed_head()
            if head <= position:
                return []
            docs = await self.changes.with_options(read_concern=_FEED_READ).find(
                {"seq": {"$gt": position, "$lte": head}}).sort("seq", 1).limit(
                limit).to_list()
        return [_change_record(d) for d in docs]

    async def last_position(self) -> int:
        async with _available():
            await self._catch_up()
            return await self._committed_head()

    async def _committed_head(self) -> int:
        """The seq of the newest change a majority holds (0 before the first)."""
        doc = await self.counters.with_options(read_concern=_FEED_READ).find_one(
            {"_id": "seq"}, {"n": 1})
        return int(doc.get("n", 0)) if doc else 0

    @timed_store("mongodb", "search")
    async def search(self, query: Query) -> Page:
        """Within the time budget: each command carries it as ``maxTimeMS``, so the server
        stops the query, and the call is abandoned at the budget in case a server does not
        honour it. Not the driver's own timeout (``pymongo.timeout``): that retries a read
        until it runs out, so an outage would answer after the whole budget instead of after
        server selection gives up (3 s)."""
        budget = self.search_seconds
        async with _available():
            try:
                return await asyncio.wait_for(
                    _search(self.resources, None, query, max(1, int(budget * 1000))), budget)
            except (TimeoutError, ExecutionTimeout) as exc:
                raise QueryTimedOut(budget) from exc

    @timed_store("mongodb", "in_window")
    async def in_window(self, type_: str, date_param: str, lo: int, hi: int, limit: int
                        ) -> list[tuple[str, int, bytes]]:
        """One find through the ``idx_lo`` index, each document's id, body and index entries
        of ``date_param`` only (``$elemMatch`` projection), within the search budget."""
        window = {"p": date_param, "lo": {"$gte": lo, "$lt": hi}}
        budget = self.search_seconds

        async def run() -> list[Doc]:
            cursor = self.resources.find(
                {"type": type_, "deleted": False, "idx": {"$elemMatch": window}},
                {"_id": 0, "id": 1, "body": 1, "idx": {"$elemMatch": window}},
                limit=limit, batch_size=10_000, max_time_ms=max(1, int(budget * 1000)))
            return await cursor.to_list()

        async with _available():
            try:
                docs = await asyncio.wait_for(run(), budget)
            except (TimeoutError, ExecutionTimeout) as exc:
                raise QueryTimedOut(budget) from exc
        return [(d["id"], int(d["idx"][0]["lo"]), bytes(d["body"])) for d in docs
                if d.get("body") is not None and d.get("idx")]

    async def first_versions(self, type_: str, ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        async with _available():
            for n in range(0, len(ids), 1000):
                docs = await self.changes.find(
                    {"type": type_, "id": {"$in": list(ids[n:n + 1000])}, "version": 1},
                    {"_id": 0, "id": 1, "updated": 1}).to_list()
                out.update((d["id"], d["updated"]) for d in docs)
        return out

    async def claim_keys(self, prefix: str) -> list[tuple[str, str, str]]:
        async with _available():
            docs = await self.claims.find(_prefix(prefix)).sort("_id", 1).to_list()
        return [(d["_id"], d["owner_type"], d["owner_id"]) for d in docs]

    async def claims_between(self, lo: str, hi: str) -> list[tuple[str, str | None]]:
        async with _available():
            docs = await self.claims.find({"_id": {"$gte": lo, "$lt": hi}},
                                          {"expires": 1}).sort("_id", 1).to_list()
        return [(d["_id"], d.get("expires")) for d in docs]

    # -- $find proposals ---------------------------------------------------------------------
    async def put_proposals(self, proposals: Sequence[tuple[str, bytes]], expires: str,
                            now: str) -> None:
        if not proposals:
            return
        ops = [pymongo.UpdateOne({"_id": id_}, {"$set": {"body": body, "expires": expires}},
                                 upsert=True) for id_, body in proposals]
        async with _available():
            await self.proposals.delete_many({"expires": {"$lt": now}})
            await self.proposals.bulk_write(ops, ordered=False)

    async def get_proposal(self, id_: str) -> tuple[bytes, str] | None:
        async with _available():
            doc = await self.proposals.find_one({"_id": id_})
        return (bytes(doc["body"]), doc["expires"]) if doc else None

    # -- HL7 v2 inbox --------------------------------------------------------------------------
    async def inbound_list(self, *, outcomes: Sequence[str] | None = None, limit: int = 100,
                           before: str | None = None) -> list[InboundEntry]:
        match: Filter = {}
        if outcomes:
            match["outcome"] = {"$in": list(outcomes)}
        if before is not None:
            match["received"] = {"$lt": before}
        async with _available():
            docs = await self.hl7v2_inbox.find(match).sort(
                [("received", -1), ("_id", 1)]).limit(limit).to_list()
        return [inbox.from_doc(d) for d in docs]

    async def outbox_list(self, *, statuses: Sequence[str], limit: int = 100,
                          endpoint: str | None = None) -> list[OutboundEntry]:
        match: Filter = {"status": {"$in": list(statuses)}}
        if endpoint is not None:
            match["endpoint"] = endpoint
        async with _available():
            docs = await self.hl7v2_outbox.find(match).sort("_id", 1).limit(limit).to_list()
        return [outbox.from_doc(d) for d in docs]

    async def audit_append(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        async with _available():
            try:
                await self.audit.insert_many([audit_doc(e) for e in entries], ordered=False)
            except BulkWriteError as exc:  # a retried batch: entries already there are fine
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise

    async def audit_list(self, *, patient: str | None = None, entity: str | None = None,
                         who: str | None = None, subtype: str | None = None,
                         outcome: str | None = None, since: str | None = None,
                         until: str | None = None, before_id: str | None = None,
                         limit: int = 100) -> list[AuditEntry]:
        match: Filter = {k: v for k, v in (("patient", patient), ("entity", entity),
                                          ("who", who), ("subtype", subtype),
                                          ("outcome", outcome)) if v is not None}
        recorded: Filter = {}
        if since is not None:
            recorded["$gte"] = since
        if until is not None:
            recorded["$lt"] = until
        if recorded:
            match["recorded"] = recorded
        async with _available():
            if before_id is not None:
                anchor = await self.audit.find_one({"_id": before_id})
                if anchor is None:
                    return []
                match["$or"] = [{"recorded": {"$lt": anchor["recorded"]}},
                                {"recorded": anchor["recorded"], "_id": {"$lt": before_id}}]
            docs = await self.audit.find(match).sort(
                [("recorded", -1), ("_id", -1)]).limit(limit).to_list()
        return [audit_entry(d) for d in docs]

    async def audit_get(self, id_: str) -> AuditEntry | None:
        async with _available():
            doc = await self.audit.find_one({"_id": id_})
        return None if doc is None else audit_entry(doc)

    async def audit_purge(self, before: str, limit: int) -> int:
        async with _available():
            ids = [d["_id"] async for d in self.audit.find(
                {"recorded": {"$lt": before}}, {"_id": 1}).sort("recorded", 1).limit(limit)]
            if not ids:
                return 0
            result = await self.audit.delete_many({"_id": {"$in": ids}})
        return int(result.deleted_count)

    async def inbound_purge_raw(self, before: str) -> int:
        async with _available():
            result = await self.hl7v2_inbox.update_many(
                {"received": {"$lt": before}, "raw": {"$ne": None}}, {"$set": {"raw": None}})
        return int(result.modified_count)


def audit_doc(e: AuditEntry) -> Doc:
    return {"_id": e.id, "recorded": e.recorded, "door": e.door, "action": e.action,
            "subtype": e.subtype, "outcome": e.outcome, "who": e.who, "client_id": e.client_id,
            "request_id": e.request_id, "entity": e.entity, "patient": e.patient,
            "detail": e.detail}


def audit_entry(d: Doc) -> AuditEntry:
    return AuditEntry(d["_id"], d["recorded"], d["door"], d["action"], d["subtype"],
                      d["outcome"], d["who"], d.get("client_id"), d.get("request_id"),
                      d.get("entity"), d.get("patient"), d.get("detail", ""))


async def _abort_quietly(session: AsyncClientSession) -> None:
    """Abort after a failure; if the server already dropped the transaction, that is fine."""
    if session.in_transaction:
        with suppress(PyMongoError):
            await session.abort_transaction()


async def _commit(session: AsyncClientSession) -> None:
    """Commit, retrying only the commit when its outcome is unknown (it is idempotent; running
    the unit again could apply it twice)."""
    for attempt in range(3):
        try:
            await session.commit_transaction()
            return
        except PyMongoError as exc:
            if (exc.has_error_label("UnknownTransactionCommitResult") and attempt < 2
                    and not isinstance(exc, ServerSelectionTimeoutError)):
                continue
            raise


def _numbering(docs: list[Doc], after: int) -> dict[int, int]:
    """Positions after ``after`` in ``_id`` order, except that each resource's versions take
    its positions in version order: ids come from each writer's clock, and a version written
    on a host whose clock is behind must still follow the version it replaced."""
    numbers = {d["_id"]: after + 1 + i for i, d in enumerate(docs)}
    versions: dict[tuple[str, str], list[Doc]] = defaultdict(list)
    for d in docs:
        versions[(d["type"], d["id"])].append(d)
    for group in versions.values():
        if len(group) > 1:
            places = sorted(numbers[d["_id"]] for d in group)
            for d, place in zip(sorted(group, key=lambda d: d["version"]), places, strict=True):
                numbers[d["_id"]] = place
    return numbers


def _lock_id(kind: str, key: object) -> str:
    return f"{kind}:" + hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()


def _prefix(prefix: str) -> Filter:
    return {"_id": {"$gte": prefix, "$lt": prefix + "\U0010ffff"}}


def _check_version(record: Record, current: int, expect_version: int | None) -> None:
    if expect_version is not None and current != expect_version:
        raise VersionConflict(current)
    if record.version <= current:
        raise VersionConflict(current)


def _resource_fields(record: Record, entries: list[IndexEntry]) -> Doc:
    """What a write sets on the resource document (current version and its index entries)."""
    return {
        "version": record.version,
        "updated": record.updated,
        "deleted": record.deleted,
        "body": record.body,
        "idx": [] if record.deleted else [_entry_doc(e) for e in entries],
    }


def _resource_doc(key: str, record: Record, entries: list[IndexEntry], cid: int) -> Doc:
    """A new resource document; ``pos`` (creation order) is the id of its first change."""
    return {"_id": key, "type": record.type, "id": record.id, "pos": cid,
            **_resource_fields(record, entries)}


def _change_doc(record: Record, cid: int) -> Doc:
    """Without ``seq``: the numbering pass after the commit gives it."""
    o = record.origin
    return {
        "_id": cid, "type": record.type, "id": record.id, "version": record.version,
        "updated": record.updated, "method": record.method, "body": record.body,
        "origin": {"subject": o.subject, "client_id": o.client_id, "door": o.door,
                   "request_id": o.request_id},
    }


class MongoUnit:
    """Operations inside one transaction; every call carries the unit's session."""

    def __init__(self, store: MongoStore, session: AsyncClientSession,
                 make_locks: bool = True) -> None:
        self._store = store
        self._s = session
        # Locks not made lately are noted; instead of committing, the unit then has them made
        # outside the transaction and runs again, once (a search naming what the unit itself
        # creates, a new Practitioner's Schedules, has a new lock each time, and nobody else
        # can race on that one).
        self._make_locks = make_locks
        self._next_cid = _change_ids()
        # (change id, record) of each change written, for the numbering after the commit.
        self.written: list[tuple[int, Record]] = []
        # Documents read for update or written: a retry after a conflict takes turns on them.
        self.touched: set[str] = set()
        # Lock documents this unit needs that may not exist yet (made before it runs again).
        self.missing_locks: set[str] = set()

    @property
    def may_make_locks(self) -> bool:
        return self._make_locks

    async def get(self, type_: str, id_: str, *, decides: bool = True) -> Record | None:
        """Read for update: the touch makes a concurrent writer of this resource, or another
        unit deciding on it, conflict with this one (see the module docstring). Without
        ``decides``, a plain read in the unit's snapshot."""
        key = resource_key(type_, id_)
        if not decides:
            found = await self._store.resources.find_one({"_id": key}, {"idx": 0},
                                                         session=self._s)
            return None if found is None else _current_record(found)
        self.touched.add(key)
        doc = await self._store.resources.find_one_and_update(
            {"_id": key}, {"$inc": {"_t": 1}}, {"idx": 0},
            session=self._s)
        return None if doc is None else _current_record(doc)

    async def find_ids(self, query: Query, limit: int = 2, *, decides: bool = True
                       ) -> list[str]:
        """Ids matching ``query`` as this unit sees them. The lock document makes a
        search-then-insert (If-None-Exist) safe: a second unit deciding on the same search
        conflicts with this one and runs again after it, finding what this one created."""
        if limit == 0:
            return []
        if decides:
            await self._lock("q", (query.type, query.where, query.include_deleted))
        res = self._store.resources
        compiler = Compiler(lambda p: _aggregate(res, self._s, p))
        match = combine(base_filter(query), await compiler.where(query.where, query.type))
        cursor = res.find(match, {"id": 1}, session=self._s).sort("pos", 1)
        if limit > 0:
            cursor = cursor.limit(limit)
        return [d["id"] for d in await cursor.to_list()]

    async def count(self, query: Query) -> int:
        await self._lock("q", (query.type, query.where, query.include_deleted))
        res = self._store.resources
        compiler = Compiler(lambda p: _aggregate(res, self._s, p))
        match = combine(base_filter(query), await compiler.where(query.where, query.type))
        return int(await res.count_documents(match, session=self._s))

    async def find_bodies(self, query: Query, limit: int) -> list[tuple[str, bytes]]:
        """The search and then a deciding read of each match, so every body read is held as
        ``get`` holds it (one round trip each: a transaction has no read-and-touch-many)."""
        out = []
        for id_ in await self.find_ids(query, limit):
            rec = await self.get(query.type, id_)
            if rec is not None and not rec.deleted and rec.body is not None:
                out.append((id_, rec.body))
        return out

    async def _lock(self, kind: str, key: object) -> None:
        lock_id = _lock_id(kind, key)
        self.touched.add(lock_id)
        if self._make_locks and not self._store.lock_known(lock_id):
            # made outside any transaction before the unit commits (MongoStore.lock_exists)
            self.missing_locks.add(lock_id)
        await self._store.locks.update_one(
            {"_id": lock_id}, {"$set": {"at": datetime.now(UTC)}}, upsert=True,
            session=self._s)

    async def write(
        self, record: Record, entries: list[IndexEntry], expect_version: int | None
    ) -> None:
        res = self._store.resources
        key = resource_key(record.type, record.id)
        self.touched.add(key)
        cur = await res.find_one({"_id": key}, {"version": 1}, session=self._s)
        current = int(cur["version"]) if cur else 0
        _check_version(record, current, expect_version)
        cid = self._next_cid
        if cur is None:
            await res.insert_one(_resource_doc(key, record, entries, cid), session=self._s)
        else:
            done = await res.update_one({"_id": key, "version": current},
                                        {"$set": _resource_fields(record, entries)},
                                        session=self._s)
            if done.matched_count != 1:
                raise _Retry(f"{key} changed under the unit")
        await self._store.changes.insert_one(_change_doc(record, cid), session=self._s)
        self._take(record, cid)

    async def write_all(self, writes: Sequence[Write]) -> None:
        """Creates of resources that do not exist yet go in ``insert_many`` batches (one round
        trip per collection instead of three per write); anything else goes through ``write``
        at its place in the order, after the creates queued before it."""
        keys = [resource_key(r.type, r.id) for r, _, _ in writes]
        self.touched.update(keys)
        found = await self._store.resources.find(
            {"_id": {"$in": keys}}, {"_id": 1}, session=self._s).to_list()
        existing = {d["_id"] for d in found}
        resources: list[Doc] = []
        changes: list[Doc] = []
        for key, (record, entries, expect_version) in zip(keys, writes, strict=True):
            if key in existing:  # an update, or the same resource twice in this batch
                await self._insert(resources, changes)
                await self.write(record, entries, expect_version)
                continue
            try:
                _check_version(record, 0, expect_version)
            except VersionConflict:
                await self._insert(resources, changes)
                raise
            existing.add(key)
            cid = self._next_cid
            resources.append(_resource_doc(key, record, entries, cid))
            changes.append(_change_doc(record, cid))
            self._take(record, cid)
        await self._insert(resources, changes)

    async def _insert(self, resources: list[Doc], changes: list[Doc]) -> None:
        if resources:
            await self._store.resources.insert_many(resources, session=self._s)
            await self._store.changes.insert_many(changes, session=self._s)
            resources.clear()
            changes.clear()

    def _take(self, record: Record, cid: int) -> None:
        """The id is spent only once its change is in, so a write that fails part-way and is
        caught leaves the next write its id."""
        self._next_cid = cid + 1
        self.written.append((cid, record))
        record.seq = 0  # known after the commit

    async def claim(
        self, key: str, owner_type: str, owner_id: str, expires: str | None = None,
        now: str | None = None,
    ) -> bool:
        """Insert, or take over a claim that is ours already or has expired by ``now``."""
        claims = self._store.claims
        fields = {"owner_type": owner_type, "owner_id": owner_id, "expires": expires}
        self.touched.add("claim " + key)
        doc = await claims.find_one({"_id": key}, session=self._s)
        if doc is None:
            await claims.insert_one({"_id": key, **fields}, session=self._s)
            return True
        ours = (doc["owner_type"], doc["owner_id"]) == (owner_type, owner_id)
        held_until = doc.get("expires")
        lapsed = held_until is not None and now is not None and held_until <= now
        if not (ours or lapsed):
            return False
        await claims.update_one({"_id": key}, {"$set": fields}, session=self._s)
        return True

    async def claims_of(self, owner_type: str, owner_id: str) -> list[str]:
        docs = await self._store.claims.find(
            {"owner_type": owner_type, "owner_id": owner_id}, {"_id": 1},
            session=self._s).sort("_id", 1).to_list()
        return [d["_id"] for d in docs]

    async def release(self, owner_type: str, owner_id: str, keys: list[str] | None = None) -> None:
        match: Filter = {"owner_type": owner_type, "owner_id": owner_id}
        if keys is not None:
            if not keys:
                return
            match["_id"] = {"$in": list(keys)}
        await self._store.claims.delete_many(match, session=self._s)

    async def count_claims(self, prefix: str) -> int:
        """Locked like a search (``find_ids``): capacity is decided on the count."""
        await self._lock("c", prefix)
        return await self._store.claims.count_documents(_prefix(prefix), session=self._s)

    async def inbound_get(self, key: str) -> InboundEntry | None:
        doc = await self._store.hl7v2_inbox.find_one({"_id": key}, session=self._s)
        return None if doc is None else inbox.from_doc(doc)

    async def inbound_put(self, entry: InboundEntry) -> None:
        self.touched.add("inbox " + entry.key)
        await self._store.hl7v2_inbox.replace_one({"_id": entry.key}, inbox.to_doc(entry),
                                                  upsert=True, session=self._s)

    async def mark_get(self, key: str) -> str | None:
        doc = await self._store.marks.find_one({"_id": key}, session=self._s)
        return None if doc is None else str(doc["v"])

    async def mark_put(self, key: str, value: str) -> None:
        self.touched.add("mark " + key)
        await self._store.marks.update_one({"_id": key}, {"$set": {"v": value}}, upsert=True,
                                           session=self._s)

    async def mark_delete(self, key: str) -> bool:
        self.touched.add("mark " + key)
        done = await self._store.marks.delete_one({"_id": key}, session=self._s)
        return done.deleted_count > 0

    async def mark_list(self, prefix: str, limit: int = 1000) -> list[tuple[str, str]]:
        cursor = self._store.marks.find(
            {"_id": {"$gte": prefix, "$lt": prefix + "\U0010ffff"}}, session=self._s
        ).sort("_id", 1).limit(limit)
        return [(str(d["_id"]), str(d["v"])) async for d in cursor]

    async def audit_add(self, entries: Sequence[AuditEntry]) -> None:
        if entries:
            await self._store.audit.insert_many([audit_doc(e) for e in entries],
                                                session=self._s)

    async def outbox_add(self, entries: Sequence[OutboundEntry]) -> None:
        coll = self._store.hl7v2_outbox
        for e in entries:
            doc = outbox.to_doc(e)
            await coll.update_one({"_id": e.id}, {"$setOnInsert": doc}, upsert=True,
                                  session=self._s)

    async def outbox_set(self, entry: OutboundEntry) -> None:
        self.touched.add("outbox " + entry.id)
        await self._store.hl7v2_outbox.update_one({"_id": entry.id}, {"$set": {
            "status": entry.status, "attempts": entry.attempts, "next_at": entry.next_at,
            "error": entry.error, "ack": entry.ack}}, session=self._s)


async def _aggregate(coll: AsyncCollection[Doc], session: AsyncClientSession | None,
                     pipeline: Pipeline, max_ms: int | None = None) -> list[Doc]:
    if max_ms:
        cursor = await coll.aggregate(pipeline, session=session, maxTimeMS=max_ms)
    else:
        cursor = await coll.aggregate(pipeline, session=session)
    return await cursor.to_list()


async def _search(coll: AsyncCollection[Doc], session: AsyncClientSession | None,
                  query: Query, max_ms: int | None = None) -> Page:
    compiler = Compiler(lambda p: _aggregate(coll, session, p, max_ms))
    match = combine(base_filter(query), await compiler.where(query.where, query.type))
    total = None
    if query.total or query.count_only:
        total = await (coll.count_documents(match, session=session, maxTimeMS=max_ms) if max_ms
                       else coll.count_documents(match, session=session))
    if query.count_only:
        return Page([], None, total)
    cols = sort_columns(query.sort)
    keyset = keyset_filter(cols, query.after) if query.after is not None else {}
    order: dict[str, int] = {}
    for name, desc, _ in cols:
        order.setdefault(name, -1 if desc else 1)  # a repeated key: the first one decides
    limit = max(query.count, 0) + 1
    project = {"id": 1, "body": 1, **{name: 1 for name, _, _ in cols}}
    computed = {name: expr for name, _, expr in cols if expr is not None}
    if computed:
        pipeline: Pipeline = [{"$match": match}, {"$addFields": computed}]
        if keyset:
            pipeline.append({"$match": keyset})
        pipeline += [{"$sort": order}, {"$limit": limit}, {"$project": project}]
        docs = await _aggregate(coll, session, pipeline, max_ms)
    else:
        cursor = coll.find(combine(match, keyset), project, session=session).sort(
            list(order.items())).limit(limit)
        if max_ms:
            cursor = cursor.max_time_ms(max_ms)
        docs = await cursor.to_list()
    more = len(docs) > query.count
    docs = docs[: max(query.count, 0)]
    next_after = tuple(docs[-1][name] for name, _, _ in cols) if more and docs else None
    # Tombstones (``include_deleted``) have no body, as in SQLite; Page's type says bytes.
    return Page([(d["id"], cast(bytes, _body(d))) for d in docs], next_after, total)
