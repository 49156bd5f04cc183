"""What the server's own per-request machinery costs, against an earlier commit: CPU per GET by
id, per search and per create, measured in-process (the ASGI app called directly, so neither a
load generator nor the network blurs a few microseconds), the two checkouts interleaved.

    python bench/overhead_bench.py --baseline c0fa355

The baseline commit is checked out into a temporary git worktree; each round runs the same
measurement in a fresh interpreter for the baseline and for the working tree, alternately, and
the median of the rounds is printed with the ratio. CPU time (all threads), not wall time:
a busy machine slows both sides alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run inside each checkout: prints "<kind> <cpu us per request>" lines.
PROBE = r'''
import asyncio, os, sys, tempfile, time
sys.path.insert(0, os.getcwd())
os.environ.update({"FHIR_SCHED_AUTH": "none", "FHIR_SCHED_LOG_LEVEL": "warning"})
import logging
logging.basicConfig(level=logging.WARNING, handlers=[logging.NullHandler()])
import orjson
from fhir_sched.app import create_app
from fhir_sched.settings import Settings

N = int(sys.argv[1])

async def main():
    app = create_app(Settings.from_env(store=f"sqlite:///{tempfile.mkdtemp()}/x.db"))
    q, sent = asyncio.Queue(), []
    await q.put({"type": "lifespan.startup"})
    async def lrecv(): return await q.get()
    async def lsend(m): sent.append(m)
    life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, lrecv, lsend))
    while not sent: await asyncio.sleep(0.01)

    async def call(method, path, qs=b"", body=b""):
        out, done = [], False
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": qs, "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 8080),
                 "headers": [(b"host", b"127.0.0.1:8080"),
                             (b"content-type", b"application/fhir+json"),
                             (b"accept", b"application/fhir+json")]}
        async def recv():
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
        async def send(m): out.append(m)
        await app(scope, recv, send)
        return out

    body = orjson.dumps({"resourceType": "Patient", "name": [{"family": "X", "given": ["Y"]}]})
    made = await call("POST", "/fhir/Patient", body=body)
    pid = dict(made[0]["headers"])[b"location"].decode().split("/Patient/")[1].split("/")[0]
    kinds = [("read", "GET", f"/fhir/Patient/{pid}", b"", b"", N),
             ("search", "GET", "/fhir/Patient", b"family=X&_count=10", b"", N // 2),
             ("create", "POST", "/fhir/Patient", b"", body, N // 8)]
    for kind, method, path, qs, payload, n in kinds:
        for _ in range(max(200, n // 10)):
            await call(method, path, qs, payload)
        c0 = time.process_time()
        for _ in range(n):
            await call(method, path, qs, payload)
        print(kind, (time.process_time() - c0) / n * 1e6, flush=True)
    await q.put({"type": "lifespan.shutdown"})
    await life

asyncio.run(main())
'''


def probe(checkout: Path, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(n)], cwd=checkout, check=True,
                         capture_output=True, text=True).stdout
    return {k: float(v) for k, v in (line.split() for line in out.splitlines() if line)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a commit to compare with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=6000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fhir-sched-overhead-")) / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(work), args.baseline], cwd=ROOT,
                   check=True, capture_output=True)
    try:
        runs: dict[str, dict[str, list[float]]] = {"baseline": {}, "now": {}}
        for _ in range(args.rounds):
            for label, where in (("baseline", work), ("now", ROOT)):
                for kind, us in probe(where, args.requests).items():
                    runs[label].setdefault(kind, []).append(us)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(work)], cwd=ROOT,
                       capture_output=True)
    print(f"server CPU per request, median of {args.rounds} interleaved rounds, "
          f"{os.cpu_count()} CPUs; baseline {args.baseline}")
    print(f"{'':10} {'baseline us':>12} {'now us':>10} {'now/baseline':>13}")
    for kind in runs["now"]:
        base = statistics.median(runs["baseline"].get(kind, [float("nan")]))
        now = statistics.median(runs["now"][kind])
        print(f"{kind:10} {base:12.1f} {now:10.1f} {now / base:12.0%}")


if __name__ == "__main__":
    main()
