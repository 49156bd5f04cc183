"""Issue 16 benchmark: the server's faces.

    python bench/faces_bench.py                      # every part
    python bench/faces_bench.py --only publish       # SMART Scheduling Links only
    python bench/faces_bench.py --only measures      # $evaluate-measure only

Parts, each on a fresh SQLite store and a real ``fhir-sched serve``:

- **publish**: ``--schedules`` practitioner Schedules (weekdays 08:00-18:00 New York, 15-minute
  slots, 28 days published: 101,000 slots at the default 130) and ``--bookings`` real
  bookings through the guard. Timed: the first ``GET /$bulk-publish`` plus every file it
  lists, made from the store (cold; target <= 5 s for 100,000 slots), against the baseline
  the same requests answered from the made publication (warm), in the same run; then a
  publication remade after one more booking.
- **console**: ``--practitioners`` (60) with Schedules and four visits each per day of the
  current week, then the console in headless Chromium (Playwright): the first load to
  interactive (signed in, calendars drawn; target <= 1 s) in a fresh browser, and the week view
  of every practitioner, read and drawn (target <= 500 ms), against the baseline the same FHIR
  searches made by a plain HTTP client in the same run.
- **measures**: ``bench/faces_measures.py`` (a year of appointments and ``$evaluate-measure``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import Server, pct
from tests.support.scheduling import hours, template

FHIR = {"content-type": "application/fhir+json"}
NY = ZoneInfo("America/New_York")
Row = tuple[str, str, str]


def _booked(practitioner: str, start: datetime, minutes: int) -> dict[str, object]:
    """A booked Appointment taking ``practitioner``'s time (the guard claims it)."""
    return {"resourceType": "Appointment", "status": "booked", "start": start.isoformat(),
            "end": (start + timedelta(minutes=minutes)).isoformat(),
            "participant": [{"actor": {"reference": practitioner}, "status": "accepted"}]}


async def _seed(base: str, schedules: int, bookings: int) -> None:
    async with httpx.AsyncClient(base_url=base, headers=FHIR, timeout=60) as client:
        r = await client.put("/Location/bench-loc", json={
            "resourceType": "Location", "id": "bench-loc", "status": "active",
            "name": "Bench Clinic", "telecom": [{"system": "phone", "value": "+1-617-555-0100"}],
            "address": {"line": ["1 Main St"], "city": "Boston", "state": "MA",
                        "postalCode": "02110"}})
        assert r.status_code in (200, 201), r.text
        sem = asyncio.Semaphore(16)

        async def one(n: int) -> None:
            async with sem:
                pid = f"bench-pr-{n}"
                for res in (
                        {"resourceType": "Practitioner", "id": pid, "name": [{"family": f"D{n}"}]},
                        {"resourceType": "Schedule", "id": f"bench-sc-{n}", "active": True,
                         "actor": [{"reference": f"Practitioner/{pid}"}],
                         "serviceType": [{"text": "General practice"}],
                         "extension": [template("America/New_York", hours(
                             ("mon", "tue", "wed", "thu", "fri"), "08:00:00", "18:00:00"),
                             slot=15)]}):
                    r = await client.put(f"/{res['resourceType']}/{res['id']}", json=res)
                    assert r.status_code in (200, 201), r.text

        await asyncio.gather(*(one(n) for n in range(schedules)))
        # PractitionerRoles place the practitioners at the clinic
        await asyncio.gather(*(client.put(f"/PractitionerRole/bench-role-{n}", json={
            "resourceType": "PractitionerRole", "id": f"bench-role-{n}", "active": True,
            "practitioner": {"reference": f"Practitioner/bench-pr-{n}"},
            "location": [{"reference": "Location/bench-loc"}]}) for n in range(schedules)))
        starts = _weekday_starts(bookings, schedules)

        async def book(n: int, start: datetime) -> None:
            async with sem:
                r = await client.post("/Appointment",
                                      json=_booked(f"Practitioner/bench-pr-{n}", start, 15))
                assert r.status_code == 201, r.text

        await asyncio.gather(*(book(n, s) for n, s in starts))


def _weekday_starts(count: int, schedules: int) -> list[tuple[int, datetime]]:
    """``count`` distinct (practitioner, 15-minute start) pairs inside the template hours over
    the next 27 days, spread over practitioners."""
    day = datetime.now(NY).replace(hour=8, minute=0, second=0, microsecond=0) + timedelta(days=1)
    days = [day + timedelta(days=d) for d in range(27) if (day + timedelta(days=d)).weekday() < 5]
    out = []
    for k in range(count):
        d = days[k % len(days)]
        n = (k // len(days)) % schedules
        q = (k // (len(days) * schedules)) * 7 % 40
        out.append((n, d + timedelta(minutes=15 * q)))
    return out


def _fetch_all(base: str) -> tuple[float, int, int]:
    """(seconds, slots, bytes) of the manifest plus every file it lists."""
    t0 = time.perf_counter()
    with httpx.Client(timeout=120) as client:
        manifest = client.get(f"{base}/$bulk-publish")
        assert manifest.status_code == 200, manifest.text
        slots = size = 0
        for item in manifest.json()["output"]:
            r = client.get(item["url"])
            assert r.status_code == 200
            size += len(r.content)
            if item["type"] == "Slot":
                slots += r.content.count(b"\n")
    return time.perf_counter() - t0, slots, size


def publish(args: argparse.Namespace) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"FHIR_SCHED_PUBLISH": "all", "FHIR_SCHED_PUBLISH_REFRESH_SECONDS": "1",
               "FHIR_SCHED_PUBLISH_MAX_SLOTS": "1000000",
               "FHIR_SCHED_BOOKING_LINK": "https://clinic.example/book?slot={slot}"}
        with Server(Path(tmp) / "publish.db", env) as server:
            t0 = time.perf_counter()
            asyncio.run(_seed(server.base, args.schedules, args.bookings))
            print(f"seeded {args.schedules} schedules and {args.bookings} bookings in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            cold, slots, size = _fetch_all(server.base)
            warm = [_fetch_all(server.base)[0] for _ in range(args.repeat)]
            remade = []
            for k in range(args.repeat):
                n, start = _weekday_starts(args.bookings + 1 + k, args.schedules)[-1]
                r = httpx.post(f"{server.base}/Appointment", headers=FHIR,
                               json=_booked(f"Practitioner/bench-pr-{n}", start, 15))
                assert r.status_code == 201, r.text
                time.sleep(1.1)  # past the refresh time: the next manifest is made anew
                remade.append(_fetch_all(server.base)[0])
    w50 = pct(warm, 50)
    return [
        ("published slots", f"{slots:,} ({size / 1e6:.1f} MB)", ">= 100,000 at defaults"),
        ("first publication, made + downloaded", f"{cold:.2f} s", "<= 5 s"),
        ("baseline: the same, served as made (warm) p50", f"{w50:.2f} s", "(baseline)"),
        ("first / warm", f"{cold / w50:.1f}x", "(reported)"),
        ("remade after a booking p50", f"{pct(remade, 50):.2f} s "
         f"({pct(remade, 50) / w50:.1f}x warm)", "<= 5 s"),
    ]


async def _seed_week(base: str, n: int) -> list[str]:
    async with httpx.AsyncClient(base_url=base, headers=FHIR, timeout=60) as client:
        sem = asyncio.Semaphore(16)
        monday = datetime.now(NY).astimezone(ZoneInfo("UTC")).replace(
            hour=0, minute=0, second=0, microsecond=0)
        monday -= timedelta(days=monday.weekday())

        async def one(k: int) -> None:
            async with sem:
                pid = f"wk-pr-{k}"
                for res in ({"resourceType": "Practitioner", "id": pid,
                             "name": [{"given": ["Doc"], "family": f"Number {k:02d}"}]},
                            {"resourceType": "Schedule", "id": f"wk-sc-{k}", "active": True,
                             "actor": [{"reference": f"Practitioner/{pid}"}],
                             "extension": [template("UTC", hours(
                                 ("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
                                 "07:00:00", "19:00:00"))]}):
                    r = await client.put(f"/{res['resourceType']}/{res['id']}", json=res)
                    assert r.status_code in (200, 201), r.text
                for d in range(7):
                    for v in range(4):
                        start = monday + timedelta(days=d, hours=8 + 2 * v)
                        r = await client.post("/Appointment",
                                              json=_booked(f"Practitioner/{pid}", start, 30))
                        assert r.status_code == 201, r.text

        await asyncio.gather(*(one(k) for k in range(n)))
        return [f"Practitioner/wk-pr-{k}" for k in range(n)]


def _api_reads(base: str, refs: list[str]) -> float:
    """The console's reads for a week of ``refs``, made by a plain HTTP client: the baseline."""
    monday = datetime.now(ZoneInfo("UTC")).replace(hour=0, minute=0, second=0, microsecond=0)
    monday -= timedelta(days=monday.weekday())
    t0 = time.perf_counter()
    with httpx.Client(base_url=base, timeout=60) as client:
        for i in range(0, len(refs), 50):
            chunk = ",".join(refs[i:i + 50])
            r = client.get("/Appointment", params=[
                ("actor", chunk), ("date", f"ge{monday.isoformat()}"),
                ("date", f"lt{(monday + timedelta(days=7)).isoformat()}"),
                ("status", "booked,pending,arrived,checked-in,fulfilled,noshow,proposed"),
                ("_include", "Appointment:patient"), ("_count", "1000")])
            assert r.status_code == 200
            client.get("/Schedule", params={"actor": chunk, "_count": 1000})
    return (time.perf_counter() - t0) * 1000


def console(args: argparse.Namespace) -> list[Row]:
    from playwright.sync_api import sync_playwright

    from tests.support.browser import launch

    # the current week's past days too: bookings up to 8 days back are let in
    past = {"FHIR_SCHED_PAST_GRACE_SECONDS": str(8 * 86400)}
    with tempfile.TemporaryDirectory() as tmp, Server(Path(tmp) / "console.db", past) as server:
        refs = asyncio.run(_seed_week(server.base, args.practitioners))
        origin = server.base.removesuffix("/fhir")
        loads, weeks = [], []
        with sync_playwright() as p:
            browser = launch(p)
            for _ in range(args.repeat):
                context = browser.new_context(viewport={"width": 1280, "height": 800},
                                              timezone_id="UTC")
                page = context.new_page()
                page.goto(f"{origin}/console/")
                page.wait_for_selector("body[data-ready=true]", timeout=30000)
                loads.append(page.evaluate("window.fsReadyAt"))
                everyone = json.dumps(refs)
                page.evaluate(f"localStorage.setItem('fs-chosen', {everyone!r})")
                page.reload()
                page.wait_for_selector("body[data-ready=true]", timeout=30000)
                page.wait_for_function("(window.fsTimings || []).length > 0")
                t = page.evaluate("window.fsTimings[window.fsTimings.length - 1]")
                assert t["resources"] == len(refs) and t["entries"] >= 4 * 7 * len(refs)
                weeks.append(t)
                context.close()
            browser.close()
        api = [_api_reads(server.base, refs) for _ in range(args.repeat)]
    total = [w["fetch"] + w["render"] for w in weeks]
    return [
        ("console first load to interactive p50", f"{pct(loads, 50):.0f} ms", "<= 1000 ms"),
        (f"week of {len(refs)} practitioners read + drawn p50",
         f"{pct(total, 50):.0f} ms ({int(weeks[0]['entries'])} visits)", "<= 500 ms"),
        ("  of which drawn p50", f"{pct([w['render'] for w in weeks], 50):.0f} ms", ""),
        ("baseline: the same reads by a plain HTTP client p50", f"{pct(api, 50):.0f} ms",
         "(baseline)"),
        ("week view / baseline", f"{pct(total, 50) / pct(api, 50):.1f}x", "(reported)"),
    ]


def measures(args: argparse.Namespace) -> list[Row]:
    try:
        from bench import faces_measures
    except ImportError:
        return [("$evaluate-measure", "not built yet", "<= 2 s")]
    rows: list[Row] = faces_measures.run(args)
    return rows


PARTS = {"publish": publish, "console": console, "measures": measures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(PARTS), action="append")
    parser.add_argument("--schedules", type=int, default=130)
    parser.add_argument("--bookings", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--practitioners", type=int, default=60)
    args = parser.parse_args()
    rows: list[Row] = []
    for name in args.only or list(PARTS):
        rows += PARTS[name](args)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'result':<28}  target")
    for figure, result, target in rows:
        print(f"{figure:<{width}}  {result:<28}  {target}")


if __name__ == "__main__":
    main()
