"""REST core benchmark (issue 2): FHIR read against the framework ceiling, and create throughput.

    python bench/rest_bench.py [--duration 10] [--connections 16] [--loadgen wrk|httpx]

In one run, on one machine:

1. ``GET /fhir/Appointment/{id}`` on a real ``fhir-sched serve`` process (SQLite store),
2. the same URL on a *ceiling* app: a bare FastAPI endpoint in its own uvicorn process that
   returns the very same bytes and content type without touching a store; the gap between the
   two is what fhir-sched's read path costs on top of the framework,
3. ``POST /fhir/Appointment`` on the fhir-sched process: each request is validated, its
   references resolved, indexed and durably committed (``synchronous=FULL``) before the 201,
4. the same read with a bearer token on a second fhir-sched process with auth on (same store):
   the cost of SMART on the hot path, against the anonymous read (target: >= 90%); the two
   reads are measured in turn, twice each, and each keeps its run with less CPU per request,
5. the SMART Backend Services token endpoint: each request a fresh ES384 client assertion
   (signature check, jti recorded durably, token signed), against the create rate (both are
   one durable write per request).

The measured fhir-sched runs with ``FHIR_SCHED_AUTH=none`` for 1-3, so those figures compare
with earlier runs.

The load generator runs in a separate process: ``wrk`` (Debian package) with a Lua script that
prints the latency percentiles, or, where wrk is missing, an async httpx client in a subprocess
(``--loadgen httpx``; it is slower than wrk, so its ceiling is lower too). Each measurement is
preceded by a short warm-up. Both servers run one uvicorn worker with the same defaults, so the
ratio compares like with like. Target: reads at >= 60% of the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

FHIR_JSON = "application/fhir+json; charset=utf-8"

WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d,'
    .. ' "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""

WRK_POST = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.headers["Accept"] = "application/fhir+json"
wrk.headers["Prefer"] = "return=minimal"
wrk.body = io.open(os.getenv("BENCH_BODY"), "rb"):read("*a")
"""

WRK_GET = """
wrk.headers["Accept"] = "application/fhir+json"
"""

WRK_GET_AUTH = """
wrk.headers["Accept"] = "application/fhir+json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
"""


@dataclass
class Result:
    label: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us: float  # server CPU (all threads, user+system) per request; robust to a busy box


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- processes -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early ({proc.returncode}) for {url}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# -- the ceiling app -----------------------------------------------------------------------------
def serve_ceiling(port: int, body_file: str) -> None:
    """A bare FastAPI endpoint returning fixed bytes: what any FastAPI read costs at best."""
    import uvicorn
    from fastapi import FastAPI
    from starlette.responses import Response

    body = Path(body_file).read_bytes()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/fhir/Appointment/{id}")
    async def read(id: str) -> Response:
        return Response(body, media_type=FHIR_JSON)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- load generators -----------------------------------------------------------------------------
def run_wrk(url: str, duration: float, connections: int, script: str,
            body_file: str | None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script + WRK_REPORT)
        lua = fh.name
    try:
        env = {**os.environ, **({"BENCH_BODY": body_file} if body_file else {})}
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
             "-s", lua, url], capture_output=True, text=True, env=env, check=True).stdout
    finally:
        os.unlink(lua)
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return orjson.loads(line.removeprefix("RESULT "))


async def _httpx_load(url: str, method: str, body: bytes | None, connections: int,
                      duration: float) -> dict[str, Any]:
    headers = {"accept": "application/fhir+json"}
    if os.environ.get("BENCH_TOKEN"):
        headers["authorization"] = f"Bearer {os.environ['BENCH_TOKEN']}"
    if body is not None:
        headers |= {"content-type": "application/fhir+json", "prefer": "return=minimal"}
    latencies: list[float] = []
    errors = non2xx = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        t0 = time.perf_counter()
        end = t0 + duration

        async def worker() -> None:
            nonlocal errors, non2xx
            while time.perf_counter() < end:
                s = time.perf_counter()
                try:
                    r = await client.request(method, url, content=body, headers=headers)
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - s)
                non2xx += not 200 <= r.status_code < 300

        await asyncio.gather(*[worker() for _ in range(connections)])
        elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"requests": len(latencies), "duration_us": int(elapsed * 1e6), "errors": errors,
            "non2xx": non2xx, "p50_us": int(q[49] * 1e6), "p99_us": int(q[98] * 1e6)}


def run_httpx(url: str, duration: float, connections: int, method: str,
              body_file: str | None) -> dict[str, Any]:
    """The httpx generator in its own process, so it does not share a CPU slice with us."""
    cmd = [sys.executable, __file__, "--_httpx-load", url, method, body_file or "",
           str(connections), str(duration)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return orjson.loads(out.strip().splitlines()[-1])


def measure(label: str, url: str, args: argparse.Namespace, server_pid: int,
            method: str = "GET", body_file: str | None = None) -> Result:
    def once(duration: float) -> dict[str, Any]:
        if args.loadgen == "wrk":
            script = WRK_POST if method == "POST" else (
                WRK_GET_AUTH if os.environ.get("BENCH_TOKEN") else WRK_GET)
            return run_wrk(url, duration, args.connections, script, body_file)
        return run_httpx(url, duration, args.connections, method, body_file)

    once(args.warmup)
    cpu0 = cpu_seconds(server_pid)
    raw = once(args.duration)
    cpu = cpu_seconds(server_pid) - cpu0
    rps = raw["requests"] / (raw["duration_us"] / 1e6)
    return Result(label, rps, raw["p50_us"] / 1000, raw["p99_us"] / 1000, raw["requests"],
                  raw["errors"] + raw["non2xx"], cpu / max(1, raw["requests"]) * 1e6)


# -- SMART -------------------------------------------------------------------------------------
def register_backend(store: str, work: Path) -> Any:
    """A backend client registered with the real CLI; returns its private key."""
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-384", parameters={"kid": "bench-es384"}, private=True)
    jwks = work / "bench-jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [{**key.as_dict(private=False), "alg": "ES384"}]}))
    subprocess.run([sys.executable, "-m", "fhir_sched.cli", "client", "add", "--client-id",
                    "bench", "--scope", "system/*.cruds", "--jwks-file", str(jwks), "--store",
                    store], check=True, capture_output=True)
    return key


def assertions(key: Any, token_url: str, n: int) -> list[bytes]:
    """``n`` ready token-request bodies, each with its own jti (signed before the clock
    starts, so the figure is the server's)."""
    import secrets
    from urllib.parse import urlencode

    from joserfc import jwt

    now = int(time.time())
    run = secrets.token_hex(6)
    out = []
    for i in range(n):
        claims = {"iss": "bench", "sub": "bench", "aud": token_url, "exp": now + 280,
                  "jti": f"bench-{run}-{i}"}
        signed = jwt.encode({"alg": "ES384", "kid": "bench-es384"}, claims, key,
                            algorithms=["ES384"])
        out.append(urlencode({
            "grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": signed}).encode())
    return out


async def _token_load(url: str, bodies: list[bytes], connections: int) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    pending = list(reversed(bodies))
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"content-type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        t0 = time.perf_counter()

        async def worker() -> None:
            nonlocal failures
            while pending:
                body = pending.pop()
                s = time.perf_counter()
                r = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - s)
                failures += r.status_code != 200

        await asyncio.gather(*[worker() for _ in range(connections)])
        elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "duration_us": int(elapsed * 1e6), "errors": failures,
            "non2xx": 0, "p50_us": int(q[49] * 1e6), "p99_us": int(q[98] * 1e6)}


def measure_tokens(url: str, key: Any, args: argparse.Namespace, server_pid: int) -> Result:
    warm = assertions(key, url, 100)
    asyncio.run(_token_load(url, warm, args.connections))
    bodies = assertions(key, url, args.token_requests)
    cpu0 = cpu_seconds(server_pid)
    raw = asyncio.run(_token_load(url, bodies, args.connections))
    cpu = cpu_seconds(server_pid) - cpu0
    rps = raw["requests"] / (raw["duration_us"] / 1e6)
    return Result("SMART token endpoint (backend services)", rps, raw["p50_us"] / 1000,
                  raw["p99_us"] / 1000, raw["requests"], raw["errors"],
                  cpu / max(1, raw["requests"]) * 1e6)


# -- data --------------------------------------------------------------------------------------
def seed(base: str) -> tuple[str, dict[str, Any]]:
    """A realistic booked Appointment (with its Patient, Practitioner and Slot) to read, and
    the body to POST (a new Appointment for the same people)."""
    with httpx.Client(base_url=base, headers={"accept": "application/fhir+json"}) as c:
        def create(res: dict[str, Any]) -> str:
            r = c.post(f"/{res['resourceType']}", json=res)
            r.raise_for_status()
            return str(r.json()["id"])

        patient = create({"resourceType": "Patient", "name": [{"family": "Bench",
                                                              "given": ["Ruth"]}],
                          "identifier": [{"system": "urn:bench", "value": "p1"}],
                          "gender": "female", "birthDate": "1980-04-02"})
        practitioner = create({"resourceType": "Practitioner",
                               "name": [{"family": "Adeyemi", "prefix": ["Dr"]}]})
        schedule = create({"resourceType": "Schedule",
                           "actor": [{"reference": f"Practitioner/{practitioner}"}]})
        slot = create({"resourceType": "Slot", "schedule": {"reference": f"Schedule/{schedule}"},
                       "status": "busy", "start": "2030-06-03T09:00:00Z",
                       "end": "2030-06-03T09:20:00Z"})
        appt = {
            "resourceType": "Appointment", "status": "booked",
            "serviceType": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/service-type",
                "code": "124", "display": "General Practice"}]}],
            "appointmentType": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0276",
                "code": "ROUTINE", "display": "Routine appointment"}]},
            "description": "Annual review", "start": "2030-06-03T09:00:00Z",
            "end": "2030-06-03T09:20:00Z", "minutesDuration": 20,
            "slot": [{"reference": f"Slot/{slot}"}],
            "participant": [
                {"actor": {"reference": f"Patient/{patient}", "display": "Ruth Bench"},
                 "required": "required", "status": "accepted"},
                {"actor": {"reference": f"Practitioner/{practitioner}",
                           "display": "Dr Adeyemi"},
                 "required": "required", "status": "accepted"}],
        }
        appt_id = create(appt)
        # the POSTed Appointments are proposals without a slot, so they don't contend for it
        post = {k: v for k, v in appt.items() if k not in ("slot",)}
        post["status"] = "proposed"
        return appt_id, post


# -- main --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--loadgen", choices=("wrk", "httpx"),
                        default="wrk" if shutil.which("wrk") else "httpx")
    parser.add_argument("--token-requests", type=int, default=2000,
                        help="token requests for the token endpoint figure")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fhir-sched-bench-"))
    fhir_port, ceiling_port = free_port(), free_port()
    store = f"sqlite:///{work}/bench.db"
    fhir = start([sys.executable, "-m", "fhir_sched.cli", "serve", "--host", "127.0.0.1",
                  "--port", str(fhir_port), "--store", store],
                 env={"FHIR_SCHED_LOG_LEVEL": "warning", "FHIR_SCHED_AUTH": "none"})
    ceiling: subprocess.Popen[bytes] | None = None
    smart: subprocess.Popen[bytes] | None = None
    try:
        base = f"http://127.0.0.1:{fhir_port}/fhir"
        wait_ready(f"{base}/metadata", fhir)
        appt_id, post_body = seed(base)
        read_url = f"{base}/Appointment/{appt_id}"
        stored = httpx.get(read_url, headers={"accept": "application/fhir+json"})
        body_file = work / "appointment.json"
        body_file.write_bytes(stored.content)
        post_file = work / "post.json"
        post_file.write_bytes(orjson.dumps(post_body))

        ceiling = start([sys.executable, __file__, "--_ceiling", str(ceiling_port),
                         str(body_file)])
        ceiling_url = f"http://127.0.0.1:{ceiling_port}/fhir/Appointment/{appt_id}"
        wait_ready(ceiling_url, ceiling)
        same = httpx.get(ceiling_url)
        assert same.content == stored.content and same.headers["content-type"] == \
            stored.headers["content-type"], "the ceiling must serve the same bytes"

        print(f"load generator: {args.loadgen}, {args.connections} connections, "
              f"{args.duration:g}s per run (+{args.warmup:g}s warm-up), "
              f"{os.cpu_count()} CPUs, body {len(stored.content)} bytes", flush=True)
        ceil = measure("ceiling  GET (bare FastAPI, same bytes)", ceiling_url, args,
                       ceiling.pid)

        key = register_backend(store, work)
        smart_port = free_port()
        smart = start([sys.executable, "-m", "fhir_sched.cli", "serve", "--host", "127.0.0.1",
                       "--port", str(smart_port), "--store", store],
                      env={"FHIR_SCHED_LOG_LEVEL": "warning", "FHIR_SCHED_AUTH": "smart"})
        smart_base = f"http://127.0.0.1:{smart_port}/fhir"
        wait_ready(f"{smart_base}/metadata", smart)
        token_url = httpx.get(f"{smart_base}/.well-known/smart-configuration"
                              ).json()["token_endpoint"]
        token = httpx.post(token_url, content=assertions(key, token_url, 1)[0], headers={
            "content-type": "application/x-www-form-urlencoded"}).json()["access_token"]
        authed_url = f"{smart_base}/Appointment/{appt_id}"
        check = httpx.get(authed_url, headers={"accept": "application/fhir+json",
                                               "authorization": f"Bearer {token}"})
        assert check.status_code == 200 and check.content == stored.content
        assert httpx.get(authed_url).status_code == 401
        # The two reads are measured in turn, twice, before any create grows the store (the
        # background checkpoint after thousands of creates would be charged to whichever read
        # came next); each keeps its better run, so a noisy neighbour hurts neither alone.
        reads: list[Result] = []
        authed_runs: list[Result] = []
        for _ in range(2):
            reads.append(measure("fhir-sched GET /fhir/Appointment/{id}", read_url, args,
                                 fhir.pid))
            os.environ["BENCH_TOKEN"] = token
            try:
                authed_runs.append(measure("fhir-sched GET, bearer token (auth on)",
                                           authed_url, args, smart.pid))
            finally:
                os.environ.pop("BENCH_TOKEN", None)
        read = min(reads, key=lambda r: r.cpu_us)
        authed = min(authed_runs, key=lambda r: r.cpu_us)
        create = measure("fhir-sched POST /fhir/Appointment", f"{base}/Appointment", args,
                         fhir.pid, "POST", str(post_file))
        tokens = measure_tokens(token_url, key, args, smart.pid)
    finally:
        if ceiling is not None:
            stop(ceiling)
        if smart is not None:
            stop(smart)
        stop(fhir)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'':44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'vs ceiling':>11} {'CPU us/req':>11}")
    for r in (ceil, read, create, authed, tokens):
        print(f"{r.label:44} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7d} "
              f"{r.rps / ceil.rps:10.0%} {r.cpu_us:11.0f}")
    verdict = "meets" if read.rps >= 0.6 * ceil.rps else "BELOW"
    print(f"\nreads at {read.rps / ceil.rps:.0%} of the ceiling ({verdict} the 60% target), "
          f"{ceil.cpu_us / read.cpu_us:.0%} by server CPU per request; creates at "
          f"{create.rps:.0f}/s, each durably committed")
    verdict = "meets" if authed.rps >= 0.9 * read.rps else "BELOW"
    print(f"authenticated reads at {authed.rps / read.rps:.0%} of anonymous reads ({verdict} "
          f"the 90% target), {read.cpu_us / authed.cpu_us:.0%} by server CPU per request; "
          f"token endpoint {tokens.rps:.0f}/s ({tokens.rps / create.rps:.0%} of the create "
          f"rate, {tokens.errors} refused)")
    busy = os.getloadavg()[0]
    if busy > (os.cpu_count() or 1) * 0.5:
        print(f"note: load average {busy:.1f} on {os.cpu_count()} CPUs while measuring; "
              "throughput figures are depressed, CPU per request is the steadier figure")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_ceiling":
        serve_ceiling(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--_httpx-load":
        url, method, body_path, conns, dur = sys.argv[2:7]
        payload = Path(body_path).read_bytes() if body_path else None
        print(orjson.dumps(asyncio.run(_httpx_load(url, method, payload, int(conns),
                                                   float(dur)))).decode())
    else:
        main()
