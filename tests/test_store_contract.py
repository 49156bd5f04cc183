"""The DocumentStore contract, run unchanged against every adapter (no HTTP in between).

SQLite is the reference; every test here is phrased over the port only, so a MongoDB behaviour
that differs from SQLite's fails the same test SQLite passes. Concurrency tests use two store
objects on one database, which is what two server processes are.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_sched.query import (
    AllOf,
    AnyOf,
    Chain,
    Cond,
    Entry,
    Expr,
    Has,
    IndexEntry,
    Missing,
    Not,
    Query,
    SortKey,
)
from fhir_sched.service.store_errors import as_fhir_error
from fhir_sched.storage.base import SYSTEM_ORIGIN, DocumentStore, Origin, Record, Unit
from fhir_sched.storage.errors import (
    InvalidCursor,
    QueryTooComplex,
    StoreUnavailable,
    VersionConflict,
)
from fhir_sched.storage.sqlite import SqliteStore
from tests.support.feed import follow

StoreFactory = Callable[[], Awaitable[DocumentStore]]

HIGH_STR, LOW_NUM = "\U0010ffff", -9.0e18


@pytest.fixture
async def open_store(store_kind: str, mongo_uri: str | None,
                     tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens store objects that all share one fresh database."""
    opened: list[DocumentStore] = []
    db_name = f"contract_{uuid.uuid4().hex[:12]}"

    async def factory() -> DocumentStore:
        store: DocumentStore
        if store_kind == "sqlite":
            store = SqliteStore(str(tmp_path / "store.db"), synchronous="normal")
        else:
            from fhir_sched.storage.mongo import MongoStore

            assert mongo_uri is not None
            base = mongo_uri.split("?")[0].rstrip("/")
            if base.count("/") > 2:
                base = base.rsplit("/", 1)[0]
            store = MongoStore(f"{base}/{db_name}")
        await store.start()
        opened.append(store)
        return store

    yield factory
    for n, store in enumerate(opened):
        if n == 0 and store.name == "mongo":
            from fhir_sched.storage.mongo import MongoStore

            assert isinstance(store, MongoStore)
            await store.db.client.drop_database(db_name)
        await store.close()


@pytest.fixture
async def store(open_store: StoreFactory) -> DocumentStore:
    return await open_store()


# -- helpers ------------------------------------------------------------------------------------
_clock = iter(range(10**9))


def stamp(second: int | None = None) -> str:
    n = next(_clock) if second is None else second
    return f"2026-03-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000Z"


async def put(store: DocumentStore, type_: str, id_: str, entries: list[IndexEntry] | None = None,
              body: bytes | None = None, *, updated: str | None = None,
              expect: int | str | None = "current", origin: Origin = SYSTEM_ORIGIN) -> Record:
    """Write the next version of a resource the way the service does (read, then check)."""

    async def run(unit: Unit) -> Record:
        prev = await unit.get(type_, id_)
        current = prev.version if prev else 0
        rec = Record(type_, id_, current + 1, updated or stamp(), False,
                     body if body is not None else orjson.dumps(
                         {"resourceType": type_, "id": id_}),
                     "POST" if prev is None or prev.deleted else "PUT", origin=origin)
        await unit.write(rec, entries or [], current if isinstance(expect, str) else expect)
        return rec

    return await store.atomic(run)


async def delete(store: DocumentStore, type_: str, id_: str, updated: str | None = None) -> Record:
    async def run(unit: Unit) -> Record:
        prev = await unit.get(type_, id_)
        assert prev is not None
        rec = Record(type_, id_, prev.version + 1, updated or stamp(), True, None, "DELETE")
        await unit.write(rec, [], prev.version)
        return rec

    return await store.atomic(run)


async def ids(store: DocumentStore, type_: str, *where: Expr, **kw: Any) -> set[str]:
    page = await store.search(Query(type_, tuple(where), count=1000, **kw))
    assert page.next_after is None
    return {i for i, _ in page.rows}


def name(v: str, raw: str | None = None) -> IndexEntry:
    return IndexEntry("name", val=v, raw=raw or v)


def ident(system: str | None, value: str) -> IndexEntry:
    return IndexEntry("identifier", sys=system, val=value)


def date(lo: int, hi: int | None = None) -> IndexEntry:
    return IndexEntry("birthdate", lo=lo, hi=lo if hi is None else hi)


def ref(param: str, target: str) -> IndexEntry:
    return IndexEntry(param, sys=target.split("/")[0], val=target)


# -- writes, reads, versions --------------------------------------------------------------------
async def test_write_then_get_serves_the_stored_bytes(store: DocumentStore) -> None:
    body = b'{"resourceType":"Patient","id":"a",  "gender":"female"}'
    rec = await put(store, "Patient", "a", [name("yui")], body)
    got = await store.get("Patient", "a")
    assert got is not None
    assert (got.version, got.deleted, got.body, got.updated) == (1, False, body, rec.updated)
    assert rec.seq > 0
    assert await store.get("Patient", "nope") is None
    assert await store.get("Practitioner", "a") is None


async def test_special_keys_round_trip_byte_identical(store: DocumentStore) -> None:
    body = ('{"resourceType":"Patient","id":"odd","extension":[{"url":"http://x.org/e",'
            '"$ref":{"a.b":1,"$where":"1==1","":[{"c.d.e":null}]}}],'
            '"contained":[{"resourceType":"Basic","id":"c1","x.y":{"$gt":0},"$set":"v"}],'
            '"name":[{"text":"Ünïcödé \\u0000 ✓"}]}').encode()
    rec1 = await put(store, "Patient", "odd", [name("odd")], body)
    rec2 = await put(store, "Patient", "odd", [name("odd")], body + b" ")
    got = await store.get("Patient", "odd")
    assert got is not None and got.body == body + b" "
    v1 = await store.get_version("Patient", "odd", 1)
    assert v1 is not None and v1.body == body
    assert [r.body for r in await store.history("Patient", "odd", None, 10, None)] == [
        body + b" ", body]
    page = await store.search(Query("Patient", (Entry("name", (Cond("val", "=", "odd"),)),)))
    assert page.rows == [("odd", body + b" ")]
    assert rec2.seq > rec1.seq


async def test_version_checks(store: DocumentStore) -> None:
    await put(store, "Patient", "v")
    with pytest.raises(VersionConflict) as exc:
        await put(store, "Patient", "v", expect=0)  # "create" over an existing one
    assert exc.value.current == 1
    with pytest.raises(VersionConflict) as exc:
        await put(store, "Patient", "v", expect=5)
    assert exc.value.current == 1

    async def stale(unit: Unit) -> None:
        await unit.write(Record("Patient", "v", 1, stamp(), False, b"{}"), [], None)

    with pytest.raises(VersionConflict):
        await store.atomic(stale)  # not newer than the current version
    await put(store, "Patient", "v", expect=None)
    got = await store.get("Patient", "v")
    assert got is not None and got.version == 2
    with pytest.raises(VersionConflict) as exc:
        await put(store, "Patient", "fresh", expect=3)
    assert exc.value.current == 0


async def test_tombstones(store: DocumentStore) -> None:
    await put(store, "Patient", "t", [name("tomb")])
    gone = await delete(store, "Patient", "t")
    got = await store.get("Patient", "t")
    assert got is not None and (got.deleted, got.body, got.version) == (True, None, 2)
    v2 = await store.get_version("Patient", "t", 2)
    assert v2 is not None and v2.deleted and v2.method == "DELETE" and v2.seq == gone.seq
    v1 = await store.get_version("Patient", "t", 1)
    assert v1 is not None and not v1.deleted and v1.method == "POST"
    assert await store.get_version("Patient", "t", 3) is None
    assert await ids(store, "Patient") == set()
    assert await ids(store, "Patient", Missing("name")) == set()  # index entries are gone
    page = await store.search(Query("Patient", include_deleted=True))
    assert page.rows == [("t", None)]
    await put(store, "Patient", "t", [name("back")])  # re-create over the tombstone
    got = await store.get("Patient", "t")
    assert got is not None and (got.version, got.deleted) == (3, False)
    assert await ids(store, "Patient", Entry("name", (Cond("val", "=", "back"),))) == {"t"}


# -- projections for reports ----------------------------------------------------------------------
def _visit(start: int, status: str, *actors: str) -> list[IndexEntry]:
    return [IndexEntry("date", lo=start, hi=start + 999_999), IndexEntry("end", lo=start + 1800 *
            10**6, hi=start + 1800 * 10**6 + 999_999), IndexEntry("status", val=status),
            IndexEntry("identifier", val="not-asked"),
            *(IndexEntry("actor", sys=a.split("/")[0], val=a, lo=start, hi=start + 999_999)
              for a in actors)]


async def test_in_window_gives_the_live_resources_starting_in_the_window(
        store: DocumentStore) -> None:
    day = 1_780_000_000 * 10**6
    body = b'{"resourceType":"Appointment","id":"in","status":"booked"}'
    await put(store, "Appointment", "in", _visit(day, "booked", "Practitioner/a"), body)
    await put(store, "Appointment", "edge", _visit(day + 3600 * 10**6, "noshow"))
    await put(store, "Appointment", "after", _visit(day + 7200 * 10**6, "booked"))
    await put(store, "Appointment", "before", _visit(day - 1, "booked"))
    await put(store, "Appointment", "gone", _visit(day, "booked"))
    await delete(store, "Appointment", "gone")
    await put(store, "Slot", "other-type", [IndexEntry("date", lo=day, hi=day)])
    got = {i: (start, b) for i, start, b in await store.in_window(
        "Appointment", "date", day, day + 7200 * 10**6, 100)}
    assert set(got) == {"in", "edge"}
    assert got["in"] == (day, body)
    assert got["edge"][0] == day + 3600 * 10**6
    assert len(await store.in_window("Appointment", "date", 0, 2**62, 2)) == 2


async def test_first_versions_tell_when_each_resource_was_first_stored(
        store: DocumentStore) -> None:
    await put(store, "Appointment", "v", updated="2026-03-01T01:00:00.000Z")
    await put(store, "Appointment", "v", updated="2026-03-02T01:00:00.000Z")
    await put(store, "Appointment", "w", updated="2026-03-03T01:00:00.000Z")
    assert await store.first_versions("Appointment", ["v", "w", "unknown"]) == {
        "v": "2026-03-01T01:00:00.000Z", "w": "2026-03-03T01:00:00.000Z"}
    assert await store.first_versions("Appointment", []) == {}


# -- history ------------------------------------------------------------------------------------
async def test_history_order_filters_and_paging(store: DocumentStore) -> None:
    await put(store, "Patient", "h1", updated=stamp(10))
    await put(store, "Practitioner", "h1", updated=stamp(11))
    await put(store, "Patient", "h2", updated=stamp(12))
    await put(store, "Patient", "h1", updated=stamp(13))
    await delete(store, "Patient", "h2", updated=stamp(14))
    everything = await store.history(None, None, None, 100, None)
    seqs = [r.seq for r in everything]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 5
    assert [(r.type, r.id, r.version, r.method) for r in everything] == [
        ("Patient", "h2", 2, "DELETE"), ("Patient", "h1", 2, "PUT"), ("Patient", "h2", 1, "POST"),
        ("Practitioner", "h1", 1, "POST"), ("Patient", "h1", 1, "POST")]
    assert everything[0].deleted and everything[0].body is None
    assert [r.version for r in await store.history("Patient", "h1", None, 100, None)] == [2, 1]
    assert len(await store.history("Patient", None, None, 100, None)) == 4
    assert [(r.type, r.version) for r in await store.history(
        None, "h1", None, 100, None)] == [("Patient", 2), ("Practitioner", 1), ("Patient", 1)]
    since = await store.history(None, None, stamp(12), 100, None)
    assert [r.updated >= stamp(12) for r in since] == [True] * 3
    first = await store.history(None, None, None, 2, None)
    rest = await store.history(None, None, None, 100, first[-1].seq)
    assert [r.seq for r in first + rest] == seqs
    assert await store.history(None, None, None, 0, None) == []
    assert await store.history("Patient", "nobody", None, 10, None) == []


# -- atomic units -------------------------------------------------------------------------------
async def test_atomic_rolls_back_on_exception(store: DocumentStore) -> None:
    await put(store, "Patient", "keep")
    before = await store.history(None, None, None, 100, None)

    async def failing(unit: Unit) -> None:
        await unit.write(Record("Patient", "ghost", 1, stamp(), False, b"{}"),
                         [name("ghost")], 0)
        await unit.write(Record("Patient", "keep", 2, stamp(), False, b"{}"), [], 1)
        assert await unit.claim("slot/ghost", "Appointment", "g")
        assert await unit.find_ids(Query("Patient", (Entry("name", (Cond(
            "val", "=", "ghost"),)),))) == ["ghost"]  # the unit sees its own writes
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await store.atomic(failing)
    assert await store.get("Patient", "ghost") is None
    kept = await store.get("Patient", "keep")
    assert kept is not None and kept.version == 1
    assert await store.claim_keys("slot/") == []
    assert [r.seq for r in await store.history(None, None, None, 100, None)] == [
        r.seq for r in before]
    after = await put(store, "Patient", "next")
    assert after.seq > before[0].seq


async def test_marks_are_listed_by_prefix_in_key_order_and_deleted_once(
        store: DocumentStore) -> None:
    async def fill(unit: Unit) -> None:
        for key in ("auth/jti/b", "auth/jti/a", "auth/jtx", "auth/client/z", "auth/jti/c"):
            await unit.mark_put(key, key.upper())

    await store.atomic(fill)

    async def listing(unit: Unit) -> list[tuple[str, str]]:
        return await unit.mark_list("auth/jti/")

    assert await store.atomic(listing) == [("auth/jti/a", "AUTH/JTI/A"),
                                           ("auth/jti/b", "AUTH/JTI/B"),
                                           ("auth/jti/c", "AUTH/JTI/C")]

    async def limited(unit: Unit) -> list[tuple[str, str]]:
        return await unit.mark_list("auth/", limit=2)

    assert [k for k, _ in await store.atomic(limited)] == ["auth/client/z", "auth/jti/a"]

    async def take(unit: Unit) -> tuple[bool, bool, str | None]:
        return (await unit.mark_delete("auth/jti/b"), await unit.mark_delete("auth/jti/b"),
                await unit.mark_get("auth/jti/b"))

    assert await store.atomic(take) == (True, False, None)
    assert [k for k, _ in await store.atomic(listing)] == ["auth/jti/a", "auth/jti/c"]


async def test_a_failing_unit_among_concurrent_ones_undoes_only_itself(
        store: DocumentStore) -> None:
    """Concurrent units may share a commit (SQLite group commit); each still stands alone."""

    async def unit_for(n: int) -> Callable[[Unit], Awaitable[int]]:
        async def run(unit: Unit) -> int:
            await unit.write(Record("Patient", f"batch-{n}", 1, stamp(), False, b"{}"),
                             [name(f"batch{n}")], 0)
            assert await unit.claim(f"batch/{n}", "Patient", f"batch-{n}")
            if n == 5:
                raise RuntimeError("unit 5 fails after writing")
            return n

        return run

    results = await asyncio.gather(*[store.atomic(await unit_for(n)) for n in range(10)],
                                   return_exceptions=True)
    assert [r for r in results if not isinstance(r, Exception)] == [
        n for n in range(10) if n != 5]
    assert isinstance(results[5], RuntimeError)
    assert await store.get("Patient", "batch-5") is None
    for n in range(10):
        if n != 5:
            rec = await store.get("Patient", f"batch-{n}")
            assert rec is not None and rec.version == 1
    assert [k for k, _o, _i in await store.claim_keys("batch/")] == [
        f"batch/{n}" for n in range(10) if n != 5]


async def test_atomic_returns_the_result_and_version_conflict_inside_rolls_back(
        store: DocumentStore) -> None:
    await put(store, "Patient", "x")

    async def conflicting(unit: Unit) -> None:
        await unit.write(Record("Patient", "y", 1, stamp(), False, b"{}"), [], 0)
        await unit.write(Record("Patient", "x", 2, stamp(), False, b"{}"), [], 7)

    with pytest.raises(VersionConflict):
        await store.atomic(conflicting)
    assert await store.get("Patient", "y") is None

    async def value(unit: Unit) -> tuple[int, str]:
        return 42, "ok"

    assert await store.atomic(value) == (42, "ok")


async def test_claims(store: DocumentStore) -> None:
    async def run(unit: Unit) -> list[Any]:
        return [
            await unit.claim("slot/1", "Appointment", "a"),
            await unit.claim("slot/1", "Appointment", "a"),  # idempotent for the owner
            await unit.claim("slot/1", "Appointment", "b"),
            await unit.claim("slot/2", "Appointment", "a"),
            await unit.claim("hold/9", "Slot", "s"),
            await unit.claims_of("Appointment", "a"),
            await unit.count_claims("slot/"),
        ]

    assert await store.atomic(run) == [True, True, False, True, True, ["slot/1", "slot/2"], 2]
    assert await store.claim_keys("slot/") == [("slot/1", "Appointment", "a"),
                                               ("slot/2", "Appointment", "a")]
    assert await store.claim_keys("") == [("hold/9", "Slot", "s"),
                                          ("slot/1", "Appointment", "a"),
                                          ("slot/2", "Appointment", "a")]

    async def release(unit: Unit) -> list[Any]:
        await unit.release("Appointment", "a", ["slot/2", "slot/none"])
        await unit.release("Appointment", "b")  # owns nothing: no effect
        first = await unit.claims_of("Appointment", "a")
        await unit.release("Appointment", "a")
        return [first, await unit.claims_of("Appointment", "a"), await unit.count_claims("")]

    assert await store.atomic(release) == [["slot/1"], [], 1]
    assert await store.claim_keys("slot/") == []

    async def reclaim(unit: Unit) -> bool:
        return await unit.claim("slot/1", "Appointment", "b")

    assert await store.atomic(reclaim)


async def test_expiring_claims_are_taken_over(store: DocumentStore) -> None:
    async def run(unit: Unit) -> list[bool]:
        return [
            await unit.claim("slot/e", "Slot", "h1", expires=stamp(100), now=stamp(50)),
            await unit.claim("slot/e", "Slot", "h2", expires=stamp(200), now=stamp(60)),
            await unit.claim("slot/e", "Slot", "h1", expires=stamp(150), now=stamp(70)),  # renew
            await unit.claim("slot/e", "Slot", "h2", now=stamp(150)),  # lapsed (<=): taken over
            await unit.claim("slot/e", "Slot", "h1", expires=stamp(900), now=stamp(999)),
            await unit.claim("slot/f", "Slot", "h1", expires=stamp(10)),
            await unit.claim("slot/f", "Slot", "h2"),  # no "now": nothing lapses
        ]

    assert await store.atomic(run) == [True, False, True, True, False, True, False]
    assert await store.claims_between("slot/", "slot/\uffff") == [
        ("slot/e", None), ("slot/f", stamp(10))]
    assert await store.claims_between("slot/e", "slot/f") == [("slot/e", None)]
    assert await store.claims_between("slot/g", "slot/z") == []
    assert await store.claim_keys("slot/") == [("slot/e", "Slot", "h2"), ("slot/f", "Slot", "h1")]


async def test_one_claim_wins_across_concurrent_units(open_store: StoreFactory) -> None:
    stores = [await open_store(), await open_store()]

    async def contender(n: int) -> bool:
        async def run(unit: Unit) -> bool:
            return await unit.claim("slot/contested", "Appointment", f"a{n}")

        return await stores[n % 2].atomic(run)

    results = await asyncio.gather(*(contender(n) for n in range(12)))
    assert results.count(True) == 1
    keys = await stores[0].claim_keys("slot/")
    assert keys == [("slot/contested", "Appointment", f"a{results.index(True)}")]


async def test_no_lost_update_across_store_objects(open_store: StoreFactory) -> None:
    stores = [await open_store(), await open_store()]
    await put(stores[0], "Patient", "counter", body=b'{"n":0}')

    async def increment(n: int) -> None:
        async def run(unit: Unit) -> None:
            prev = await unit.get("Patient", "counter")
            assert prev is not None and prev.body is not None
            count = orjson.loads(prev.body)["n"] + 1
            await unit.write(Record("Patient", "counter", prev.version + 1, stamp(), False,
                                    orjson.dumps({"n": count})), [], prev.version)

        await stores[n % 2].atomic(run)

    await asyncio.gather(*(increment(n) for n in range(16)))
    got = await stores[1].get("Patient", "counter")
    assert got is not None and got.body is not None
    assert (got.version, orjson.loads(got.body)["n"]) == (17, 16)
    history = await stores[0].history("Patient", "counter", None, 100, None)
    assert [r.version for r in history] == list(range(17, 0, -1))


async def test_search_then_insert_creates_once_across_store_objects(
        open_store: StoreFactory) -> None:
    """If-None-Exist: a unit that finds nothing and creates must not race another doing so."""
    stores = [await open_store(), await open_store()]
    criteria = Query("Patient", (Entry("identifier", (Cond("sys", "=", "urn:mrn"),
                                                      Cond("val", "=", "42"))),))

    async def create(n: int) -> str:
        async def run(unit: Unit) -> str:
            found = await unit.find_ids(criteria, limit=2)
            if found:
                return found[0]
            id_ = f"p{n}"
            await unit.write(Record("Patient", id_, 1, stamp(), False, b"{}", "POST"),
                             [ident("urn:mrn", "42")], 0)
            return id_

        return await stores[n % 2].atomic(run)

    made = await asyncio.gather(*(create(n) for n in range(12)))
    assert len(set(made)) == 1
    assert await ids(stores[0], "Patient") == {made[0]}


async def test_find_ids_limit_and_order(store: DocumentStore) -> None:
    for n in range(4):
        await put(store, "Patient", f"f{n}", [name("same")])
    same = Query("Patient", (Entry("name", (Cond("val", "=", "same"),)),))

    async def run(unit: Unit) -> list[list[str]]:
        return [await unit.find_ids(same, limit=2), await unit.find_ids(same, limit=10)]

    two, all_ = await store.atomic(run)
    assert two == ["f0", "f1"] and all_ == ["f0", "f1", "f2", "f3"]


async def test_find_bodies_gives_each_live_match_with_its_current_body_in_order(
        store: DocumentStore) -> None:
    for n in range(3):
        await put(store, "Patient", f"b{n}", [name("body")])
    await delete(store, "Patient", "b1")
    same = Query("Patient", (Entry("name", (Cond("val", "=", "body"),)),))

    async def run(unit: Unit) -> list[tuple[str, bytes]]:
        await unit.write(Record("Patient", "b3", 1, stamp(), False, b'{"n": 3}', "POST"),
                         [name("body")], 0)
        return await unit.find_bodies(same, limit=10)

    found = await store.atomic(run)
    assert [id_ for id_, _ in found] == ["b0", "b2", "b3"]  # the unit's own write included
    assert found[2][1] == b'{"n": 3}'
    stored = await store.get("Patient", "b0")
    assert stored is not None and found[0][1] == stored.body


async def test_count_counts_live_matches_as_the_unit_sees_them(store: DocumentStore) -> None:
    for n in range(4):
        await put(store, "Patient", f"c{n}", [ref("general-practitioner", "Practitioner/x")])
    await delete(store, "Patient", "c0")
    by_ref = Query("Patient", (Entry("general-practitioner", (
        Cond("val", "=", "Practitioner/x"),), unique=True),))

    async def run(unit: Unit) -> tuple[int, int]:
        before = await unit.count(by_ref)
        await unit.write(Record("Patient", "c9", 1, stamp(), False, b"{}", "POST"),
                         [ref("general-practitioner", "Practitioner/x")], 0)
        return before, await unit.count(by_ref)

    assert await store.atomic(run) == (3, 4)


# -- search -------------------------------------------------------------------------------------
@pytest.fixture
async def people(store: DocumentStore) -> DocumentStore:
    await put(store, "Practitioner", "dr1", [name("house", "House")])
    await put(store, "Practitioner", "dr2", [name("wilson", "Wilson")])
    await put(store, "Patient", "p1", [name("muller", "Müller"), name("anna", "Anna"),
                                       ident("urn:a", "1"), date(100, 199),
                                       ref("general-practitioner", "Practitioner/dr1")])
    await put(store, "Patient", "p2", [name("mueller", "Mueller"), ident("urn:b", "2"),
                                       ident(None, "3"), date(200, 299),
                                       ref("general-practitioner", "Practitioner/dr2")])
    await put(store, "Patient", "p3", [name("smith", "Smith"), date(300, 399),
                                       ref("general-practitioner", "Practitioner/dr1"),
                                       ref("general-practitioner", "http://elsewhere/P/1")])
    await put(store, "Patient", "p4", [ident("urn:a", "4"), IndexEntry("active", val="true")])
    await put(store, "Appointment", "a1", [ref("actor", "Patient/p1"),
                                           ref("actor", "Practitioner/dr2"),
                                           IndexEntry("status", val="booked")])
    await put(store, "Appointment", "a2", [ref("actor", "Patient/p2"),
                                           IndexEntry("status", val="cancelled")])
    await put(store, "Appointment", "a3", [ref("actor", "Patient/p3")])
    await delete(store, "Appointment", "a3")
    return store


def e(param: str, *conds: Cond) -> Entry:
    return Entry(param, conds)


async def test_search_entry_comparisons(people: DocumentStore) -> None:
    s = people
    assert await ids(s, "Patient") == {"p1", "p2", "p3", "p4"}
    assert await ids(s, "Patient", e("name", Cond("val", "=", "smith"))) == {"p3"}
    assert await ids(s, "Patient", e("name", Cond("val", "startswith", "mu"))) == {"p1", "p2"}
    assert await ids(s, "Patient", e("name", Cond("val", "contains", "ll"))) == {"p1", "p2"}
    assert await ids(s, "Patient", e("name", Cond("val", "contains", "."))) == set()
    assert await ids(s, "Patient", e("name", Cond("val", "startswith", "m"),
                                     Cond("val", "contains", "ue"))) == {"p2"}
    assert await ids(s, "Patient", e("name", Cond("val", "startswith", "m"),
                                     Cond("val", "startswith", "mul"))) == {"p1"}
    assert await ids(s, "Patient", e("name", Cond("raw", "=", "Müller"))) == {"p1"}
    assert await ids(s, "Patient", e("identifier", Cond("sys", "=", "urn:a"),
                                     Cond("val", "=", "1"))) == {"p1"}
    # the conditions hold for one and the same entry, not for different entries
    assert await ids(s, "Patient", e("identifier", Cond("sys", "=", "urn:a"),
                                     Cond("val", "=", "2"))) == set()
    assert await ids(s, "Patient", e("identifier", Cond("sys", "isnull"))) == {"p2"}
    assert await ids(s, "Patient", e("identifier", Cond("sys", "notnull"),
                                     Cond("val", "=", "3"))) == set()
    # SQL semantics: != never matches an entry that lacks the field
    assert await ids(s, "Patient", e("identifier", Cond("sys", "!=", "urn:a"))) == {"p2"}
    assert await ids(s, "Patient", e("birthdate", Cond("lo", ">=", 200),
                                     Cond("hi", "<=", 299))) == {"p2"}
    assert await ids(s, "Patient", e("birthdate", Cond("lo", ">", 200))) == {"p3"}
    assert await ids(s, "Patient", e("birthdate", Cond("hi", "<", 299.5))) == {"p1", "p2"}
    assert await ids(s, "Patient", e("birthdate", Cond("lo", "<=", 100.0))) == {"p1"}
    assert await ids(s, "Patient", e("birthdate", Cond("lo", "!=", 100))) == {"p2", "p3"}
    assert await ids(s, "Patient", e("birthdate")) == {"p1", "p2", "p3"}
    assert await ids(s, "Patient", e("nothing")) == set()
    # _id is answered by the resource id itself
    assert await ids(s, "Patient", e("_id", Cond("val", "=", "p2"))) == {"p2"}
    assert await ids(s, "Patient", AnyOf((e("_id", Cond("val", "=", "p2")),
                                          e("_id", Cond("val", "=", "p4"))))) == {"p2", "p4"}
    assert await ids(s, "Patient", Not(e("_id", Cond("val", "!=", "p3")))) == {"p3"}
    assert await ids(s, "Patient", e("_id", Cond("val", ">", "p1"),
                                     Cond("val", "<", "p4"))) == {"p2", "p3"}
    assert await ids(s, "Patient", Has("Appointment", "actor", (
        e("_id", Cond("val", "=", "a2")),))) == {"p2"}


async def test_search_missing_not_anyof_allof(people: DocumentStore) -> None:
    s = people
    assert await ids(s, "Patient", Missing("birthdate")) == {"p4"}
    assert await ids(s, "Patient", Missing("birthdate", missing=False)) == {"p1", "p2", "p3"}
    assert await ids(s, "Patient", Not(e("identifier", Cond("sys", "=", "urn:a")))) == {
        "p2", "p3"}
    assert await ids(s, "Patient", Not(Missing("active"))) == {"p4"}
    assert await ids(s, "Patient", AnyOf((e("name", Cond("val", "=", "smith")),
                                          e("identifier", Cond("val", "=", "4"))))) == {
        "p3", "p4"}
    assert await ids(s, "Patient", AnyOf(())) == set()
    assert await ids(s, "Patient", AllOf(())) == {"p1", "p2", "p3", "p4"}
    assert await ids(s, "Patient", Not(AllOf(()))) == set()
    assert await ids(s, "Patient", AllOf((e("name", Cond("val", "startswith", "mu")),
                                          Not(e("identifier", Cond("val", "=", "1")))))) == {
        "p2"}
    assert await ids(s, "Patient", e("name", Cond("val", "startswith", "m")),
                     AnyOf((Missing("identifier"), e("birthdate", Cond("lo", "<", 150))))) == {
        "p1"}


async def test_search_chain_and_has(people: DocumentStore) -> None:
    s = people
    by_gp = Chain("general-practitioner", "Practitioner", (e("name", Cond("val", "=", "house")),))
    assert await ids(s, "Patient", by_gp) == {"p1", "p3"}
    assert await ids(s, "Patient", Not(by_gp)) == {"p2", "p4"}
    assert await ids(s, "Patient", Chain("general-practitioner", "Practitioner",
                                         (e("name", Cond("val", "=", "nobody")),))) == set()
    assert await ids(s, "Patient", Chain("general-practitioner", "Practitioner", ())) == {
        "p1", "p2", "p3"}
    assert await ids(s, "Appointment", Chain("actor", "Patient", (
        e("identifier", Cond("sys", "=", "urn:b")),))) == {"a2"}
    booked = Has("Appointment", "actor", (e("status", Cond("val", "=", "booked")),))
    assert await ids(s, "Patient", booked) == {"p1"}
    assert await ids(s, "Practitioner", booked) == {"dr2"}
    assert await ids(s, "Patient", Has("Appointment", "actor", ())) == {"p1", "p2"}
    assert await ids(s, "Patient", Not(Has("Appointment", "actor", ()))) == {"p3", "p4"}
    assert await ids(s, "Patient", Has("Appointment", "actor", (Missing("status"),))) == set()
    # chained inside _has: appointments whose actor is a patient seen by dr1
    assert await ids(s, "Practitioner", Has("Appointment", "actor", (Chain(
        "actor", "Patient", (by_gp,)),))) == {"dr2"}


async def test_search_totals_and_count_only(people: DocumentStore) -> None:
    s = people
    where = (e("name", Cond("val", "startswith", "m")),)
    page = await s.search(Query("Patient", where, count=1, total=True))
    assert page.total == 2 and len(page.rows) == 1 and page.next_after is not None
    page = await s.search(Query("Patient", where, total=True, count_only=True))
    assert (page.rows, page.next_after, page.total) == ([], None, 2)
    page = await s.search(Query("Patient", where, count=0))
    assert page.rows == [] and page.total is None
    page = await s.search(Query("Appointment", count=10, include_deleted=True, total=True))
    assert page.total == 3 and ("a3", None) in page.rows
    bodies = dict(page.rows)
    assert orjson.loads(bodies["a1"] or b"") == {"resourceType": "Appointment", "id": "a1"}


async def _all_pages(store: DocumentStore, query: Query) -> list[str]:
    seen: list[str] = []
    after = None
    for _ in range(100):
        page = await store.search(Query(query.type, query.where, query.sort, query.count,
                                        after=after))
        seen += [i for i, _ in page.rows]
        if page.next_after is None:
            return seen
        after = tuple(orjson.loads(orjson.dumps(list(page.next_after))))  # as a _page token
    raise AssertionError("paging did not end")


async def test_keyset_paging_mixed_directions_with_missing_values(store: DocumentStore) -> None:
    names = ["b", "a", None, "c", "a", None, "b", "a", "d", None, "c", "a"]
    dates: list[list[int]] = [[5], [], [7, 1], [3], [3], [], [9, 2], [5], [], [1], [3], [8, 4]]
    expected_rows = []
    for n, (nm, ds) in enumerate(zip(names, dates, strict=True)):
        entries = [date(d) for d in ds]
        if nm is not None:
            entries += [name(nm), name("z" + nm)]  # MIN over several entries
        await put(store, "Patient", f"k{n:02d}", entries)
        expected_rows.append((f"k{n:02d}", nm if nm is not None else HIGH_STR,
                              max(ds) if ds else LOW_NUM, min(ds) if ds else 9.0e18, n))
    sort_a = (SortKey("name"), SortKey("birthdate", descending=True, field="lo"))
    want = [r[0] for r in sorted(expected_rows, key=lambda r: (r[1], -r[2], r[4]))]
    for count in (1, 3, 5, 50):
        assert await _all_pages(store, Query("Patient", (), sort_a, count)) == want
    sort_b = (SortKey("birthdate", field="lo"), SortKey("_id", descending=True))
    want_b = [r[0] for r in sorted(sorted(expected_rows, key=lambda r: r[0], reverse=True),
                                   key=lambda r: r[3])]
    assert await _all_pages(store, Query("Patient", (), sort_b, 4)) == want_b
    # descending by name: MAX of the entries, missing values last
    sort_c = (SortKey("name", descending=True),)
    rows_c = [(r[0], max(nm, "z" + nm) if (nm := names[r[4]]) is not None else "", r[4])
              for r in expected_rows]
    want_c = [r[0] for r in sorted(sorted(rows_c, key=lambda r: r[2]), key=lambda r: r[1],
                                   reverse=True)]
    assert await _all_pages(store, Query("Patient", (), sort_c, 2)) == want_c
    # the default order is creation order, paged the same way
    assert await _all_pages(store, Query("Patient", (), (), 5)) == [r[0] for r in expected_rows]


async def test_paging_is_stable_while_others_insert(store: DocumentStore) -> None:
    for n in range(6):
        await put(store, "Patient", f"s{n}", [name(f"n{n % 3}")])
    sort = (SortKey("name", descending=True),)
    first = await store.search(Query("Patient", (), sort, 3))
    await put(store, "Patient", "late", [name("n0")])  # sorts after everything seen so far
    rest = await store.search(Query("Patient", (), sort, 10, after=first.next_after))
    got = [i for i, _ in first.rows + rest.rows]
    assert got == ["s2", "s5", "s1", "s4", "s0", "s3", "late"]


# -- the change feed ----------------------------------------------------------------------------
DESK = Origin("Practitioner/desk-7", "scheduler-app", "rest", "req-1")
SWEEPER = Origin("system/sweeper", None, "system", "req-2")


async def test_changes_since_returns_changes_in_commit_order_with_their_origins(
        store: DocumentStore) -> None:
    first = await put(store, "Patient", "c1", [name("c")], origin=DESK)
    second = await put(store, "Slot", "c2", origin=SWEEPER)
    third = await delete(store, "Patient", "c1")
    feed = await store.changes_since(0, 10)
    assert [(r.seq, r.type, r.id, r.version, r.method, r.deleted) for r in feed] == [
        (first.seq, "Patient", "c1", 1, "POST", False),
        (second.seq, "Slot", "c2", 1, "POST", False),
        (third.seq, "Patient", "c1", 2, "DELETE", True)]
    assert first.seq < second.seq < third.seq
    assert [r.origin for r in feed] == [DESK, SWEEPER, SYSTEM_ORIGIN]
    assert feed[0].body == first.body and feed[2].body is None


async def test_changes_since_starts_after_the_position_and_stops_at_the_limit(
        store: DocumentStore) -> None:
    recs = [await put(store, "Patient", f"l{n}") for n in range(5)]
    assert [r.seq for r in await store.changes_since(recs[1].seq, 2)] == [
        recs[2].seq, recs[3].seq]
    assert [r.seq for r in await store.changes_since(recs[3].seq, 10)] == [recs[4].seq]
    assert await store.changes_since(recs[4].seq, 10) == []
    assert await store.changes_since(0, 0) == []


async def test_last_position_is_zero_when_empty_then_the_newest_seq(store: DocumentStore) -> None:
    assert await store.last_position() == 0
    await put(store, "Patient", "h1")
    newest = await put(store, "Patient", "h2")
    assert await store.last_position() == newest.seq
    assert await store.changes_since(await store.last_position(), 10) == []


async def test_history_and_versions_carry_the_origin(store: DocumentStore) -> None:
    await put(store, "Patient", "o", origin=DESK)
    await put(store, "Patient", "o", origin=SWEEPER)
    assert [r.origin for r in await store.history("Patient", "o", None, 10, None)] == [
        SWEEPER, DESK]
    v1 = await store.get_version("Patient", "o", 1)
    assert v1 is not None and v1.origin == DESK


async def test_origin_survives_reopening_the_store(open_store: StoreFactory) -> None:
    await open_store()  # holds the database for the fixture's cleanup
    writer = await open_store()
    rec = await put(writer, "Patient", "kept", origin=DESK)
    await writer.close()
    reopened = await open_store()
    assert [(r.seq, r.origin) for r in await reopened.changes_since(0, 10)] == [
        (rec.seq, DESK)]


async def test_a_resuming_reader_sees_every_change_once_in_order_under_concurrent_writers(
        open_store: StoreFactory) -> None:
    """4 writers x 50 writes on two store objects (two processes), while a reader on a third
    polls in batches of 7 and resumes from the last seq it processed each time."""
    writing = [await open_store(), await open_store()]
    reader = await open_store()
    start = await reader.last_position()
    done = asyncio.Event()

    async def writer(w: int) -> list[str]:
        sent = []
        for k in range(50):
            request = f"w{w}-{k}"
            await put(writing[w % 2], "Patient", f"feed-{w}-{k % 5}",
                      origin=Origin(f"writer/{w}", None, "rest", request))
            sent.append(request)
            if k % 5 == 0:
                await asyncio.sleep(0)
        return sent

    reading = asyncio.create_task(follow(reader, start, done, 7, 0.002))
    sent = await asyncio.gather(*(writer(w) for w in range(4)))
    done.set()
    seen = await reading
    seqs = [r.seq for r in seen]
    assert all(a < b for a, b in itertools.pairwise(seqs))  # ascending, no repeat
    requests = [r.origin.request_id for r in seen]
    assert len(requests) == len(set(requests)) == 200
    assert set(requests) == {req for reqs in sent for req in reqs}
    for rec in seen:  # every change arrives with its own writer's origin
        assert rec.origin.subject == f"writer/{rec.origin.request_id.split('-')[0][1:]}"


# -- errors the adapters raise ------------------------------------------------------------------
async def test_a_cursor_that_does_not_fit_the_query_raises_invalid_cursor(
        store: DocumentStore) -> None:
    for n in range(3):
        await put(store, "Patient", f"cur{n}", [name(f"n{n}")])
    page = await store.search(Query("Patient", (), (SortKey("name"),), 1))
    assert page.next_after is not None
    with pytest.raises(InvalidCursor):  # a cursor of another sort order
        await store.search(Query("Patient", (), (), 1, after=page.next_after))
    with pytest.raises(InvalidCursor):  # not values any search produces
        await store.search(Query("Patient", (), (), 1, after=({"$gt": 0},)))


@pytest.mark.parametrize("store_kind", ["mongo"], indirect=True, scope="session")  # Mongo only
async def test_a_join_past_the_adapter_limit_raises_query_too_complex(
        store: DocumentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    assert store.name == "mongo"
    from fhir_sched.storage.mongo import query as mongo_query

    monkeypatch.setattr(mongo_query, "JOIN_LIMIT", 2)
    for n in range(3):
        await put(store, "Practitioner", f"j{n}", [name("same")])
    with pytest.raises(QueryTooComplex):
        await ids(store, "Patient", Chain("general-practitioner", "Practitioner",
                                          (e("name", Cond("val", "=", "same")),)))


async def test_sqlite_refuses_a_query_past_its_limits_as_too_complex(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "deep.db"))
    await store.start()
    try:
        await put(store, "Patient", "p", [name("deep")])
        # name=v0,v1,...: one seek per value (a compound SELECT past 500 terms), one OR of
        # 1500 comparisons in the probe (an expression tree past 1000 deep)
        wide = AnyOf(tuple(e("name", Cond("val", "startswith", f"v{n}")) for n in range(1500)))
        for where in ((wide,), (Missing("name", missing=False), Not(wide))):
            with pytest.raises(QueryTooComplex):
                await store.search(Query("Patient", where))

        async def inside_a_unit(unit: Unit) -> list[str]:
            return await unit.find_ids(Query("Patient", (wide,)))

        with pytest.raises(QueryTooComplex):
            await store.atomic(inside_a_unit)
    finally:
        await store.close()


def test_store_errors_read_to_clients_as_the_service_says() -> None:
    too_costly = as_fhir_error(QueryTooComplex("Expression tree is too large"))
    assert (too_costly.status, too_costly.code) == (400, "too-costly")
    assert "Expression tree is too large" in too_costly.diagnostics
    cursor = as_fhir_error(InvalidCursor("the page cursor does not fit this search"))
    assert (cursor.status, cursor.code, cursor.expression) == (400, "invalid", ["_page"])
    down = as_fhir_error(StoreUnavailable("database is locked"))
    assert (down.status, down.code, down.headers) == (503, "transient", {"Retry-After": "2"})
    assert as_fhir_error(VersionConflict(3)).status == 409


# -- upgrading an SQLite file made by an older release -------------------------------------------
OLD_SCHEMA = """
CREATE TABLE resources(
  pos INTEGER PRIMARY KEY AUTOINCREMENT,
  type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, updated TEXT NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0, body BLOB);
CREATE UNIQUE INDEX resources_key ON resources(type, id);
CREATE TABLE changes(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, updated TEXT NOT NULL,
  method TEXT NOT NULL, body BLOB);
CREATE UNIQUE INDEX changes_version ON changes(type, id, version);
CREATE TABLE idx(type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
  sys TEXT, val TEXT, raw TEXT, lo, hi);
CREATE TABLE claims(key TEXT PRIMARY KEY, owner_type TEXT NOT NULL, owner_id TEXT NOT NULL)
  WITHOUT ROWID;
"""


def old_file(path: Path) -> None:
    """A store as the release before origins (and claim expiry) wrote it: two versions of one
    Patient in the change log."""
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    v1 = b'{"resourceType":"Patient","id":"old"}'
    v2 = b'{"resourceType":"Patient","id":"old","active":true}'
    conn.execute("INSERT INTO resources(type, id, version, updated, body) VALUES (?,?,?,?,?)",
                 ("Patient", "old", 2, stamp(2), v2))
    conn.executemany("INSERT INTO changes(type, id, version, updated, method, body)"
                     " VALUES (?,?,?,?,?,?)", [("Patient", "old", 1, stamp(1), "POST", v1),
                                               ("Patient", "old", 2, stamp(2), "PUT", v2)])
    conn.commit()
    conn.close()


async def test_an_old_sqlite_file_keeps_its_history_readable_after_the_upgrade(
        tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_file(path)
    store = SqliteStore(str(path))
    await store.start()
    try:
        history = await store.history("Patient", "old", None, 10, None)
        assert [(r.version, r.method, r.origin) for r in history] == [
            (2, "PUT", SYSTEM_ORIGIN), (1, "POST", SYSTEM_ORIGIN)]
        assert [r.seq for r in await store.changes_since(0, 10)] == [1, 2]
        current = await store.get("Patient", "old")
        assert current is not None and current.body == history[0].body
    finally:
        await store.close()


async def test_an_upgraded_sqlite_file_records_origins_and_reopens_unchanged(
        tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_file(path)
    for reopen in range(2):  # the second start finds the file upgraded already
        store = SqliteStore(str(path))
        await store.start()
        try:
            if reopen == 0:
                await put(store, "Patient", "old", origin=DESK)
            feed = await store.changes_since(0, 10)
        finally:
            await store.close()
        assert [(r.version, r.origin) for r in feed] == [
            (1, SYSTEM_ORIGIN), (2, SYSTEM_ORIGIN), (3, DESK)]


# -- batched writes -----------------------------------------------------------------------------
async def test_write_all_makes_the_same_writes_as_write_in_order(store: DocumentStore) -> None:
    await put(store, "Patient", "wa-old", [name("before")])
    recs = [Record("Patient", "wa-1", 1, stamp(), False, b'{"n":1}', "POST", origin=DESK),
            Record("Patient", "wa-old", 2, stamp(), False, b'{"n":2}', "PUT"),
            Record("Patient", "wa-2", 1, stamp(), False, b'{"n":3}', "POST"),
            Record("Patient", "wa-1", 2, stamp(), False, b'{"n":4}', "PUT", origin=SWEEPER)]
    entries = [[name("one")], [name("old")], [name("two")], [name("uno")]]

    async def run(unit: Unit) -> None:
        await unit.write_all([(r, es, r.version - 1) for r, es in zip(recs, entries,
                                                                       strict=True)])

    await store.atomic(run)
    assert [r.seq for r in recs] == sorted(r.seq for r in recs)
    feed = await store.changes_since(recs[0].seq - 1, 10)
    assert [(r.id, r.version, r.body, r.origin) for r in feed] == [
        (r.id, r.version, r.body, r.origin) for r in recs]
    got = await store.get("Patient", "wa-1")
    assert got is not None and (got.version, got.body) == (2, b'{"n":4}')
    assert await ids(store, "Patient", e("name", Cond("val", "=", "uno"))) == {"wa-1"}
    assert await ids(store, "Patient", e("name", Cond("val", "=", "one"))) == set()
    assert await ids(store, "Patient", e("name", Cond("val", "=", "old"))) == {"wa-old"}


async def test_write_all_stops_at_a_version_conflict_keeping_the_writes_before_it(
        store: DocumentStore) -> None:
    await put(store, "Patient", "taken")

    async def run(unit: Unit) -> int:
        try:
            await unit.write_all([
                (Record("Patient", "wc-1", 1, stamp(), False, b"{}", "POST"), [], 0),
                (Record("Patient", "taken", 1, stamp(), False, b"{}", "POST"), [], 0),
                (Record("Patient", "wc-2", 1, stamp(), False, b"{}", "POST"), [], 0)])
        except VersionConflict as exc:
            return exc.current
        raise AssertionError("no conflict")

    assert await store.atomic(run) == 1
    assert await store.get("Patient", "wc-1") is not None
    assert await store.get("Patient", "wc-2") is None


async def test_proposals_are_kept_until_they_expire_and_shared_across_stores(
        open_store: StoreFactory) -> None:
    one, two = await open_store(), await open_store()
    await one.put_proposals([("p-1", b'{"a":1}'), ("p-2", b'{"a":2}')],
                            "2026-03-01T10:00:00.000Z", "2026-03-01T09:00:00.000Z")
    assert await two.get_proposal("p-1") == (b'{"a":1}', "2026-03-01T10:00:00.000Z")
    assert await two.get_proposal("unknown") is None
    # offered again: same id, content and expiry replaced
    await two.put_proposals([("p-1", b'{"a":3}')], "2026-03-01T11:00:00.000Z",
                            "2026-03-01T09:30:00.000Z")
    assert await one.get_proposal("p-1") == (b'{"a":3}', "2026-03-01T11:00:00.000Z")
    # an expired proposal stays readable (so "expired" can be told from "unknown") until a
    # later put passes its expiry, which drops it
    assert await one.get_proposal("p-2") == (b'{"a":2}', "2026-03-01T10:00:00.000Z")
    await one.put_proposals([("p-3", b"{}")], "2026-03-01T12:00:00.000Z",
                            "2026-03-01T10:30:00.000Z")
    assert await two.get_proposal("p-2") is None
    assert await two.get_proposal("p-1") is not None
    await one.put_proposals([], "2026-03-01T12:00:00.000Z", "2026-03-01T23:00:00.000Z")
    assert await two.get_proposal("p-3") is not None  # an empty put writes nothing


FIRST_AUDIT_TABLE = """
CREATE TABLE audit(
  id TEXT PRIMARY KEY, recorded TEXT NOT NULL, door TEXT NOT NULL, action TEXT NOT NULL,
  subtype TEXT NOT NULL, outcome TEXT NOT NULL, who TEXT NOT NULL, client_id TEXT,
  request_id TEXT, entity TEXT, patient TEXT, detail TEXT NOT NULL DEFAULT '') WITHOUT ROWID;
INSERT INTO audit VALUES ('b', '2026-12-01T10:00:01.000Z', 'rest', 'R', 'read', '0', 'anonymous',
  NULL, 'r2', 'Appointment/1', 'Patient/p', '');
INSERT INTO audit VALUES ('a', '2026-12-01T10:00:00.000Z', 'rest', 'R', 'read', '0', 'anonymous',
  NULL, 'r1', 'Appointment/1', 'Patient/p', '');
"""


async def test_audit_entries_of_the_first_audit_table_survive_the_upgrade_in_time_order(
        tmp_path: Path) -> None:
    path = tmp_path / "audited.db"
    conn = sqlite3.connect(path)
    conn.executescript(FIRST_AUDIT_TABLE)
    conn.close()
    for _ in range(2):  # the second start finds nothing left to move
        store = SqliteStore(str(path))
        await store.start()
        try:
            listed = await store.audit_list(patient="Patient/p")
            assert [e.request_id for e in listed] == ["r2", "r1"]
            assert (await store.audit_list(before_id="b"))[0].id == "a"
        finally:
            await store.close()
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert "audit" not in tables and "audit_log" in tables


# -- isolation without one deployment-wide lock -------------------------------------------------
# SQLite has one writer at a time by design; MongoDB's units run side by side, each on its own
# snapshot. What the port promises either way: a unit's reads are as good as locked (no write
# skew, no phantom for the searches it decides on), and the feed stays exactly-once and ordered.
MONGO_ONLY = pytest.mark.parametrize("store_kind", ["mongo"], indirect=True, scope="session")


@MONGO_ONLY
async def test_an_open_transaction_on_an_appointment_does_not_block_a_write_to_an_unrelated_patient(
        open_store: StoreFactory) -> None:
    holder, other = await open_store(), await open_store()
    start = await other.last_position()
    inside, release = asyncio.Event(), asyncio.Event()

    async def slow(unit: Unit) -> None:
        await unit.write(Record("Appointment", "held", 1, stamp(), False, b"{}", "POST"), [], 0)
        inside.set()
        await release.wait()

    held = asyncio.create_task(holder.atomic(slow))
    await asyncio.wait_for(inside.wait(), 10)
    # Another process's write, and this process's own: neither waits for the open unit.
    await asyncio.wait_for(put(other, "Patient", "unrelated"), 5)
    await asyncio.wait_for(put(holder, "Patient", "unrelated-too"), 5)
    assert not held.done()
    meanwhile = await other.changes_since(start, 10)
    assert [r.id for r in meanwhile] == ["unrelated", "unrelated-too"]
    release.set()
    await asyncio.wait_for(held, 10)
    feed = await other.changes_since(start, 10)
    assert [r.id for r in feed] == ["unrelated", "unrelated-too", "held"]
    assert all(a.seq < b.seq for a, b in itertools.pairwise(feed))
    assert [r.id for r in await other.changes_since(meanwhile[-1].seq, 10)] == ["held"]


@MONGO_ONLY
async def test_an_open_transaction_on_one_resource_holds_up_only_writers_of_that_resource(
        open_store: StoreFactory) -> None:
    holder, other = await open_store(), await open_store()
    await put(other, "Appointment", "busy")
    inside, release = asyncio.Event(), asyncio.Event()

    async def slow(unit: Unit) -> None:
        prev = await unit.get("Appointment", "busy")
        assert prev is not None
        await unit.write(Record("Appointment", "busy", prev.version + 1, stamp(), False, b"{}"),
                         [], prev.version)
        inside.set()
        await release.wait()

    held = asyncio.create_task(holder.atomic(slow))
    await asyncio.wait_for(inside.wait(), 10)
    contender = asyncio.create_task(put(other, "Appointment", "busy"))
    await asyncio.sleep(0.3)
    assert not contender.done()  # it retries on the held document, and only there
    release.set()
    await asyncio.wait_for(held, 10)
    last = await asyncio.wait_for(contender, 20)
    assert last.version == 3
    assert [r.version for r in await other.history("Appointment", "busy", None, 10, None)] == [
        3, 2, 1]


async def test_a_feed_reader_sees_a_long_unit_that_commits_after_later_ones_exactly_once(
        open_store: StoreFactory) -> None:
    """A unit that stays open while others commit around it: the reader, resuming from its
    last position each time, must neither skip its change nor see any change twice."""
    writing = [await open_store(), await open_store()]
    reader = await open_store()
    start = await reader.last_position()
    done = asyncio.Event()

    async def writer(w: int) -> list[str]:
        sent = []
        for k in range(12):
            request = f"long{w}-{k}"
            store = writing[w % 2]
            if k % 4 == 1:
                async def lingering(unit: Unit, request: str = request) -> None:
                    await unit.write(Record("Slot", request, 1, stamp(), False, b"{}", "POST",
                                            origin=Origin("w", None, "rest", request)), [], 0)
                    await asyncio.sleep(0.05)  # others commit meanwhile (on MongoDB)

                await store.atomic(lingering)
            else:
                await put(store, "Patient", request, origin=Origin("w", None, "rest", request))
            sent.append(request)
        return sent

    reading = asyncio.create_task(follow(reader, start, done, 3, 0.001))
    sent = await asyncio.gather(*(writer(w) for w in range(4)))
    done.set()
    seen = await reading
    assert all(a.seq < b.seq for a, b in itertools.pairwise(seen))
    requests = [r.origin.request_id or "" for r in seen]
    assert sorted(requests) == sorted(req for reqs in sent for req in reqs)  # once each


async def test_units_that_decide_on_what_they_read_do_not_both_win(
        open_store: StoreFactory) -> None:
    """Write skew: two units each read both switches and turn one off only while both are on.
    Run one after the other, the second sees one off and does nothing; so must concurrent ones."""
    stores = [await open_store(), await open_store()]
    for sid in ("a", "b"):
        await put(stores[0], "Basic", sid, body=b'{"on":true}')

    async def turn_off(mine: str, other: str, n: int) -> bool:
        async def run(unit: Unit) -> bool:
            recs = {sid: await unit.get("Basic", sid) for sid in (mine, other)}
            if not all(r is not None and r.body and orjson.loads(r.body)["on"]
                       for r in recs.values()):
                return False
            await asyncio.sleep(0.02)  # both have read before either writes
            prev = recs[mine]
            assert prev is not None
            await unit.write(Record("Basic", mine, prev.version + 1, stamp(), False,
                                    b'{"on":false}'), [], prev.version)
            return True

        return await stores[n % 2].atomic(run)

    won = await asyncio.gather(turn_off("a", "b", 0), turn_off("b", "a", 1))
    assert sorted(won) == [False, True]
    states = [await stores[1].get("Basic", sid) for sid in ("a", "b")]
    assert sorted(orjson.loads(r.body)["on"] for r in states if r and r.body) == [False, True]


async def test_units_that_count_claims_before_claiming_do_not_overfill_a_prefix(
        open_store: StoreFactory) -> None:
    """A phantom: each unit counts the claims under a prefix and adds its own (another key)
    only while there is room for one. Whatever the interleaving, one gets in."""
    stores = [await open_store(), await open_store()]

    async def take(n: int) -> bool:
        async def run(unit: Unit) -> bool:
            if await unit.count_claims("cap/slot-1/") >= 1:
                return False
            await asyncio.sleep(0.02)
            return await unit.claim(f"cap/slot-1/{n}", "Appointment", f"a{n}")

        return await stores[n % 2].atomic(run)

    got = await asyncio.gather(*(take(n) for n in range(4)))
    assert got.count(True) == 1
    assert len(await stores[0].claim_keys("cap/slot-1/")) == 1


@MONGO_ONLY
async def test_a_hundred_units_racing_for_one_document_in_one_process_all_finish(
        open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Conflicts settle races, but a unit that only ever meets the other ninety-nine again
    may run out of retries: losers take turns on what they touched, so every unit ends (three
    with a seat, the rest told there is none) inside a tight budget, each running again about
    once."""
    from fhir_sched.storage.mongo import store as mongo

    monkeypatch.setattr(mongo, "CONTENTION_SECONDS", 5.0)
    store = await open_store()

    async def take(n: int) -> bool:
        async def run(unit: Unit) -> bool:
            if await unit.count_claims("hot/slot/") >= 3:
                return False
            await asyncio.sleep(0.03)  # the decision takes a while, as a booking's does
            return await unit.claim(f"hot/slot/{n}", "Appointment", f"a{n}")

        return await store.atomic(run)

    from fhir_sched.metrics import REGISTRY

    def retries() -> float:
        got = REGISTRY.get_sample_value("fhir_sched_store_unit_retries_total",
                                        {"store": "mongodb"})
        return got or 0.0

    before = retries()
    got = await asyncio.gather(*(take(n) for n in range(100)))
    # Each loser runs again about once (it waited its turn), not once per winner it met:
    # colliding freely, the same hundred units ran again over two thousand times.
    assert retries() - before < 300
    assert got.count(True) == 3
    assert len(await store.claim_keys("hot/slot/")) == 3
    assert isinstance(store, mongo.MongoStore)
    assert len(store._turns) == 0  # every turn given back


async def test_a_write_reports_the_feed_position_it_was_given(store: DocumentStore) -> None:
    recs = [await put(store, "Patient", f"pos{n}") for n in range(3)]
    feed = await store.changes_since(0, 10)
    assert [(r.id, r.seq) for r in feed] == [(r.id, r.seq) for r in recs]
    history = await store.history("Patient", None, None, 10, None)
    assert [r.seq for r in history] == [r.seq for r in reversed(recs)]


@MONGO_ONLY
async def test_a_database_from_the_counter_era_keeps_its_feed_and_history(
        open_store: StoreFactory) -> None:
    """Releases before this one numbered each change as the ``_id`` of its change document
    and kept the last number in ``counters.seq``; such a database must read the same after
    the upgrade, and new changes must come after the old ones."""
    from fhir_sched.storage.mongo import MongoStore

    first = await open_store()
    assert isinstance(first, MongoStore)
    origin = {"subject": "Practitioner/old", "client_id": None, "door": "rest",
              "request_id": "old-1"}
    await first.changes.insert_many([
        {"_id": n, "type": "Patient", "id": f"old{n}", "version": 1, "updated": stamp(),
         "method": "POST", "body": b"{}", "origin": origin} for n in (1, 2, 3)])
    await first.resources.insert_many([
        {"_id": f"Patient/old{n}", "type": "Patient", "id": f"old{n}", "pos": n, "version": 1,
         "updated": stamp(), "deleted": False, "body": b"{}", "idx": []} for n in (1, 2, 3)])
    await first.counters.update_one({"_id": "seq"}, {"$set": {"n": 3}, "$unset": {"format": ""}},
                                    upsert=True)
    upgraded = await open_store()
    old = await upgraded.changes_since(0, 10)
    assert [(r.seq, r.id, r.origin.request_id) for r in old] == [
        (1, "old1", "old-1"), (2, "old2", "old-1"), (3, "old3", "old-1")]
    new = await put(upgraded, "Patient", "new")
    assert new.seq > 3
    assert [r.id for r in await upgraded.changes_since(2, 10)] == ["old3", "new"]
    assert [r.id for r in await upgraded.history("Patient", None, None, 10, None)] == [
        "new", "old3", "old2", "old1"]
    assert [i for i, _ in (await upgraded.search(Query("Patient", count=10))).rows] == [
        "old1", "old2", "old3", "new"]
