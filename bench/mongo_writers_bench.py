"""MongoDB writers against an earlier commit: how many unrelated writes get through while one
unit of work stays open, and write throughput with one and with eight concurrent writers.

    python bench/mongo_writers_bench.py --baseline 60f106a

One SecantusDB server (test-only, started here) or any replica set given as ``--uri``; each
round runs the same probe in a fresh interpreter for the baseline checkout (a temporary git
worktree) and for the working tree, alternately, each on a fresh database. The probe drives the
store port directly (two store objects, as two worker processes would), so what is measured is
the adapter's concurrency, not HTTP. Figures are medians of the rounds, with now/baseline.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run inside each checkout: prints "<figure> <value>" lines.
PROBE = r'''
import asyncio, os, sys, time
sys.path.insert(0, os.getcwd())
from fhir_sched.storage.base import Record
from fhir_sched.storage.mongo import MongoStore

URI, HOLD = sys.argv[1], float(sys.argv[2])

async def put(store, type_, id_):
    async def run(unit):
        prev = await unit.get(type_, id_)
        v = prev.version if prev else 0
        await unit.write(Record(type_, id_, v + 1, "2026-12-07T00:00:00.000Z", False,
                                b'{"resourceType":"%s"}' % type_.encode()), [], v)
    await store.atomic(run)

async def main():
    a, b = MongoStore(URI), MongoStore(URI)
    await a.start(); await b.start()
    for n in range(20):
        await put(a, "Patient", f"warm{n}")
    # 1. one writer, one after another
    t = time.perf_counter()
    for n in range(200):
        await put(a, "Patient", f"serial{n}")
    print("serial_writes_per_s", 200 / (time.perf_counter() - t), flush=True)
    # 2. eight writers on two store objects, unrelated resources
    async def writer(w):
        for n in range(50):
            await put((a, b)[w % 2], "Patient", f"w{w}-{n}")
    t = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(8)))
    print("concurrent_writes_per_s", 400 / (time.perf_counter() - t), flush=True)
    # 3. one unit open on an Appointment for HOLD seconds; unrelated writes meanwhile
    inside, release = asyncio.Event(), asyncio.Event()
    async def slow(unit):
        await unit.write(Record("Appointment", "held", 1, "2026-12-07T00:00:00.000Z", False,
                                b"{}"), [], 0)
        inside.set()
        await release.wait()
    held = asyncio.create_task(a.atomic(slow))
    await inside.wait()
    done = 0
    async def during(w):
        nonlocal done
        n = 0
        while not release.is_set():
            try:
                await asyncio.wait_for(put((a, b)[w % 2], "Patient", f"d{w}-{n}"), HOLD)
                done += 1
            except Exception:
                pass
            n += 1
    writers = [asyncio.create_task(during(w)) for w in range(4)]
    await asyncio.sleep(HOLD)
    print("writes_during_open_unit_per_s", done / HOLD, flush=True)
    release.set()
    await held
    for w in writers:
        w.cancel()
    await asyncio.gather(*writers, return_exceptions=True)
    await a.close(); await b.close()

asyncio.run(main())
'''


def probe(checkout: Path, uri: str, hold: float) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, uri, str(hold)], cwd=checkout,
                         check=True, capture_output=True, text=True, timeout=600).stdout
    return {k: float(v) for k, v in (line.split() for line in out.splitlines() if line)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a commit to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hold", type=float, default=3.0,
                        help="seconds the unit of work stays open in the third figure")
    parser.add_argument("--uri", help="a replica set to use instead of a SecantusDB server")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    server = None
    if args.uri is None:
        from tests.support.mongo_fixture import SecantusServer

        server = SecantusServer().start()
        base = server.uri
    else:
        base = args.uri.split("?")[0].rstrip("/")
    work = Path(tempfile.mkdtemp(prefix="fhir-sched-mongo-writers-")) / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(work), args.baseline], cwd=ROOT,
                   check=True, capture_output=True)
    try:
        runs: dict[str, dict[str, list[float]]] = {"baseline": {}, "now": {}}
        for _ in range(args.rounds):
            for label, where in (("baseline", work), ("now", ROOT)):
                uri = f"{base}/bench_{uuid.uuid4().hex[:10]}"
                for figure, value in probe(where, uri, args.hold).items():
                    runs[label].setdefault(figure, []).append(value)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(work)], cwd=ROOT,
                       capture_output=True)
        if server is not None:
            server.cleanup()
    where = "the given replica set" if args.uri else "SecantusDB"
    print(f"MongoDB writers on {where}, median of {args.rounds} interleaved rounds; "
          f"baseline {args.baseline}")
    print(f"{'':32} {'baseline':>10} {'now':>10} {'now/baseline':>13}")
    for figure in runs["now"]:
        b = statistics.median(runs["baseline"].get(figure, [float("nan")]))
        n = statistics.median(runs["now"][figure])
        ratio = f"{n / b:12.0%}" if b else "   (none before)"
        print(f"{figure:32} {b:10.1f} {n:10.1f} {ratio}")


if __name__ == "__main__":
    main()
