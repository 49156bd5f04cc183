"""Scheduling benchmark (issue 5): $find latency and $book throughput on a generated health system.

    python bench/scheduling_bench.py [--requests 200] [--bookings 4000] [--clients 32]
                                     [--data-dir DIR] [--regenerate] [--seed 7]
                                     [--only-rules] [--rules-rounds 2]

The health system: 500 practitioners (10 specialties, 50 each) working at 40 sites, 60 exam rooms
and 20 ultrasound devices, every one with a Schedule holding an availability template (New York,
Monday-Friday 08:00-12:00 and 13:00-17:00, 30-minute slots) and a planning horizon of a full year
from the next Monday. In the first 90 days 40% of every calendar's slots are booked (a seeded
coin per slot), each booking an Appointment with a patient and that one resource. One
HealthcareService per specialty defines a 30-minute consult; one more defines an ultrasound-guided
visit that needs a sonographer, an exam room and a device at once.

Measured, all over HTTP against a real ``fhir-sched serve`` process on the generated SQLite file:

* ``$find`` for a consult visit type (all 50 practitioners of the specialty) in a 31-day window,
* the same in a 365-day window (target: at most 2x the 31-day one),
* ``$find`` for the three-resource visit in a 31-day window,
* sustained ``$book`` throughput with 32 concurrent clients on distinct free times, then a scan of
  every stored booking for double bookings (must be 0). A small share of requests deliberately
  repeats another client's time, so the scan checks a guard that really had to refuse something.

* booking rules on vs off (issue 14: at most 15% dearer): ``$find`` for a consult and a patient
  in a 31-day window, and ``$book`` throughput, for a consult visit type with no rules and for
  its twin with every rule family on (timing, age, a referral with a visit count, an accepted
  payor, visits per period), interleaved in the same run; each patient has a Coverage and a
  referral for it. ``--only-rules`` measures just this.

Next to each ``$find`` figure is the floor: the same ``find_options`` call on ResourceCalendars
prebuilt in memory from the same data, without HTTP and without the store.

Generation uses public interfaces only. The health system's resources (patients, practitioners,
locations, schedules, services) go through the store port in big atomic units (``Unit.write_all``
of the stored body with ``meta`` and the index entries of ``fhir_sched.search.extract.extract``).
The bookings go through the HTTP API of a ``fhir-sched serve`` process on the new file, as
transaction Bundles of ``PUT Appointment/<id>``, so the write pipeline and its booking guard make
their claims: nothing here knows how a claim is spelled. That is the slow part of a first run (a
quarter of a million guarded writes); the data set is kept and reused by later runs.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import heapq
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
from _common import Server, load, pct, read_meta, stored, write_meta
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fhir_sched.query import Query
from fhir_sched.scheduling import claims
from fhir_sched.scheduling.availability import (
    Busy,
    ResourceCalendar,
    find_options,
)
from fhir_sched.scheduling.templates import horizon, parse_templates
from fhir_sched.storage.sqlite import SqliteStore

EXT = "https://fhir-sched.org/fhir/StructureDefinition/"
TZ_NAME = "America/New_York"
TZ = ZoneInfo(TZ_NAME)
PRACTITIONERS, SITES, ROOMS, DEVICES, PATIENTS = 500, 40, 60, 20, 20_000
SPECIALTIES = ("sonography", "cardiology", "dermatology", "neurology", "oncology", "pediatrics",
               "psychiatry", "radiology", "rheumatology", "urology")
SPEC_SYSTEM = "http://example.org/bench/specialty"
KIND_SYSTEM = "http://example.org/bench/resource-kind"
VISIT_SYSTEM = "http://example.org/bench/visit-type"
HOURS = ((clock(8), clock(12)), (clock(13), clock(17)))
SLOT = timedelta(minutes=30)
UNIT = timedelta(minutes=5)
BOOKED_DAYS, BOOKED_SHARE, HORIZON_DAYS = 90, 0.4, 365
UPDATED = "2026-01-01T00:00:00.000Z"
GENERATOR_VERSION = 4
# Bookings per transaction Bundle, and Bundles in flight, while generating.
BOOKINGS_PER_BUNDLE, BUNDLES_IN_FLIGHT = 100, 4
console = Console()


# -- the health system ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Actor:
    """One bookable calendar: its actor reference and its Schedule id."""

    n: int
    ref: str
    schedule: str


def actors() -> list[Actor]:
    out = [Actor(i, f"Practitioner/pr-{i:04d}", f"sc-pr-{i:04d}") for i in range(PRACTITIONERS)]
    out += [Actor(PRACTITIONERS + i, f"Location/room-{i:03d}", f"sc-room-{i:03d}")
            for i in range(ROOMS)]
    out += [Actor(PRACTITIONERS + ROOMS + i, f"Device/us-{i:03d}", f"sc-us-{i:03d}")
            for i in range(DEVICES)]
    return out


def specialty_of(practitioner: int) -> str:
    return SPECIALTIES[practitioner % len(SPECIALTIES)]


def template(day0: date) -> dict[str, Any]:
    available = [{"url": "availableTime", "extension": [
        *({"url": "daysOfWeek", "valueCode": d} for d in ("mon", "tue", "wed", "thu", "fri")),
        {"url": "availableStartTime", "valueTime": a.isoformat()},
        {"url": "availableEndTime", "valueTime": b.isoformat()}]} for a, b in HOURS]
    return {"url": EXT + "availability-template", "extension": [
        {"url": "timezone", "valueCode": TZ_NAME}, *available,
        {"url": "slotMinutes", "valuePositiveInt": 30}]}


def schedule_for(actor: Actor, day0: date) -> dict[str, Any]:
    kind, ident = actor.ref.split("/")
    body: dict[str, Any] = {
        "resourceType": "Schedule", "id": actor.schedule, "active": True,
        "actor": [{"reference": actor.ref}],
        "planningHorizon": {"start": day0.isoformat(),
                            "end": (day0 + timedelta(days=HORIZON_DAYS - 1)).isoformat()},
        "extension": [template(day0)]}
    if kind == "Practitioner":
        n = int(ident.split("-")[1])
        body["actor"].append({"reference": f"Location/site-{n % SITES:02d}"})
        body["specialty"] = [{"coding": [{"system": SPEC_SYSTEM, "code": specialty_of(n)}]}]
    else:
        code = "exam-room" if kind == "Location" else "ultrasound"
        body["extension"].append({"url": EXT + "resource-kind", "valueCodeableConcept": {
            "coding": [{"system": KIND_SYSTEM, "code": code}]}})
    return body


def need(actor_type: str, key: str, system: str, code: str) -> dict[str, Any]:
    return {"url": "need", "extension": [
        {"url": "actorType", "valueCode": actor_type},
        {"url": key, "valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}]}


def visit_type(code: str, *needs: dict[str, Any]) -> dict[str, Any]:
    return {"url": EXT + "visit-type", "extension": [
        {"url": "code", "valueCoding": {"system": VISIT_SYSTEM, "code": code}},
        {"url": "minutesDuration", "valuePositiveInt": 30}, *needs]}


# Every booking rule family of issue 14 at once, on a twin of each consult visit type: timing,
# patient age, referral (with a visit count, so each booking takes a referral visit), accepted
# payor and a visits-per-period limit (which reads the patient's history).
RULES = [{"url": "minNoticeMinutes", "valueUnsignedInt": 60},
         {"url": "maxAdvanceDays", "valuePositiveInt": 400},
         {"url": "sameDayCutoff", "valueTime": "16:00:00"},
         {"url": "minAgeYears", "valueUnsignedInt": 0},
         {"url": "maxAgeYears", "valueUnsignedInt": 120},
         {"url": "referralRequired", "valueBoolean": True},
         {"url": "acceptedPayor", "valueReference": {"reference": "Organization/payer"}},
         {"url": "maxVisits", "valuePositiveInt": 100}]
REFERRED = {"coding": [{"system": VISIT_SYSTEM, "code": "specialist"}]}


def services() -> list[dict[str, Any]]:
    out = [{"resourceType": "HealthcareService", "id": f"hs-{spec}", "name": f"{spec} clinic",
            "extension": [visit_type(f"consult-{spec}",
                                     need("Practitioner", "specialty", SPEC_SYSTEM, spec))]}
           for spec in SPECIALTIES]
    for spec in SPECIALTIES:
        vt = visit_type(f"consult-{spec}-ruled",
                        need("Practitioner", "specialty", SPEC_SYSTEM, spec))
        out.append({"resourceType": "HealthcareService", "id": f"hs-{spec}-ruled",
                    "name": f"{spec} clinic, by referral", "type": [REFERRED],
                    "extension": [{**vt, "extension": [*vt["extension"], *RULES]}]})
    out.append({"resourceType": "HealthcareService", "id": "hs-us-guided",
                "name": "ultrasound-guided procedures",
                "extension": [visit_type(
                    "us-guided", need("Practitioner", "specialty", SPEC_SYSTEM, "sonography"),
                    need("Location", "kind", KIND_SYSTEM, "exam-room"),
                    need("Device", "kind", KIND_SYSTEM, "ultrasound"))]})
    return out


def base_resources(day0: date) -> list[dict[str, Any]]:
    res: list[dict[str, Any]] = []
    res += [{"resourceType": "Patient", "id": f"pat-{i:05d}", "name": [{"family": f"P{i}"}],
             "birthDate": f"{1940 + i % 80}-0{1 + i % 9}-1{i % 10}"} for i in range(PATIENTS)]
    # What the rules read: each patient's Coverage (with the accepted payor) and referral.
    cover = {"start": day0.isoformat(), "end": (day0 + timedelta(days=2 * 365)).isoformat()}
    res.append({"resourceType": "Organization", "id": "payer", "name": "Bench Health Plan"})
    res += [{"resourceType": "Coverage", "id": f"cov-{i:05d}", "status": "active",
             "beneficiary": {"reference": f"Patient/pat-{i:05d}"},
             "payor": [{"reference": "Organization/payer"}], "period": cover}
            for i in range(PATIENTS)]
    res += [{"resourceType": "ServiceRequest", "id": f"ref-{i:05d}", "status": "active",
             "intent": "order", "subject": {"reference": f"Patient/pat-{i:05d}"},
             "code": REFERRED, "quantityQuantity": {"value": 50}, "occurrencePeriod": cover}
            for i in range(PATIENTS)]
    res += [{"resourceType": "Location", "id": f"site-{i:02d}", "name": f"Site {i}"}
            for i in range(SITES)]
    res += [{"resourceType": "Location", "id": f"room-{i:03d}", "name": f"Exam room {i}",
             "partOf": {"reference": f"Location/site-{i % SITES:02d}"}} for i in range(ROOMS)]
    res += [{"resourceType": "Practitioner", "id": f"pr-{i:04d}", "name": [{"family": f"D{i}"}]}
            for i in range(PRACTITIONERS)]
    res += [schedule_for(a, day0) for a in actors()]
    res += services()
    return res


def slot_starts(day0: date, days: int, offset: int = 0) -> Iterator[datetime]:
    """Every template slot start (UTC) on weekdays of [day0 + offset, day0 + offset + days)."""
    for d in range(offset, offset + days):
        day = day0 + timedelta(days=d)
        if day.weekday() >= 5:
            continue
        for a, b in HOURS:
            t = datetime.combine(day, a, TZ)
            end = datetime.combine(day, b, TZ)
            while t + SLOT <= end:
                yield t.astimezone(UTC)
                t += SLOT


def booked_starts(actor: Actor, day0: date, seed: int) -> list[datetime]:
    rng = random.Random(seed * 1_000_003 + actor.n)
    return [s for s in slot_starts(day0, BOOKED_DAYS) if rng.random() < BOOKED_SHARE]


WRK_BOOK = r"""
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args)
  bodies = {}
  for line in io.lines(os.getenv("BOOK_BODIES")) do bodies[#bodies + 1] = line end
  n, ok, conflict, other = 0, 0, 0, 0
end
request = function()
  n = n + 1
  return wrk.format("POST", wrk.path, {["Content-Type"] = "application/fhir+json",
                    ["Accept"] = "application/fhir+json"}, bodies[((n - 1) % #bodies) + 1])
end
response = function(status, headers, body)
  if status == 200 then ok = ok + 1 elseif status == 409 then conflict = conflict + 1
  else other = other + 1 end
end
done = function(summary, latency, requests)
  local o, c, x = 0, 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); c = c + t:get("conflict");
    x = x + t:get("other") end
  local e = summary.errors
  io.write(string.format('RESULT {"ok": %d, "conflict": %d, "other": %d, "requests": %d,'
    .. ' "duration_us": %d, "p50_us": %d, "p95_us": %d, "errors": %d}\n', o, c, x,
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    e.connect + e.read + e.write + e.timeout))
end
"""


def measure_book_wrk(base: str, targets: list[tuple[dict[str, Any], int]], clients: int,
                     seconds: float) -> BookResult:
    """$book load from wrk in its own process: on two cores an in-process Python client
    saturates before the server does (httpx used ~90% of a core at ~150 requests/s). Each
    pre-generated request is sent once, in order (repeats of a time are the 409s); if wrk
    outruns the list it starts over, and those repeats can only be refused."""
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.ndjson"
        bodies.write_bytes(b"\n".join(orjson.dumps(
            {"resourceType": "Parameters", "parameter": [{"name": "appt-resource",
                                                          "resource": appt}]})
            for appt, _ in targets) + b"\n")
        script = Path(tmp) / "book.lua"
        script.write_text(WRK_BOOK)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{seconds:.0f}s", "--timeout", "30s",
             "-s", str(script), f"{base}/Appointment/$book"],
            capture_output=True, text=True, env={**os.environ, "BOOK_BODIES": str(bodies)},
            check=True).stdout
    result = orjson.loads(next(line for line in out.splitlines()
                               if line.startswith("RESULT "))[len("RESULT "):])
    unexpected = [f"{result['other']} responses neither 200 nor 409"] if result["other"] else []
    if result["errors"]:
        unexpected.append(f"{result['errors']} socket errors")
    return BookResult(result["duration_us"] / 1e6, result["ok"], result["conflict"],
                      unexpected, [], requests=result["requests"],
                      p50=result["p50_us"] / 1000, p95=result["p95_us"] / 1000)


def booking(actor: Actor, k: int, start: datetime, patient: int) -> dict[str, Any]:
    local = start.astimezone(TZ)
    return {"resourceType": "Appointment", "id": f"bk-{actor.n:04d}-{k:04d}", "status": "booked",
            "start": local.isoformat(), "end": (local + SLOT).isoformat(), "minutesDuration": 30,
            "participant": [
                {"actor": {"reference": f"Patient/pat-{patient:05d}"}, "required": "required",
                 "status": "accepted"},
                {"actor": {"reference": actor.ref}, "required": "required",
                 "status": "accepted"}]}


# -- generation ----------------------------------------------------------------------------------
def bookings(day0: date, seed: int) -> list[dict[str, Any]]:
    """Every pre-booked Appointment of the health system (40% of the first 90 days' slots).

    A patient is in one place at a time (the guard claims patients' time too), so at any one
    time every actor's booking has its own patient: the patient number is the actor's plus a
    multiple of the actor count by slot index."""
    out: list[dict[str, Any]] = []
    origin = datetime.combine(day0, clock(), tzinfo=UTC)
    everyone = actors()
    for actor in everyone:
        out += [booking(actor, k, start, (actor.n + len(everyone) * int(
                    (start - origin).total_seconds() // SLOT.total_seconds())) % PATIENTS)
                for k, start in enumerate(booked_starts(actor, day0, seed))]
    return out


def first_monday() -> date:
    today = datetime.now(TZ).date() + timedelta(days=1)
    return today + timedelta(days=(7 - today.weekday()) % 7)


def store_files(path: Path) -> list[Path]:
    return [Path(str(path) + suffix) for suffix in ("", "-wal", "-shm")]


async def load_base(path: Path, day0: date) -> None:
    """The health system without its bookings, through the store port."""
    store = SqliteStore(str(path), synchronous="off")
    await store.start()
    try:
        resources = [stored(res, UPDATED) for res in base_resources(day0)]
        await load(store, [resources[i:i + 5000] for i in range(0, len(resources), 5000)],
                   UPDATED, 5000)
    finally:
        await store.close()


async def book_all(base: str, appointments: list[dict[str, Any]], advance: Any) -> None:
    """PUT every booking through the HTTP API (the booking guard makes its claims)."""
    bundles = [appointments[i:i + BOOKINGS_PER_BUNDLE]
               for i in range(0, len(appointments), BOOKINGS_PER_BUNDLE)]
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for bundle in bundles:
        queue.put_nowait(bundle)

    async def sender(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            appts = queue.get_nowait()
            body = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": a, "request": {"method": "PUT", "url": f"Appointment/{a['id']}"}}
                for a in appts]}
            r = await client.post("", json=body, headers={"prefer": "return=minimal"})
            if r.status_code != 200:
                raise SystemExit(f"booking during generation: HTTP {r.status_code} "
                                 f"{r.text[:300]}")
            advance(len(appts))

    async with httpx.AsyncClient(base_url=base, timeout=300.0,
                                 headers={"accept": "application/fhir+json"}) as client:
        await asyncio.gather(*(sender(client) for _ in range(BUNDLES_IN_FLIGHT)))


def generate(path: Path, seed: int) -> date:
    for old in (*store_files(path), Path(str(path) + ".meta.json")):
        old.unlink(missing_ok=True)
    day0 = first_monday()
    asyncio.run(load_base(path, day0))
    appointments = bookings(day0, seed)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=console) as progress, \
            Server(path, env={"FHIR_SCHED_SQLITE_SYNCHRONOUS": "off"}) as server:
        task = progress.add_task("booking over HTTP", total=len(appointments))
        asyncio.run(book_all(server.base, appointments, lambda n: progress.advance(task, n)))
    write_meta(path, {"version": GENERATOR_VERSION, "seed": seed, "day0": day0.isoformat()})
    return day0


def existing(path: Path, seed: int) -> date | None:
    """day0 of a usable earlier generation (same generator and seed), else None."""
    meta = read_meta(path)
    if meta is None or (meta.get("version"), meta.get("seed")) != (GENERATOR_VERSION, seed):
        return None
    day0 = date.fromisoformat(meta["day0"])
    # $find results do not depend on today's date, but keep the data ahead of it anyway.
    return day0 if day0 > datetime.now(TZ).date() else None


def copy_store(src: Path, dst: Path) -> None:
    """A copy of the store at ``src`` (opening and closing it first folds its WAL back in)."""
    async def settle() -> None:
        store = SqliteStore(str(src))
        await store.start()
        await store.close()

    asyncio.run(settle())
    for old in store_files(dst):
        old.unlink(missing_ok=True)
    for a, b in zip(store_files(src), store_files(dst), strict=True):
        if a.exists() and a.stat().st_size and not a.name.endswith("-shm"):
            shutil.copyfile(a, b)


# -- queries -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FindQuery:
    name: str
    visit: str
    start: datetime
    end: datetime


def find_queries(day0: date, rng: random.Random) -> list[FindQuery]:
    """One random instance of each $find benchmark query."""
    start = datetime.combine(day0 + timedelta(days=rng.randrange(BOOKED_DAYS - 31)), clock(),
                             TZ)
    spec = rng.choice(SPECIALTIES)
    return [
        FindQuery("consult, 31 days", f"consult-{spec}", start, start + timedelta(days=31)),
        FindQuery("consult, 365 days", f"consult-{spec}", start, start + timedelta(days=365)),
        FindQuery("3 resources, 31 days", "us-guided", start, start + timedelta(days=31)),
    ]


def in_memory_calendars(day0: date, seed: int) -> dict[str, list[ResourceCalendar]]:
    """ResourceCalendars for every visit type's needs, from the same data the store holds."""
    cals: dict[str, ResourceCalendar] = {}
    for actor in actors():
        sched = schedule_for(actor, day0)
        counts: dict[datetime, int] = defaultdict(int)
        for start in booked_starts(actor, day0, seed):
            t = start
            while t < start + SLOT:
                counts[t] += 1
                t += UNIT
        busy = [Busy(u, u + UNIT, n) for u, n in sorted(counts.items())]
        cals[actor.ref] = ResourceCalendar(actor.ref, actor.schedule, parse_templates(sched),
                                           horizon(sched), busy, [])
    groups: dict[str, list[ResourceCalendar]] = {}
    for spec in SPECIALTIES:
        groups[spec] = [cals[f"Practitioner/pr-{i:04d}"] for i in range(PRACTITIONERS)
                        if specialty_of(i) == spec]
    groups["rooms"] = [cals[f"Location/room-{i:03d}"] for i in range(ROOMS)]
    groups["devices"] = [cals[f"Device/us-{i:03d}"] for i in range(DEVICES)]
    return groups


def floor_needs(groups: dict[str, list[ResourceCalendar]], visit: str
                ) -> list[list[ResourceCalendar]]:
    if visit == "us-guided":
        return [groups["sonography"], groups["rooms"], groups["devices"]]
    return [groups[visit.removeprefix("consult-")]]


def from_window_start(cal: ResourceCalendar, start: datetime) -> ResourceCalendar:
    """The calendar as the service reads it for a window: busy time from the window start on.

    (The engine walks busy time from the first entry it is given, and the service never hands
    it any from before the window, so neither does the floor.)
    """
    i = bisect.bisect_left([b.start for b in cal.busy], start - timedelta(hours=1))
    return ResourceCalendar(cal.key, cal.schedule_id, cal.templates, cal.horizon, cal.busy[i:],
                            cal.free_slots)


def measure_floor(day0: date, seed: int, requests: int) -> dict[str, list[float]]:
    groups = in_memory_calendars(day0, seed)
    rng = random.Random(seed)
    out: dict[str, list[float]] = defaultdict(list)
    for warm in (True, False):
        for _ in range(20 if warm else requests):
            for q in find_queries(day0, rng):
                needs = [[from_window_start(c, q.start) for c in need]
                         for need in floor_needs(groups, q.visit)]
                t0 = time.perf_counter()
                options = find_options(needs, q.start, q.end, SLOT, 10)
                elapsed = (time.perf_counter() - t0) * 1000
                assert len(options) == 10, (q, len(options))
                if not warm:
                    out[q.name].append(elapsed)
    return out


def measure_find(base: str, day0: date, seed: int, requests: int
                 ) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    rng = random.Random(seed)
    times: dict[str, list[float]] = defaultdict(list)
    firsts: dict[str, list[str]] = defaultdict(list)
    with httpx.Client(base_url=base, timeout=60.0,
                      headers={"accept": "application/fhir+json"}) as client:
        for warm in (True, False):
            for _ in range(20 if warm else requests):
                for q in find_queries(day0, rng):
                    params = {"start": q.start.isoformat(), "end": q.end.isoformat(),
                              "visit-type": f"{VISIT_SYSTEM}|{q.visit}", "_count": "10"}
                    t0 = time.perf_counter()
                    r = client.get("/Appointment/$find", params=params)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if r.status_code != 200:
                        raise SystemExit(f"{q.name}: HTTP {r.status_code} {r.text[:300]}")
                    entries = r.json().get("entry", [])
                    if len(entries) != 10:
                        raise SystemExit(f"{q.name}: {len(entries)} options, expected 10")
                    if not warm:
                        times[q.name].append(elapsed)
                        firsts[q.name].append(entries[0]["resource"]["start"])
    return times, firsts


# -- booking throughput --------------------------------------------------------------------------
def booking_targets(day0: date, n: int, seed: int, conflict_share: float,
                    days: tuple[int, int] = (BOOKED_DAYS, HORIZON_DAYS - 7),
                    visit: str | None = None) -> list[tuple[dict[str, Any], int]]:
    """(proposed Appointment, group) for free practitioner times after the booked 90 days
    (in ``days``, offsets from day0), booking ``visit`` (a suffix of the practitioner's
    consult code: "" the plain visit type, "-ruled" its twin with rules) when given.

    Every group is one practitioner and time; ``conflict_share`` of the requests join an
    existing group (another patient wanting the same time), and of each group exactly one
    request may win.
    """
    rng = random.Random(seed)
    free_days = list(slot_starts(day0, days[1] - days[0], days[0]))
    picked: set[tuple[int, datetime]] = set()
    out: list[tuple[dict[str, Any], int]] = []
    while len(out) < n:
        if out and rng.random() < conflict_share:
            original, group = out[rng.randrange(max(0, len(out) - 64), len(out))]
            twin = orjson.loads(orjson.dumps(original))
            twin["participant"][0]["actor"]["reference"] = (
                f"Patient/pat-{len(out) % PATIENTS:05d}")
            out.append((twin, group))
            continue
        who, start = rng.randrange(PRACTITIONERS), rng.choice(free_days)
        if (who, start) in picked:
            continue
        picked.add((who, start))
        group = len(picked)
        local = start.astimezone(TZ)
        appt: dict[str, Any] = {
            "resourceType": "Appointment", "status": "proposed",
            "start": local.isoformat(), "end": (local + SLOT).isoformat(),
            "minutesDuration": 30, "participant": [
                # a patient of its own: only the practitioner's time is contended
                {"actor": {"reference": f"Patient/pat-{len(out) % PATIENTS:05d}"},
                 "required": "required", "status": "needs-action"},
                {"actor": {"reference": f"Practitioner/pr-{who:04d}"},
                 "required": "required", "status": "needs-action"}]}
        if visit is not None:
            appt["appointmentType"] = {"coding": [
                {"system": VISIT_SYSTEM, "code": f"consult-{specialty_of(who)}{visit}"}]}
        out.append((appt, group))
    # Shuffle in blocks so a repeat usually runs concurrently with (not long after) its original.
    blocks = [out[i:i + 64] for i in range(0, len(out), 64)]
    for block in blocks:
        rng.shuffle(block)
    return [t for block in blocks for t in block]


@dataclass
class BookResult:
    seconds: float
    booked: int
    refused: int
    unexpected: list[str]
    latencies: list[float]
    requests: int = 0
    p50: float = 0.0
    p95: float = 0.0

    def __post_init__(self) -> None:
        if self.latencies:
            self.p50, self.p95 = pct(self.latencies, 50), pct(self.latencies, 95)


async def measure_book(base: str, targets: list[tuple[dict[str, Any], int]], clients: int
                       ) -> BookResult:
    queue: asyncio.Queue[tuple[dict[str, Any], int]] = asyncio.Queue()
    for t in targets:
        queue.put_nowait(t)
    wins: dict[int, int] = defaultdict(int)
    refused = 0
    unexpected: list[str] = []
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal refused
        while True:
            try:
                appt, group = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = {"resourceType": "Parameters",
                    "parameter": [{"name": "appt-resource", "resource": appt}]}
            t0 = time.perf_counter()
            r = await client.post("/Appointment/$book", json=body)
            latencies.append((time.perf_counter() - t0) * 1000)
            if r.status_code == 200:
                wins[group] += 1
            elif r.status_code == 409:
                refused += 1
            else:
                unexpected.append(f"{r.status_code} {r.text[:200]}")

    async with httpx.AsyncClient(base_url=base, timeout=60.0, limits=limits,
                                 headers={"accept": "application/fhir+json"}) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        seconds = time.perf_counter() - t0
    groups = {g for _, g in targets}
    unexpected += [f"time {g} was booked {wins[g]} times" for g in sorted(groups)
                   if wins[g] != 1]
    return BookResult(seconds, sum(wins.values()), refused, unexpected, latencies,
                      requests=len(targets))


async def stored_appointments(path: Path) -> list[dict[str, Any]]:
    """Every live Appointment in the store, paged through the store port."""
    store = SqliteStore(str(path))
    await store.start()
    out: list[dict[str, Any]] = []
    try:
        after = None
        while True:
            page = await store.search(Query("Appointment", count=2000, after=after))
            out += [orjson.loads(body) for _, body in page.rows]
            if page.next_after is None:
                return out
            after = page.next_after
    finally:
        await store.close()


async def seats_beyond_capacity(path: Path, actors: list[str]) -> int:
    """Claims on a seat other than the first (capacity is 1 everywhere in this data set): the
    guard's own record of an overbooking, read through the store port and the claims codec."""
    store = SqliteStore(str(path))
    await store.start()
    try:
        beyond = 0
        for actor in actors:
            prefix = claims.resource_prefix(actor)
            for key, _owner_type, _owner_id in await store.claim_keys(prefix):
                unit = claims.unit_of(key, len(prefix))
                if key != claims.unit_prefix_of(actor, unit) + claims.seat(0):
                    beyond += 1
        return beyond
    finally:
        await store.close()


def double_bookings(path: Path) -> tuple[int, int, int]:
    """(appointments scanned, overlapping pairs on one resource, claims beyond capacity).

    Reads every stored Appointment that takes time and sweeps each resource's bookings in start
    order; with capacity 1 everywhere, any overlap is a double booking, and so is any claim on
    a second seat.
    """
    taking = {"pending", "booked", "arrived", "checked-in"}
    per_actor: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    scanned = 0
    now = datetime.now(UTC)
    for appt in asyncio.run(stored_appointments(path)):
        if appt.get("status") not in taking:
            continue
        if appt.get("status") == "pending":
            exp = next((e["valueInstant"] for e in appt.get("extension", [])
                        if e["url"] == EXT + "hold-expires"), None)
            if exp is not None and datetime.fromisoformat(exp) <= now:
                continue
        scanned += 1
        start, end = datetime.fromisoformat(appt["start"]), datetime.fromisoformat(appt["end"])
        for p in appt["participant"]:
            ref = p["actor"]["reference"]
            if not ref.startswith("Patient/"):
                per_actor[ref].append((start, end))
    overlaps = 0
    for intervals in per_actor.values():
        intervals.sort()
        ends: list[datetime] = []
        for start, end in intervals:
            while ends and ends[0] <= start:
                heapq.heappop(ends)
            overlaps += len(ends)
            heapq.heappush(ends, end)
    return scanned, overlaps, asyncio.run(seats_beyond_capacity(path, sorted(per_actor)))


# -- booking rules on vs off ---------------------------------------------------------------------
MODES = {"rules off": "", "rules on": "-ruled"}


def measure_rules_find(base: str, day0: date, seed: int, requests: int
                       ) -> dict[str, list[float]]:
    """``$find`` for a consult in a 31-day window for a patient, once for the plain visit type
    and once for its twin with every rule family on (which then narrows by the patient's age,
    referral, Coverage, visit history and the timing rules): the same queries, interleaved, so
    drift on the machine falls on both alike."""
    rng = random.Random(seed + 1)
    times: dict[str, list[float]] = defaultdict(list)
    with httpx.Client(base_url=base, timeout=60.0,
                      headers={"accept": "application/fhir+json"}) as client:
        for warm in (True, False):
            for _ in range(20 if warm else requests):
                start = datetime.combine(
                    day0 + timedelta(days=rng.randrange(BOOKED_DAYS - 31)), clock(), TZ)
                spec, who = rng.choice(SPECIALTIES), rng.randrange(PATIENTS)
                for mode, suffix in MODES.items():
                    params = {"start": start.isoformat(),
                              "end": (start + timedelta(days=31)).isoformat(),
                              "visit-type": f"{VISIT_SYSTEM}|consult-{spec}{suffix}",
                              "patient": f"Patient/pat-{who:05d}", "_count": "10"}
                    t0 = time.perf_counter()
                    r = client.get("/Appointment/$find", params=params)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if r.status_code != 200 or len(r.json().get("entry", [])) != 10:
                        raise SystemExit(f"$find, {mode}: HTTP {r.status_code} {r.text[:300]}")
                    if not warm:
                        times[mode].append(elapsed)
    return times


def measure_rules_book(base: str, day0: date, seed: int, n: int, clients: int, seconds: float,
                       conflicts: float, rounds: int) -> dict[str, list[BookResult]]:
    """$book throughput for each mode, in ABBA order (off, on, on, off, ...: a drift of the
    machine over the run falls on both alike), each run on free days of its own so no run
    meets another's bookings."""
    span = (HORIZON_DAYS - 7 - BOOKED_DAYS) // (2 * rounds)
    out: dict[str, list[BookResult]] = defaultdict(list)
    k = 0
    for r in range(rounds):
        order = list(MODES.items())
        for mode, suffix in (order if r % 2 == 0 else order[::-1]):
            lo = BOOKED_DAYS + k * span
            targets = booking_targets(day0, n, seed + 100 + k, conflicts, (lo, lo + span),
                                      suffix)
            result = measure_book_wrk(base, targets, clients, seconds)
            if result.unexpected:
                raise SystemExit(f"$book, {mode}, round {r + 1}: {result.unexpected[:3]}")
            out[mode].append(result)
            k += 1
    return out


def rules_report(find: dict[str, list[float]], book: dict[str, list[BookResult]]) -> bool:
    """The rules-on figures as ratios of the rules-off ones, and whether they are within the
    issue's 15%."""
    off, on = (pct(find[m], 95) for m in MODES)
    rate = {m: sum(b.requests for b in runs) / sum(b.seconds for b in runs)
            for m, runs in book.items()}
    booked = {m: sum(b.booked for b in runs) / sum(b.seconds for b in runs)
              for m, runs in book.items()}
    table = Table(title="booking rules: every rule family on a visit type vs none "
                        "(baseline: rules off, same run)")
    for col in ("measure", "rules off", "rules on", "on / off", "limit"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    table.add_row("$find p50, ms (consult, 31 days, a patient)",
                  f"{pct(find['rules off'], 50):.1f}", f"{pct(find['rules on'], 50):.1f}",
                  f"{pct(find['rules on'], 50) / pct(find['rules off'], 50):.2f}x", "")
    table.add_row("$find p95, ms", f"{off:.1f}", f"{on:.1f}", f"{on / off:.2f}x", "<= 1.15x")
    table.add_row("$book requests/s", f"{rate['rules off']:.0f}", f"{rate['rules on']:.0f}",
                  f"{rate['rules on'] / rate['rules off']:.2f}x", ">= 0.87x")
    table.add_row("$book booked/s", f"{booked['rules off']:.0f}", f"{booked['rules on']:.0f}",
                  f"{booked['rules on'] / booked['rules off']:.2f}x", "")
    table.add_row("$book p95, ms", *(f"{max(b.p95 for b in book[m]):.1f}" for m in MODES),
                  "", "")
    console.print(table)
    for m in MODES:
        runs = ", ".join(f"{b.requests / b.seconds:.0f}" for b in book[m])
        console.print(f"$book requests/s per run, {m}: {runs}")
    return on / off <= 1.15 and rate["rules on"] * 1.15 >= rate["rules off"]


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per query")
    parser.add_argument("--bookings", type=int, default=4000, help="$book requests to send")
    parser.add_argument("--clients", type=int, default=32, help="concurrent $book clients")
    parser.add_argument("--conflicts", type=float, default=0.05,
                        help="share of $book requests that repeat another's time")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--book-seconds", type=float, default=10.0,
                        help="how long wrk sends $book requests")
    parser.add_argument("--httpx", action="store_true",
                        help="send $book from an in-process httpx client instead of wrk")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(),
                                                           "fhir-sched-bench"))
    parser.add_argument("--regenerate", action="store_true", help="rebuild the data set")
    parser.add_argument("--rules-bookings", type=int, default=20000,
                        help="$book requests prepared per round of the rules comparison")
    parser.add_argument("--rules-rounds", type=int, default=2,
                        help="rounds of (rules off, rules on) $book runs")
    parser.add_argument("--only-rules", action="store_true",
                        help="measure only booking rules on vs off")
    args = parser.parse_args(argv)
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    pristine = data / "scheduling.db"
    day0 = None if args.regenerate else existing(pristine, args.seed)
    if day0 is None:
        t0 = time.perf_counter()
        day0 = generate(pristine, args.seed)
        console.print(f"generated {pristine} ({pristine.stat().st_size / 1e9:.2f} GB) in "
                      f"{time.perf_counter() - t0:.0f} s; first day {day0}")
    # Each run books into a copy, so the pristine data set can be reused by the next run.
    work = data / "scheduling-run.db"
    copy_store(pristine, work)

    if args.only_rules:
        with Server(work) as server:
            rules_ok = _rules_book(server.base, day0, args, _rules_find(server.base, day0, args))
        with console.status("scanning every stored booking for double bookings"):
            scanned, overlaps, beyond = double_bookings(work)
        console.print(f"double bookings: {overlaps} overlapping pairs among {scanned:,} "
                      f"bookings; {beyond} claims beyond capacity (both must be 0)")
        return 0 if overlaps == 0 and beyond == 0 and rules_ok else 1
    with console.status("floor: find_options on in-memory calendars"):
        floor = measure_floor(day0, args.seed, args.requests)
    with Server(work) as server:
        with console.status(f"$find over HTTP, {args.requests} requests per query"):
            http, _firsts = measure_find(server.base, day0, args.seed, args.requests)
        # before any $book load, as the plain $find figures are (a server absorbing a burst
        # of writes is still checkpointing it for a while)
        rules_find = _rules_find(server.base, day0, args)
        targets = booking_targets(day0, args.bookings, args.seed, args.conflicts)
        with console.status(f"$book, {args.clients} concurrent clients"):
            if shutil.which("wrk") and not args.httpx:
                book = measure_book_wrk(server.base, targets, args.clients, args.book_seconds)
            else:
                book = asyncio.run(measure_book(server.base, targets, args.clients))
        rules_ok = _rules_book(server.base, day0, args, rules_find)
    with console.status("scanning every stored booking for double bookings"):
        scanned, overlaps, beyond = double_bookings(work)

    table = Table(title="$find latency, ms (HTTP = round trip to fhir-sched serve on SQLite; "
                        "floor = find_options on in-memory calendars)")
    for col in ("query", "HTTP p50", "HTTP p95", "floor p50", "floor p95", "p95 / floor p95"):
        table.add_column(col, justify="left" if col == "query" else "right")
    for name, times in http.items():
        f = floor[name]
        table.add_row(name, f"{pct(times, 50):.1f}", f"{pct(times, 95):.1f}",
                      f"{pct(f, 50):.2f}", f"{pct(f, 95):.2f}",
                      f"{pct(times, 95) / pct(f, 95):.1f}x")
    console.print(table)
    p95_31 = pct(http["consult, 31 days"], 95)
    p95_365 = pct(http["consult, 365 days"], 95)
    console.print(f"$find p95 (31 days): {p95_31:.1f} ms (target <= 50); 365-day p95 is "
                  f"{p95_365 / p95_31:.2f}x the 31-day one (target <= 2)")
    attempts = book.requests
    console.print(
        f"$book: {attempts} requests, {args.clients} clients, {book.seconds:.2f} s: "
        f"{book.booked / book.seconds:.0f} booked/s, {attempts / book.seconds:.0f} requests/s "
        f"(target >= 300/s); latency p50 {book.p50:.1f} ms, "
        f"p95 {book.p95:.1f} ms; {book.refused} repeats refused with 409; "
        f"unexpected: {len(book.unexpected)}")
    for line in book.unexpected[:5]:
        console.print(f"  unexpected: {line}")
    console.print(f"double bookings: {overlaps} overlapping pairs among {scanned:,} bookings; "
                  f"{beyond} claims beyond capacity (both must be 0)")
    return 0 if overlaps == 0 and beyond == 0 and not book.unexpected and rules_ok else 1


def _rules_find(base: str, day0: date, args: argparse.Namespace) -> dict[str, list[float]]:
    if not shutil.which("wrk"):
        raise SystemExit("the rules comparison sends $book with wrk; install it (apt install wrk)")
    with console.status(f"booking rules: $find on vs off, {args.requests} requests each"):
        return measure_rules_find(base, day0, args.seed, args.requests)


def _rules_book(base: str, day0: date, args: argparse.Namespace,
                find: dict[str, list[float]]) -> bool:
    with console.status(f"booking rules: $book on vs off, {args.rules_rounds} rounds"):
        book = measure_rules_book(base, day0, args.seed, args.rules_bookings, args.clients,
                                  args.book_seconds, args.conflicts, args.rules_rounds)
    return rules_report(find, book)


if __name__ == "__main__":
    raise SystemExit(main())
