"""``$evaluate-measure`` over a year of appointments (issue 16: <= 2 s for 250,000).

    python bench/faces_measures.py                       # 250,000 appointments, 5 runs each
    python bench/faces_measures.py --appointments 50000 --repeat 3

A SQLite store is generated once per day and size (``$TMPDIR/fhir-sched-bench/``; the data are
anchored on today, so third next available has a present to look at): ``--practitioners``
(60) with a Schedule each (weekdays 08:00-18:00 UTC, 30-minute slots), 5 rooms, 2 services
with a 30-minute visit type each, and ``--appointments`` over the last year and the next
week, 16 a practitioner a weekday (08:00-16:00), with a patient, a room and a visit type,
``created`` 0-30 days before the start, statuses as a clinic has them (fulfilled, no-show,
cancelled early and late, still booked), and 500 waitlist entries filled during the year. The
resources are written through the store port with their own ``meta.lastUpdated`` (a
cancellation's time), not through HTTP: this measures reading, not loading.

Then a real ``fhir-sched serve`` on it, and per measure ``--repeat`` timed GETs of
``Measure/{id}/$evaluate-measure``: the first report of a year (every run asks a year ending
one day earlier: with ``--warm-days 0`` nothing the process keeps helps; by default the
server's warm window, read at start, covers each of them) and the next reports of the same
year with one booking changed before each (the kept facts brought up to date from the change
feed), p50 and p95, each against the baseline in the same run:
``GET Appointment?date=ge..&date=lt..&_summary=count``, the index counting the same year.
``run(args)`` gives the rows to ``bench/faces_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench._common import BENCH_ORIGIN, Server, pct, read_meta, write_meta
from fhir_sched.search.extract import extract
from fhir_sched.storage.base import Record, Unit
from fhir_sched.storage.sqlite import SqliteStore
from tests.support.scheduling import hours, need, template, visit_type

Row = tuple[str, str, str]
SYSTEM = "https://clinic.example/visit-types"
WAITLIST_OUTCOME = "https://fhir-sched.org/fhir/CodeSystem/waitlist-outcome"
MEASURES = ("no-show-rate", "cancellation-rate", "late-cancellation-rate", "fill-rate",
            "utilisation", "lead-time", "third-next-available", "waitlist-time-to-fill")
# Measures that keep no facts: $find from today (third next available), one indexed search
# (waitlist); each run is as cold as the first.
UNKEPT = ("third-next-available", "waitlist-time-to-fill")
ROOMS, PER_DAY, WAITLIST = 5, 16, 500
CHUNK = 5000
Job = tuple[str, int, int, int, str, int]  # kind, start, end, practitioners, today, total


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _weekdays(today: date) -> list[date]:
    """Weekdays from a year back (358 days, so the year asked for holds every one) to a week
    ahead."""
    days = [today - timedelta(days=358) + timedelta(days=n) for n in range(365)]
    return [d for d in days if d.weekday() < 5]


def _pick(n: int, salt: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{salt}{n}".encode(), digest_size=4).digest(), "big")


def _appointment(n: int, practitioners: int, today: date, days: list[date]
                 ) -> tuple[dict[str, Any], str]:
    doc, k = n % practitioners, n // practitioners
    day, slot = days[(k // PER_DAY) % len(days)], k % PER_DAY
    start = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=8,
                                                                        minutes=30 * slot)
    created = start - timedelta(days=_pick(n, "lead") % 31, hours=_pick(n, "h") % 9)
    roll = _pick(n, "status") % 100
    now = datetime.now(UTC)
    if start < now:
        status = ("fulfilled" if roll < 78 else "noshow" if roll < 84 else "cancelled"
                  if roll < 96 else "booked")
    else:
        status = "cancelled" if roll < 8 else "booked"
    updated = created + timedelta(minutes=1)
    if status == "cancelled":  # half of them late (within a day of the start)
        early = _pick(n, "late") % 2 == 0
        updated = start - (timedelta(days=3) if early else timedelta(hours=5))
    elif status in ("fulfilled", "noshow"):
        updated = start + timedelta(minutes=40)
    visit = "new" if n % 3 == 0 else "follow"
    body = {
        "resourceType": "Appointment", "id": f"bm-a{n}", "status": status,
        "start": _iso(start), "end": _iso(start + timedelta(minutes=30)),
        "created": _iso(created), "appointmentType": {"coding": [{"system": SYSTEM,
                                                                "code": visit}]},
        "participant": [
            {"actor": {"reference": f"Practitioner/bm-p{doc}"}, "status": "accepted"},
            {"actor": {"reference": f"Location/bm-l{doc % ROOMS}"}, "status": "accepted"},
            {"actor": {"reference": f"HealthcareService/bm-s{visit}"}, "status": "accepted"},
            {"actor": {"reference": f"Patient/bm-pt{n % 20000}"}, "status": "accepted"}]}
    return body, _stamp(min(updated, now))


def _waitlist(n: int, today: date) -> tuple[dict[str, Any], str]:
    filled = datetime.combine(today, datetime.min.time(), UTC) - timedelta(
        days=1 + _pick(n, "fill") % 350)
    created = filled - timedelta(hours=1 + _pick(n, "wait") % 400)
    return {"resourceType": "Appointment", "id": f"bm-w{n}", "status": "cancelled",
            "created": _iso(created), "appointmentType": {"coding": [{"system": SYSTEM,
                                                                    "code": "follow"}]},
            "cancelationReason": {"coding": [{"system": WAITLIST_OUTCOME, "code": "booked"}],
                                  "text": f"booked from the waitlist as Appointment/bm-a{n}"},
            "participant": [{"actor": {"reference": f"Patient/bm-pt{n}"},
                             "status": "needs-action"}]}, _stamp(filled)


def _fixed(practitioners: int) -> Iterator[dict[str, Any]]:
    open_hours = template("UTC", hours(("mon", "tue", "wed", "thu", "fri"), "08:00:00",
                                       "18:00:00"), slot=30)
    for visit in ("new", "follow"):
        yield {"resourceType": "HealthcareService", "id": f"bm-s{visit}", "name": visit,
               "extension": [visit_type(SYSTEM, visit, 30, need("Practitioner"))]}
    for r in range(ROOMS):
        yield {"resourceType": "Location", "id": f"bm-l{r}", "name": f"Room {r}"}
    for p in range(practitioners):
        yield {"resourceType": "Practitioner", "id": f"bm-p{p}",
               "name": [{"family": f"Doctor{p}"}]}
        yield {"resourceType": "Schedule", "id": f"bm-sc{p}",
               "actor": [{"reference": f"Practitioner/bm-p{p}"}], "extension": [open_hours]}
    for n in range(20000):
        yield {"resourceType": "Patient", "id": f"bm-pt{n}", "name": [{"family": f"P{n}"}]}


def _rows(job: Job) -> list[tuple[Record, list[Any]]]:
    """One chunk of resources as the store gets them, made in a worker process."""
    kind, start, end, practitioners, today_iso, _total = job
    today = date.fromisoformat(today_iso)
    days = _weekdays(today)
    out = []
    for n in range(start, end):
        body, updated = (_appointment(n, practitioners, today, days) if kind == "appointment"
                         else _waitlist(n, today))
        body["meta"] = {"versionId": "1", "lastUpdated": updated}
        out.append((Record("Appointment", body["id"], 1, updated, False, orjson.dumps(body),
                           "POST", origin=BENCH_ORIGIN), list(extract("Appointment", body))))
    return out


async def _fill(path: Path, appointments: int, practitioners: int, today: date) -> None:
    store = SqliteStore(str(path), synchronous="off")
    await store.start()
    try:
        stamp = _stamp(datetime.now(UTC))
        fixed = []
        for res in _fixed(practitioners):
            res["meta"] = {"versionId": "1", "lastUpdated": stamp}
            fixed.append((Record(res["resourceType"], res["id"], 1, stamp, False,
                                 orjson.dumps(res), "POST", origin=BENCH_ORIGIN),
                          list(extract(res["resourceType"], res))))
        jobs: list[Job] = [("appointment", s, min(s + CHUNK, appointments), practitioners,
                            today.isoformat(), appointments)
                           for s in range(0, appointments, CHUNK)]
        jobs.append(("waitlist", 0, WAITLIST, practitioners, today.isoformat(), WAITLIST))

        async def write(rows: list[tuple[Record, list[Any]]]) -> None:
            for s in range(0, len(rows), 1000):
                part = rows[s:s + 1000]

                async def unit_fn(unit: Unit, part: list[tuple[Record, list[Any]]] = part
                                  ) -> None:
                    await unit.write_all([(rec, entries, 0) for rec, entries in part])

                await store.atomic(unit_fn)

        await write(fixed)
        done = 0
        with mp.get_context("fork").Pool(os.cpu_count() or 2) as pool:
            for rows in pool.imap(_rows, jobs):
                await write(rows)
                done += len(rows)
                print(f"\r  loaded {done:,} appointments", end="", file=sys.stderr)
        print(file=sys.stderr)
    finally:
        await store.close()


def _dataset(appointments: int, practitioners: int) -> Path:
    today = datetime.now(UTC).date()
    folder = Path(tempfile.gettempdir()) / "fhir-sched-bench"
    folder.mkdir(exist_ok=True)
    path = folder / f"measures-{appointments}-{practitioners}.db"
    meta = {"appointments": appointments, "practitioners": practitioners,
            "today": today.isoformat(), "version": 1}
    if read_meta(path) != meta:
        for suffix in ("", "-wal", "-shm", ".meta.json"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        started = time.perf_counter()
        print(f"generating {appointments:,} appointments in {path}", file=sys.stderr)
        asyncio.run(_fill(path, appointments, practitioners, today))
        print(f"  in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        write_meta(path, meta)
    return path


def _timed(client: httpx.Client, url: str, params: dict[str, str], repeat: int
           ) -> tuple[list[float], Any]:
    times: list[float] = []
    body: Any = None
    for _ in range(repeat):
        started = time.perf_counter()
        r = client.get(url, params=params)
        times.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{url}: {r.status_code} {r.text[:500]}")
        body = r.json()
    return times, body


def _score(report: dict[str, Any]) -> tuple[str, str]:
    group = report["group"][0]
    score = group.get("measureScore", {}).get("value")
    counts = {p["code"]["coding"][0]["code"]: p["count"] for p in group["population"]}
    main = counts.get("denominator", counts.get("measure-population"))
    return f"{score:.3g}" if score is not None else "-", f"{main:,}" if main is not None else "-"


def _year(today: date, back: int = 0) -> dict[str, str]:
    end = today - timedelta(days=back)
    return {"periodStart": (end - timedelta(days=364)).isoformat(), "periodEnd": end.isoformat()}


def run(args: argparse.Namespace) -> list[Row]:
    """Per measure: the first report of a year (nothing kept: each run asks a year ending a
    day earlier, so it reads and parses every appointment), and later reports of the same
    year with one booking changed before each (the kept facts brought up to date)."""
    appointments = int(getattr(args, "appointments", 250_000))
    practitioners = int(getattr(args, "practitioners", 60))
    repeat = max(3, int(getattr(args, "repeat", 5)))
    path = _dataset(appointments, practitioners)
    today = datetime.now(UTC).date()
    rows: list[Row] = []
    warm_days = int(getattr(args, "warm_days", 400))
    env = {"FHIR_SCHED_KPI_WARM_DAYS": str(warm_days)}
    kind = ("the server's warm window (read at start) covers it" if warm_days
            else "cold: nothing kept")
    with Server(path, env) as server, httpx.Client(timeout=120) as client:
        base = server.base
        if warm_days:
            time.sleep(8)  # the warm-up starts 2 s after start and reads the year in ~3 s
        period = _year(today)
        count_params = {"date": [f"ge{period['periodStart']}",
                                 f"lt{(today + timedelta(days=1)).isoformat()}"],
                        "_summary": "count"}
        _timed(client, f"{base}/Appointment", count_params, 1)  # warm the page cache
        baseline, counted = _timed(client, f"{base}/Appointment", count_params, repeat)
        base_p50 = pct(baseline, 50)
        rows.append(("baseline: GET Appointment?date=<the year>&_summary=count p50",
                     f"{base_p50:.0f} ms ({counted['total']:,} appointments)", "(baseline)"))
        found = client.get(f"{base}/Appointment", params={
            "status": "booked", "date": f"gt{today.isoformat()}", "_count": "1"}).json()
        changed = found["entry"][0]["resource"]
        back = 1
        for measure in MEASURES:
            url = f"{base}/Measure/{measure}/$evaluate-measure"
            if measure in UNKEPT:
                times, report = _timed(client, url, period, repeat)
                score, members = _score(report)
                rows.append((f"{measure}: report of the year p50 / p95",
                             f"{pct(times, 50):.0f} / {pct(times, 95):.0f} ms "
                             f"({pct(times, 50) / base_p50:.1f}x)", "<= 2000 ms"))
                rows.append(("  score; denominator or population", f"{score}; {members}", ""))
                continue
            cold: list[float] = []
            report: Any = None
            for _ in range(repeat):
                times, report = _timed(client, url, _year(today, back), 1)
                back += 1
                cold += times
            warm: list[float] = []
            _timed(client, url, period, 1)
            for n in range(repeat):
                changed["comment"] = f"bench change {n}"
                r = client.put(f"{base}/Appointment/{changed['id']}", json=changed,
                               headers={"content-type": "application/fhir+json"})
                if r.status_code != 200:
                    raise SystemExit(f"PUT Appointment: {r.status_code} {r.text[:300]}")
                changed = r.json()
                times, report = _timed(client, url, period, 1)
                warm += times
            score, members = _score(report)
            rows.append((f"{measure}: first report of a year ({kind}) p50 / p95",
                         f"{pct(cold, 50):.0f} / {pct(cold, 95):.0f} ms "
                         f"({pct(cold, 50) / base_p50:.1f}x)", "<= 2000 ms"))
            rows.append((f"{measure}: next reports, a booking changed p50 / p95",
                         f"{pct(warm, 50):.0f} / {pct(warm, 95):.0f} ms "
                         f"({pct(warm, 50) / base_p50:.1f}x)", "<= 2000 ms"))
            rows.append(("  score; denominator or population", f"{score}; {members}", ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appointments", type=int, default=250_000)
    parser.add_argument("--practitioners", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warm-days", type=int, default=400,
                        help="FHIR_SCHED_KPI_WARM_DAYS for the server (0: cold, nothing kept)")
    rows = run(parser.parse_args())
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'result':<32}  target")
    for figure, result, target in rows:
        print(f"{figure:<{width}}  {result:<32}  {target}")


if __name__ == "__main__":
    main()
