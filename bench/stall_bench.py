"""Event-loop stalls under hostile input: does one client's bad request hold everyone else?

A real ``fhir-sched serve`` (SQLite, auth off) with a few thousand resources. A reader reads
one Appointment by id every 10 ms; its latency is measured first alone (the baseline), then
while ``--attackers`` clients send, back to back, the requests of the hostile suite: bodies at
the size limit, deep JSON, a 256 KB narrative, a gzip bomb, a ten-year booking, a 500-entry
transaction, searches at every limit, ``_include`` fan-out, 5,000 ``_id`` values. Printed:
the reader's p50/p99/max in both phases (the ratio is the cost of the attack to a bystander),
and the server's own event-loop lag p99 (``fhir_sched_event_loop_lag_seconds``) during the
attack, whose target is under 50 ms.

    python bench/stall_bench.py --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

FHIR = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hostile(base: str, appt: str) -> list[tuple[str, Callable[[httpx.AsyncClient], Any]]]:
    big_names = {"resourceType": "Patient", "name": [
        {"family": "X" * 50, "given": ["Y" * 50] * 5} for _ in range(9000)]}
    deep: dict[str, Any] = {"url": "http://x/e", "valueString": "v"}
    for _ in range(60):
        deep = {"url": "http://x/e", "extension": [deep]}
    narrative = {"resourceType": "Patient", "text": {"status": "generated", "div": (
        '<div xmlns="http://www.w3.org/1999/xhtml">' + "<p>word</p>" * 20000 + "</div>")}}
    bomb = gzip.compress(b'{"resourceType":"Patient","name":[' + b'{"family":"x"},' * 4_000_000
                         + b'{"family":"y"}]}')
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": f"T{i}"}]},
         "request": {"method": "POST", "url": "Patient"}} for i in range(500)]}
    ids = ",".join(f"id{i}" for i in range(5000))
    return [
        ("3 MB Patient", lambda c: c.post(f"{base}/Patient", content=orjson.dumps(big_names),
                                          headers=FHIR)),
        ("extension 60 deep", lambda c: c.post(f"{base}/Patient", headers=FHIR, content=(
            orjson.dumps({"resourceType": "Patient", "extension": [deep]})))),
        ("256 KB narrative", lambda c: c.post(f"{base}/Patient", headers=FHIR,
                                              content=orjson.dumps(narrative))),
        ("gzip bomb", lambda c: c.post(f"{base}/Patient", content=bomb, headers={
            **FHIR, "content-encoding": "gzip"})),
        ("ten-year booking", lambda c: c.post(f"{base}/Appointment", headers=FHIR, content=(
            orjson.dumps({"resourceType": "Appointment", "status": "booked",
                          "start": "2031-01-01T09:00:00Z", "end": "2041-01-01T09:00:00Z",
                          "participant": [{"actor": {"display": "x"},
                                           "status": "accepted"}]})))),
        ("500-entry transaction", lambda c: c.post(base, headers=FHIR,
                                                   content=orjson.dumps(transaction))),
        ("5,000 _id values", lambda c: c.get(f"{base}/Patient", params={"_id": ids})),
        ("_include everything", lambda c: c.get(f"{base}/Appointment", params=[
            ("_count", "1000"), *(("_include", f"Appointment:{p}") for p in (
                "actor", "patient", "practitioner", "location", "slot"))])),
        ("contains search, sorted, total", lambda c: c.get(f"{base}/Patient", params={
            "name:contains": "a", "_sort": "-family,given", "_total": "accurate",
            "_count": "1000"})),
        ("$find a year", lambda c: c.get(f"{base}/Appointment/$find", params={
            "start": "2031-01-01T00:00:00Z", "end": "2031-12-31T00:00:00Z"})),
        ("read", lambda c: c.get(f"{base}/Appointment/{appt}")),
    ]


def seed(base: str, n: int) -> str:
    with httpx.Client(timeout=60) as c:
        entries = [{"resource": {"resourceType": "Patient", "name": [
            {"family": f"Family{i % 50}", "given": [f"Given{i}"]}]},
            "request": {"method": "POST", "url": "Patient"}} for i in range(n)]
        for k in range(0, n, 200):
            r = c.post(base, headers=FHIR, content=orjson.dumps(
                {"resourceType": "Bundle", "type": "batch", "entry": entries[k:k + 200]}))
            r.raise_for_status()
        appt = c.post(f"{base}/Appointment", headers=FHIR, content=orjson.dumps({
            "resourceType": "Appointment", "status": "proposed",
            "participant": [{"actor": {"display": "reader"}, "status": "needs-action"}]}))
        appt.raise_for_status()
        return str(appt.json()["id"])


async def reader(url: str, seconds: float) -> list[float]:
    out: list[float] = []
    async with httpx.AsyncClient(timeout=30) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            r = await c.get(url)
            out.append(time.perf_counter() - t)
            assert r.status_code == 200
            await asyncio.sleep(0.01)
    return out


async def attack(cases: list[tuple[str, Callable[[httpx.AsyncClient], Any]]], seconds: float,
                 attackers: int) -> dict[str, list[int]]:
    codes: dict[str, list[int]] = {}
    end = time.monotonic() + seconds

    async def one(offset: int) -> None:
        async with httpx.AsyncClient(timeout=120) as c:
            i = offset
            while time.monotonic() < end:
                name, make = cases[i % len(cases)]
                try:
                    r = await make(c)
                    codes.setdefault(name, []).append(r.status_code)
                except httpx.HTTPError:
                    codes.setdefault(name, []).append(0)
                i += 1

    await asyncio.gather(*(one(k * 3) for k in range(attackers)))
    return codes


async def case_alone(read_url: str, make: Callable[[httpx.AsyncClient], Any]
                     ) -> tuple[float, float]:
    """The reader's worst latency while one case runs 4 times in a row, and the case's mean
    time: which request holds the loop, and for how long."""
    done = asyncio.Event()
    worst = 0.0

    async def read() -> None:
        nonlocal worst
        async with httpx.AsyncClient(timeout=30) as c:
            await c.get(read_url)  # connected before the clock starts
            while not done.is_set():
                t = time.perf_counter()
                await c.get(read_url)
                worst = max(worst, time.perf_counter() - t)
                await asyncio.sleep(0.005)

    task = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    async with httpx.AsyncClient(timeout=120) as c:
        t = time.perf_counter()
        for _ in range(4):
            await make(c)
        each = (time.perf_counter() - t) / 4
    done.set()
    await task
    return worst * 1000, each * 1000


def lag_buckets(metrics_url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(metrics_url).text.splitlines():
        if line.startswith("fhir_sched_event_loop_lag_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


def lag_p99(before: dict[str, float], after: dict[str, float]) -> str:
    delta = sorted(((float(k), after[k] - before.get(k, 0.0)) for k in after),
                   key=lambda kv: kv[0])
    total = delta[-1][1]
    if total <= 0:
        return "n/a"
    for bound, cumulative in delta:
        if cumulative >= 0.99 * total:
            return f"<= {bound * 1000:g} ms" if bound != float("inf") else "> 2.5 s"
    return "n/a"


def lag_max(before: dict[str, float], after: dict[str, float]) -> str:
    """The bucket the longest lag fell in: the first bound whose count covers them all."""
    delta = sorted(((float(k), after[k] - before.get(k, 0.0)) for k in after),
                   key=lambda kv: kv[0])
    total = delta[-1][1] if delta else 0
    for bound, cumulative in delta:
        if cumulative >= total:
            return f"<= {bound * 1000:g}" if bound != float("inf") else "> 2500"
    return "n/a"


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] * 1000 if len(xs) > 1 else xs[0] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--attackers", type=int, default=2)
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--per-case", action="store_true",
                        help="also: each case alone, 4 times, with the reader's worst latency")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fhir-sched-stall-"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_sched.cli", "serve", "--port", str(port), "--store",
         f"sqlite:///{work}/stall.db"], start_new_session=True,
        env={**os.environ, "FHIR_SCHED_AUTH": "none", "FHIR_SCHED_LOG_LEVEL": "warning"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/metadata", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        appt = seed(base, args.patients)
        read_url = f"{base}/Appointment/{appt}"
        metrics = f"http://127.0.0.1:{port}/metrics"
        calm = asyncio.run(reader(read_url, args.duration / 2))
        before = lag_buckets(metrics)

        async def both() -> tuple[list[float], dict[str, list[int]]]:
            return await asyncio.gather(reader(read_url, args.duration),
                                        attack(hostile(base, appt), args.duration,
                                               args.attackers))

        stormy, codes = asyncio.run(both())
        after = lag_buckets(metrics)
        worst: dict[str, tuple[float, float, str]] = {}
        if args.per_case:
            for name, make in hostile(base, appt):
                ahead = lag_buckets(metrics)
                w, each = asyncio.run(case_alone(read_url, make))
                time.sleep(0.25)  # the last lag sample of the case is in
                worst[name] = (w, each, lag_max(ahead, lag_buckets(metrics)))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    print(f"{args.attackers} hostile clients for {args.duration:g} s, reader every 10 ms, "
          f"{os.cpu_count()} CPUs")
    print(f"{'case':34} {'sent':>5}  statuses")
    for name, got in codes.items():
        shown = ", ".join(f"{c}x{got.count(c)}" for c in sorted(set(got)))
        print(f"{name:34} {len(got):5}  {shown}")
    if worst:
        print(f"\n{'each case alone (4 in a row)':34} {'ms each':>8} {'reader max ms':>14} "
              f"{'loop lag max ms':>16}")
        for name, (w, each, lag) in worst.items():
            print(f"{name:34} {each:8.1f} {w:14.1f} {lag:>16}")
    print(f"\n{'reader GET by id':34} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, xs in (("alone (baseline)", calm), ("under attack", stormy)):
        print(f"{label:34} {pct(xs, 50):8.1f} {pct(xs, 99):8.1f} {max(xs) * 1000:8.1f}")
    print(f"\nreader p99 under attack: {pct(stormy, 99) / pct(calm, 99):.1f}x the baseline; "
          f"event-loop lag p99 during the attack {lag_p99(before, after)} (target < 50 ms); "
          f"5xx answers: {sum(1 for g in codes.values() for c in g if c >= 500)}")


if __name__ == "__main__":
    main()
