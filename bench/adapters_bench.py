"""Adapter benchmark (issue 4): the REST-core and search figures on SQLite and MongoDB, same run.

    python bench/adapters_bench.py [--appointments 20000 --slots 100000] [--duration 8]

One data set (the search benchmark's shape: 2,000 Slots per Schedule, 400 Appointments per
Practitioner, 10 per Patient) is generated into a fresh SQLite file and a fresh database on a
SecantusDB process (MongoDB wire protocol) started here. Then, for each adapter, a real
``fhir-sched serve --store <url>`` process is measured:

1. ``GET /fhir/Appointment/{id}`` with wrk (16 connections): req/s, p50, p99;
2. ``POST /fhir/Appointment`` with wrk (``Prefer: return=minimal``; Patient-only participants,
   so a plain create, not the booking guard): req/s, p50, p99;
3. the three scheduling searches, 200 sequential httpx requests each (after 100 warm-ups): p50, p95.

Floors: ``store.search(query)`` in process for both adapters, and for MongoDB also the same
page fetched straight with pymongo (``find`` with the ``$elemMatch`` filter on ``idx`` the adapter
compiles, sorted by ``pos``, limit count+1, reading ``body``), and ``find_one`` by ``_id`` from 16
threads for the read. The ``_include`` query's floors are the match page only (as in
search_bench.py); the include fetch is the service's work on top.

Generation goes through the store port for both stores, as search_bench.py does: every resource
written as its first version by ``Unit.write_all`` in big atomic units (SQLite through
search_bench.generate, MongoDB through the same loader on a ``MongoStore``), so each adapter
keeps its own documents, change log, counter and indexes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from pymongo import MongoClient
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rest_bench as rb
import search_bench as sb

from fhir_sched.query import Query
from fhir_sched.search.parse import parse_search
from fhir_sched.storage.base import DocumentStore
from fhir_sched.storage.mongo import MongoStore
from fhir_sched.storage.mongo.query import Compiler, base_filter, combine
from fhir_sched.storage.sqlite import SqliteStore

console = sb.console
Doc = dict[str, Any]
QueryName = str
DB_NAME = "fhir_sched_bench"


# -- MongoDB generation ----------------------------------------------------------------------------
# Resources to a MongoDB transaction: well inside its limits, big enough that commits are rare.
MONGO_UNIT = 500


def generate_mongo(url: str, shape: sb.Shape) -> None:
    asyncio.run(sb.fill(MongoStore(url), shape, f"MongoDB {DB_NAME}", MONGO_UNIT))


# -- queries -----------------------------------------------------------------------------------
WARMUPS = 100  # warm-up instances before the timed ones (--warmups)
Plan = list[dict[QueryName, tuple[str, list[tuple[str, str]]]]]


def instances(shape: sb.Shape, requests: int, seed: int) -> Plan:
    """The random query instances, warm-ups first, drawn as search_bench draws them."""
    rng = random.Random(seed)
    return [sb.queries(shape, rng) for _ in range(WARMUPS + requests)]


def measure_http(base: str, plan_: Plan) -> tuple[dict[QueryName, list[float]],
                                                 dict[QueryName, list[int]]]:
    """Sequential httpx round trips, ms, and the match count of each timed response."""
    times: dict[QueryName, list[float]] = {}
    sizes: dict[QueryName, list[int]] = {}
    with httpx.Client(base_url=base, timeout=120.0,
                      headers={"accept": "application/fhir+json"}) as client:
        for n, qs in enumerate(plan_):
            for name, (type_, params) in qs.items():
                t0 = time.perf_counter()
                r = client.get(f"/{type_}", params=params)
                elapsed = (time.perf_counter() - t0) * 1000
                if r.status_code != 200:
                    raise SystemExit(f"{name}: HTTP {r.status_code} {r.text[:300]}")
                if n >= WARMUPS:
                    times.setdefault(name, []).append(elapsed)
                    sizes.setdefault(name, []).append(sum(
                        1 for e in r.json().get("entry", []) if e["search"]["mode"] == "match"))
    return times, sizes


async def store_floor(store: DocumentStore, plan_: list[dict[QueryName, tuple[str, list[
        tuple[str, str]]]]]) -> dict[QueryName, list[float]]:
    """store.search(query) in process, ms; the first 100 instances are warm-ups."""
    out: dict[QueryName, list[float]] = {}
    await store.start()
    try:
        for n, qs in enumerate(plan_):
            for name, (type_, params) in qs.items():
                query = parse_search(type_, params).query
                t0 = time.perf_counter()
                await store.search(query)
                if n >= WARMUPS:
                    out.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
    finally:
        await store.close()
    return out


async def _no_join(_pipeline: list[Doc]) -> list[Doc]:
    raise AssertionError("the benchmark queries need no join")


def mongo_filter(query: Query) -> Doc:
    """The filter MongoStore.search compiles (base + ``$elemMatch`` per parameter)."""
    where = asyncio.run(Compiler(_no_join).where(query.where, query.type))
    return combine(base_filter(query), where)


def pymongo_floor(url: str, plan_: list[dict[QueryName, tuple[str, list[tuple[str, str]]]]],
                  ) -> tuple[dict[QueryName, list[float]], dict[QueryName, Doc]]:
    """The same page fetched with plain pymongo; filters compiled outside the timing."""
    compiled = [{name: (mongo_filter(q := parse_search(t, p).query), q.count + 1)
                 for name, (t, p) in qs.items()} for qs in plan_]
    client: MongoClient[Doc] = MongoClient(url)
    coll = client.get_default_database()["resources"]
    out: dict[QueryName, list[float]] = {}
    try:
        for n, qs in enumerate(compiled):
            for name, (flt, limit) in qs.items():
                t0 = time.perf_counter()
                docs = coll.find(flt, {"id": 1, "body": 1, "pos": 1}).sort(
                    [("pos", 1)]).limit(limit).to_list()
                _page = [(d["id"], bytes(d["body"])) for d in docs]
                if n >= WARMUPS:
                    out.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
    finally:
        client.close()
    return out, compiled[WARMUPS]


def explain_mongo(url: str, filters: dict[QueryName, tuple[Doc, int]]) -> dict[QueryName, str]:
    """The winning plan of each query, as stage(index) chains."""
    def walk(plan_: Doc) -> str:
        label = plan_.get("stage", "?") + (f"({plan_['indexName']})" if "indexName" in plan_
                                           else "")
        inner = plan_.get("inputStage") or (plan_.get("inputStages") or [None])[0]
        return label if not inner else f"{label} <- {walk(inner)}"

    client: MongoClient[Doc] = MongoClient(url)
    coll = client.get_default_database()["resources"]
    out: dict[QueryName, str] = {}
    try:
        for name, (flt, limit) in filters.items():
            try:
                ex = coll.find(flt, {"id": 1, "body": 1, "pos": 1}).sort(
                    [("pos", 1)]).limit(limit).explain()
                qp = ex.get("queryPlanner", {})
                stats = ex.get("executionStats", {})
                out[name] = walk(qp.get("winningPlan", {})) + (
                    f"; docsExamined={stats['totalDocsExamined']}" if stats else "")
            except Exception as exc:
                out[name] = f"explain failed: {exc}"
    finally:
        client.close()
    return out


def read_floor(url: str, key: str, threads: int, duration: float) -> tuple[float, float, float]:
    """find_one by ``_id`` (what MongoStore.get does) from ``threads`` threads: rps, p50, p99."""
    client: MongoClient[Doc] = MongoClient(url, maxPoolSize=threads)
    coll = client.get_default_database()["resources"]
    lat: list[list[float]] = [[] for _ in range(threads)]
    end = time.perf_counter() + duration

    def worker(mine: list[float]) -> None:
        while (t0 := time.perf_counter()) < end:
            doc = coll.find_one({"_id": key}, {"idx": 0})
            assert doc is not None
            bytes(doc["body"])
            mine.append((time.perf_counter() - t0) * 1000)

    try:
        worker([])  # connect
        end = time.perf_counter() + duration
        ts = [threading.Thread(target=worker, args=(lat[i],)) for i in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        elapsed = time.perf_counter() - t0
    finally:
        client.close()
    every = [x for xs in lat for x in xs]
    return len(every) / elapsed, sb.pct(every, 50), sb.pct(every, 99)


# -- one adapter -------------------------------------------------------------------------------
def measure_adapter(url: str, plan_: Plan, args: argparse.Namespace, work: Path,
                    ) -> dict[str, float]:
    """HTTP figures for one store URL: wrk GET/POST and the three searches."""
    port = rb.free_port()
    server = rb.start([sys.executable, "-m", "fhir_sched.cli", "serve", "--host", "127.0.0.1",
                       "--port", str(port), "--store", url],
                      env={"FHIR_SCHED_LOG_LEVEL": "warning"})
    figures: dict[str, float] = {}
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        rb.wait_ready(f"{base}/metadata", server, timeout=60)
        times, sizes = measure_http(base, plan_)
        for name, ts in times.items():
            figures[f"{name} HTTP p50 ms"] = sb.pct(ts, 50)
            figures[f"{name} HTTP p95 ms"] = sb.pct(ts, 95)
            figures[f"{name} rows"] = sum(sizes[name]) / len(sizes[name])
        wrk = argparse.Namespace(loadgen="wrk", connections=args.connections,
                                 duration=args.duration, warmup=2.0)
        read_url = f"{base}/Appointment/{sb.rid('Appointment', 1)}"
        assert httpx.get(read_url).status_code == 200
        get = rb.measure("GET", read_url, wrk, server.pid)
        patient = sb.rid("Patient", 0)
        body = {"resourceType": "Appointment", "status": "proposed",
                "description": "adapter bench", "minutesDuration": 20,
                "participant": [{"actor": {"reference": f"Patient/{patient}"},
                                 "required": "required", "status": "needs-action"}]}
        post_file = work / "post.json"
        post_file.write_bytes(orjson.dumps(body))
        probe = httpx.post(f"{base}/Appointment", content=post_file.read_bytes(),
                           headers={"content-type": "application/fhir+json",
                                    "prefer": "return=minimal"})
        assert probe.status_code == 201, probe.text
        post = rb.measure("POST", f"{base}/Appointment", wrk, server.pid, "POST", str(post_file))
        for label, r in (("GET /Appointment/{id}", get), ("POST /Appointment", post)):
            if r.errors:
                console.print(f"[red]{url.split(':')[0]} {label}: {r.errors} errors[/red]")
            figures[f"{label} req/s"] = r.rps
            figures[f"{label} p50 ms"] = r.p50_ms
            figures[f"{label} p99 ms"] = r.p99_ms
    finally:
        rb.stop(server)
    return figures


def start_secantus(storage: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = rb.free_port()
    exe = Path(sys.executable).with_name("secantusd-py")
    with log.open("ab") as out:
        proc = subprocess.Popen([str(exe if exe.exists() else "secantusd-py"), "--host",
                                 "127.0.0.1", "--port", str(port), "--storage-path",
                                 str(storage), "--log-level", "WARNING"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"secantusd-py exited: {log.read_text(errors='replace')[-2000:]}")
        client: MongoClient[Doc] = MongoClient(f"mongodb://127.0.0.1:{port}",
                                               serverSelectionTimeoutMS=300,
                                               directConnection=True)
        try:
            client.admin.command("hello")
            return proc, port
        except Exception:
            time.sleep(0.2)
        finally:
            client.close()
    rb.stop(proc)
    raise SystemExit("secantusd-py did not answer within 30 s")


# -- main --------------------------------------------------------------------------------------
def main() -> int:
    global WARMUPS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--appointments", type=int, default=20_000)
    parser.add_argument("--slots", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per query")
    parser.add_argument("--warmups", type=int, default=100,
                        help="untimed instances of each query first")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    WARMUPS = args.warmups
    # a SIGTERM (timeout, CI) still runs the finally below, so no server outlives the run
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found")
    shape = sb.Shape(args.appointments, args.slots)
    n_total = sum(t for _, t in sb.plan(shape))
    console.print(f"data set: {shape.appointments:,} Appointments, {shape.slots:,} Slots, "
                  f"{shape.patients:,} Patients, {shape.practitioners} Practitioners/Schedules, "
                  f"{shape.locations} Locations = {n_total:,} resources; "
                  f"{os.cpu_count()} CPUs")

    work = Path(tempfile.mkdtemp(prefix="fhir-sched-adapters-"))
    secantus: subprocess.Popen[bytes] | None = None
    try:
        db_path = work / "bench.db"
        t0 = time.perf_counter()
        sb.generate(db_path, shape)
        console.print(f"SQLite generated in {time.perf_counter() - t0:.0f} s")
        secantus, mport = start_secantus(work / "secantus", work / "secantus.log")
        mongo_url = f"mongodb://127.0.0.1:{mport}/{DB_NAME}"
        t0 = time.perf_counter()
        generate_mongo(mongo_url, shape)
        console.print(f"MongoDB generated in {time.perf_counter() - t0:.0f} s")
        sb.warm_cache(db_path)

        plan_ = instances(shape, args.requests, seed=7)
        sqlite_url = f"sqlite:///{db_path}"
        results: dict[str, dict[str, float]] = {"sqlite": {}, "mongo": {}}
        floors: dict[str, dict[QueryName, list[float]]] = {}
        floors["sqlite"] = asyncio.run(store_floor(SqliteStore(str(db_path), readers=1), plan_))
        floors["mongo"] = asyncio.run(store_floor(MongoStore(mongo_url), plan_))
        floors["pymongo"], sample = pymongo_floor(mongo_url, plan_)
        plans = explain_mongo(mongo_url, sample)
        rps, p50, p99 = read_floor(mongo_url, f"Appointment/{sb.rid('Appointment', 1)}",
                                   args.connections, args.duration)
        py_read = {"GET /Appointment/{id} req/s": rps, "GET /Appointment/{id} p50 ms": p50,
                   "GET /Appointment/{id} p99 ms": p99}
        for kind, url in (("sqlite", sqlite_url), ("mongo", mongo_url)):
            console.print(f"measuring {kind} over HTTP ...")
            results[kind] = measure_adapter(url, plan_, args, work)
    finally:
        if secantus is not None:
            rb.stop(secantus)
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"adapters: {shape.appointments:,} Appointments / {shape.slots:,} Slots "
                        f"(wrk {args.connections} conns {args.duration:g}s; searches "
                        f"{args.requests} sequential requests)")
    for col in ("figure", "SQLite", "MongoDB", "Mongo/SQLite", "Mongo/pymongo floor"):
        table.add_column(col, justify="left" if col == "figure" else "right", no_wrap=True)

    def row(label: str, lite: float, mongo: float, floor: float | None) -> None:
        fmt = "{:.0f}" if "req/s" in label else "{:.2f}"
        table.add_row(label, fmt.format(lite), fmt.format(mongo), f"{mongo / lite:.2f}x",
                      "-" if floor is None else f"{mongo / floor:.2f}x")

    for key in results["sqlite"]:
        if not key.startswith(("GET", "POST")):
            continue
        row(key, results["sqlite"][key], results["mongo"][key], py_read.get(key))
    table.add_section()
    for name in floors["sqlite"]:
        rows = results["sqlite"][f"{name} rows"]
        table.add_row(f"{name} (match rows: SQLite {rows:.1f}, "
                      f"MongoDB {results['mongo'][f'{name} rows']:.1f})", style="bold")
        for p in (50, 95):
            pyf = sb.pct(floors["pymongo"][name], p)
            row(f"  HTTP p{p} ms", results["sqlite"][f"{name} HTTP p{p} ms"],
                results["mongo"][f"{name} HTTP p{p} ms"], pyf)
        for p in (50, 95):
            pyf = sb.pct(floors["pymongo"][name], p)
            row(f"  store.search p{p} ms", sb.pct(floors["sqlite"][name], p),
                sb.pct(floors["mongo"][name], p), pyf)
        for p in (50, 95):
            pyf = sb.pct(floors["pymongo"][name], p)
            table.add_row(f"  pymongo floor p{p} ms", "", f"{pyf:.2f}", "", "1.00x")
    console.print(table)
    console.print("pymongo floor for GET = find_one by _id from "
                  f"{args.connections} threads ({py_read['GET /Appointment/{id} req/s']:.0f}/s); "
                  "POST has no floor (one transaction per create).")
    console.print("[bold]MongoDB winning plans[/bold] (one instance of each query):")
    for name, text in plans.items():
        console.print(f"  {name}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
