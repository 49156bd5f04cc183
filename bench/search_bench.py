"""Search latency benchmark (issue 3): the three scheduling searches over HTTP against a real
``fhir-sched serve`` process, next to the same query answered directly by the store (the floor),
at full size and at a tenth of it, to show that latency follows the result size, not the data size.

    python bench/search_bench.py [--scale 1.0] [--requests 300] [--data-dir DIR] [--regenerate]

Scale 1.0 is 200,000 Appointments and 1,000,000 Slots (and the 10x-smaller run 20,000/100,000).
Every entity has the same shape at every scale (2,000 Slots per Schedule, 400 Appointments per
Practitioner, 10 per Patient), so each query returns about the same number of rows at both sizes.

Generation goes through the store port, not the HTTP write pipeline (one resource at a time
through it would take an hour): each resource as its first version, thousands to an atomic unit
(``Unit.write_all``), with the stored body with ``meta`` and the index entries of
``fhir_sched.search.extract.extract``, exactly what the service hands the store. The store keeps
its own rows, change log and indexes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from _common import Server, Stored, load, pct, read_meta, stored, write_meta
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fhir_sched.search.parse import parse_search
from fhir_sched.storage.base import DocumentStore
from fhir_sched.storage.sqlite import SqliteStore

BASE_APPOINTMENTS = 200_000
BASE_SLOTS = 1_000_000
SLOTS_PER_SCHEDULE = 2_000  # 32 fifteen-minute slots a day for 62.5 days
SLOTS_PER_DAY = 32
APPOINTMENTS_PER_PRACTITIONER = 400
APPOINTMENTS_PER_PATIENT = 10
PRACTITIONERS_PER_LOCATION = 10
DAYS = SLOTS_PER_SCHEDULE // SLOTS_PER_DAY  # 62
DAY0 = datetime(2026, 1, 5, tzinfo=UTC)
UPDATED = "2026-01-01T00:00:00.000Z"
SERVICE_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/service-type", "code": "124",
                "display": "General Practice"}
CHUNK = 5_000
console = Console(width=140)


@dataclass(frozen=True, slots=True)
class Shape:
    """Entity counts for one scale; per-entity sizes are constants, so results stay fixed."""

    appointments: int
    slots: int

    @property
    def practitioners(self) -> int:
        return max(1, self.slots // SLOTS_PER_SCHEDULE)

    @property
    def patients(self) -> int:
        return max(1, self.appointments // APPOINTMENTS_PER_PATIENT)

    @property
    def locations(self) -> int:
        return max(1, self.practitioners // PRACTITIONERS_PER_LOCATION)

    @classmethod
    def at(cls, scale: float) -> Shape:
        return cls(int(BASE_APPOINTMENTS * scale), int(BASE_SLOTS * scale))


def rid(kind: str, n: int) -> str:
    """A deterministic 32-hex id (the server's own ids are uuid4 hex of the same shape), so
    workers can write references without sharing state."""
    return hashlib.md5(f"{kind}:{n}".encode()).hexdigest()


def instant(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- resources -------------------------------------------------------------------------------------
def make_patient(n: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid("Patient", n), "active": True,
            "identifier": [{"system": "urn:bench:mrn", "value": f"MRN{n:08d}"}],
            "name": [{"family": f"Family{n % 997}", "given": [f"Given{n}"]}],
            "gender": ("female", "male")[n % 2], "birthDate": f"{1940 + n % 70}-0{1 + n % 9}-15"}


def make_practitioner(n: int) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": rid("Practitioner", n), "active": True,
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": f"{n:010d}"}],
            "name": [{"family": f"Doctor{n}", "given": ["Pat"]}]}


def make_location(n: int) -> dict[str, Any]:
    return {"resourceType": "Location", "id": rid("Location", n), "status": "active",
            "name": f"Clinic {n}"}


def make_schedule(n: int) -> dict[str, Any]:
    return {"resourceType": "Schedule", "id": rid("Schedule", n), "active": True,
            "actor": [{"reference": f"Practitioner/{rid('Practitioner', n)}"}],
            "serviceType": [{"coding": [SERVICE_TYPE]}],
            "planningHorizon": {"start": instant(DAY0),
                                "end": instant(DAY0 + timedelta(days=DAYS + 1))}}


def slot_start(j: int) -> datetime:
    return DAY0 + timedelta(days=j // SLOTS_PER_DAY, hours=8, minutes=15 * (j % SLOTS_PER_DAY))


def make_slot(n: int) -> dict[str, Any]:
    schedule, j = divmod(n, SLOTS_PER_SCHEDULE)
    start = slot_start(j)
    return {"resourceType": "Slot", "id": rid("Slot", n),
            "schedule": {"reference": f"Schedule/{rid('Schedule', schedule)}"},
            "status": "busy" if (j * 7) % 10 < 3 else "free",
            "serviceType": [{"coding": [SERVICE_TYPE]}],
            "start": instant(start), "end": instant(start + timedelta(minutes=15))}


def make_appointment(n: int, shape: Shape) -> dict[str, Any]:
    practitioner, j = divmod(n, APPOINTMENTS_PER_PRACTITIONER)
    practitioner %= shape.practitioners
    day = j * DAYS // APPOINTMENTS_PER_PRACTITIONER
    start = DAY0 + timedelta(days=day, hours=8, minutes=15 * ((j * 13) % SLOTS_PER_DAY))
    patient = n % shape.patients
    location = practitioner // PRACTITIONERS_PER_LOCATION % shape.locations
    return {"resourceType": "Appointment", "id": rid("Appointment", n),
            "status": "booked" if n % 20 else "cancelled",
            "serviceType": [{"coding": [SERVICE_TYPE]}],
            "start": instant(start), "end": instant(start + timedelta(minutes=15)),
            "participant": [
                {"actor": {"reference": f"Patient/{rid('Patient', patient)}"},
                 "status": "accepted"},
                {"actor": {"reference": f"Practitioner/{rid('Practitioner', practitioner)}"},
                 "status": "accepted"},
                {"actor": {"reference": f"Location/{rid('Location', location)}"},
                 "status": "accepted"}]}


def rows_for(job: tuple[str, int, int, Shape]) -> list[Stored]:
    """Resources ``start..end`` of one kind as the store gets them (worker process)."""
    kind, start, end, shape = job
    makers = {"Patient": make_patient, "Practitioner": make_practitioner,
              "Location": make_location, "Schedule": make_schedule, "Slot": make_slot,
              "Appointment": lambda n: make_appointment(n, shape)}
    return [stored(makers[kind](n), UPDATED) for n in range(start, end)]


def plan(shape: Shape) -> list[tuple[str, int]]:
    return [("Patient", shape.patients), ("Practitioner", shape.practitioners),
            ("Location", shape.locations), ("Schedule", shape.practitioners),
            ("Slot", shape.slots), ("Appointment", shape.appointments)]


def jobs(shape: Shape) -> list[tuple[str, int, int, Shape]]:
    return [(kind, s, min(s + CHUNK, total), shape) for kind, total in plan(shape)
            for s in range(0, total, CHUNK)]


async def fill(store: DocumentStore, shape: Shape, label: str, per_unit: int) -> None:
    """Every resource of ``shape`` through ``store``'s port, generated in worker processes."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn()]
    await store.start()
    try:
        with Progress(*columns, console=console) as progress, \
                mp.get_context("fork").Pool(os.cpu_count() or 2) as pool:
            task = progress.add_task(f"generating {label}", total=sum(t for _, t in plan(shape)))
            await load(store, pool.imap(rows_for, jobs(shape)), UPDATED, per_unit,
                       lambda n: progress.advance(task, n))
    finally:
        await store.close()


# -- generation ------------------------------------------------------------------------------------
def generate(path: Path, shape: Shape) -> None:
    for suffix in ("", "-wal", "-shm", ".meta.json"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    asyncio.run(fill(SqliteStore(str(path), synchronous="off"), shape, path.name, 5_000))
    write_meta(path, {"appointments": shape.appointments, "slots": shape.slots})


def ready(path: Path, shape: Shape) -> bool:
    return read_meta(path) == {"appointments": shape.appointments, "slots": shape.slots}


# -- the three queries -----------------------------------------------------------------------------
def day(n: int) -> str:
    return (DAY0 + timedelta(days=n)).strftime("%Y-%m-%d")


def queries(shape: Shape, rng: random.Random) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """One random instance of each benchmark query: name -> (type, parameters)."""
    d = rng.randrange(DAYS - 7)
    return {
        "Appointment?patient&date=ge&date=lt": ("Appointment", [
            ("patient", f"Patient/{rid('Patient', rng.randrange(shape.patients))}"),
            ("date", f"ge{day(15)}"), ("date", f"lt{day(46)}")]),
        "Slot?schedule&start=ge&start=lt&status": ("Slot", [
            ("schedule", f"Schedule/{rid('Schedule', rng.randrange(shape.practitioners))}"),
            ("start", f"ge{day(d)}"), ("start", f"lt{day(d + 1)}"), ("status", "free")]),
        "Appointment?practitioner&date&_include": ("Appointment", [
            ("practitioner",
             f"Practitioner/{rid('Practitioner', rng.randrange(shape.practitioners))}"),
            ("date", f"ge{day(d)}"), ("date", f"lt{day(d + 7)}"),
            ("_include", "Appointment:patient")]),
    }


@dataclass
class Timing:
    http: list[float]
    floor: list[float]
    matches: list[int]


async def measure_floor(path: Path, shape: Shape, requests: int, seed: int,
                        ) -> dict[str, list[float]]:
    store = SqliteStore(str(path), readers=1)
    await store.start()
    out: dict[str, list[float]] = {}
    try:
        rng = random.Random(seed)
        for warm in (True, False):
            for _ in range(100 if warm else requests):
                for name, (type_, params) in queries(shape, rng).items():
                    query = parse_search(type_, params).query
                    t0 = time.perf_counter()
                    await store.search(query)
                    if not warm:
                        out.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
    finally:
        await store.close()
    return out


def measure_http(base: str, shape: Shape, requests: int, seed: int,
                 ) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    times: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=30.0,
                      headers={"accept": "application/fhir+json"}) as client:
        for warm in (True, False):
            for _ in range(100 if warm else requests):
                for name, (type_, params) in queries(shape, rng).items():
                    t0 = time.perf_counter()
                    r = client.get(f"/{type_}", params=params)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if r.status_code != 200:
                        raise SystemExit(f"{name}: HTTP {r.status_code} {r.text[:300]}")
                    if not warm:
                        times.setdefault(name, []).append(elapsed)
                        entries = r.json().get("entry", [])
                        sizes.setdefault(name, []).append(
                            sum(1 for e in entries if e["search"]["mode"] == "match"))
    return times, sizes


def warm_cache(path: Path) -> None:
    """Read the file once so both runs measure a warm OS page cache (the steady state of a
    server that has been up for a while), not whichever file was generated last."""
    with path.open("rb") as fh:
        while fh.read(16 << 20):
            pass


async def explain(path: Path, shape: Shape) -> list[str]:
    """The SQL plan of each query as the store compiles it (for the record)."""
    store = SqliteStore(str(path), readers=1)
    await store.start()
    try:
        out = []
        for name, (type_, params) in queries(shape, random.Random(1)).items():
            plan_ = await store.explain(parse_search(type_, params).query)
            out.append(f"[bold]{name}[/bold]\n" + "\n".join(f"  {step}" for step in plan_))
        return out
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="1.0 = 200k Appointments / 1M Slots; also runs scale/10")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per query")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(),
                                                           "fhir-sched-search-bench"))
    parser.add_argument("--regenerate", action="store_true", help="rebuild the data sets")
    parser.add_argument("--explain", action="store_true", help="print the SQL plans")
    args = parser.parse_args(argv)
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, Shape, str, Timing]] = []
    for scale in (args.scale / 10, args.scale):
        shape = Shape.at(scale)
        path = data / f"search-{shape.appointments}-{shape.slots}.db"
        if args.regenerate or not ready(path, shape):
            t0 = time.perf_counter()
            generate(path, shape)
            console.print(f"generated {path} ({path.stat().st_size / 1e9:.2f} GB) in "
                          f"{time.perf_counter() - t0:.0f} s")
        warm_cache(path)
        if args.explain:
            for text in asyncio.run(explain(path, shape)):
                console.print(text)
        floor = asyncio.run(measure_floor(path, shape, args.requests, seed=7))
        with Server(path) as server:
            http, sizes = measure_http(server.base, shape, args.requests, seed=7)
        label = f"{shape.appointments // 1000}k/{shape.slots // 1000}k"
        for name in http:
            results.append((label, shape, name, Timing(http[name], floor[name], sizes[name])))
    table = Table(title="search latency in ms: HTTP = round trip to `fhir-sched serve`, "
                        "floor = store.search(query) in process")
    for col in ("data", "query", "rows", "HTTP p50", "HTTP p95", "floor p50", "floor p95",
                "p50/floor", "p95/floor"):
        table.add_column(col, justify="left" if col in ("data", "query") else "right",
                         no_wrap=True)
    for label, _shape, name, t in results:
        h50, h95, f50, f95 = (pct(t.http, 50), pct(t.http, 95), pct(t.floor, 50),
                              pct(t.floor, 95))
        table.add_row(label, name, f"{statistics.mean(t.matches):.1f}", f"{h50:.2f}",
                      f"{h95:.2f}", f"{f50:.2f}", f"{f95:.2f}", f"{h50 / f50:.1f}x",
                      f"{h95 / f95:.1f}x")
    console.print(table)
    worst = max(pct(t.http, 95) for *_, t in results)
    console.print(f"worst HTTP p95: {worst:.2f} ms (target < 30 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
