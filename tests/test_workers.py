"""Running as an operator does: ``--workers N`` serves from N processes on one store, and a
SIGTERM lets the requests in flight finish before the server exits."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import web
from tests.support.server import ServerProcess, cleanup_dir, free_port, store_url

FHIR_JSON = {"content-type": "application/fhir+json"}


@pytest.fixture
def url(store_kind: str, mongo_uri: str | None) -> Iterator[str]:
    u = store_url(store_kind, mongo_uri, "fhir_sched_workers")
    yield u
    if u.startswith("sqlite"):
        cleanup_dir(u.removeprefix("sqlite:///").rsplit("/", 1)[0])


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def test_workers_serve_from_several_processes_on_one_store(url: str) -> None:
    server = ServerProcess(url, env={"FHIR_SCHED_AUTH": "none", "FHIR_SCHED_WORKERS": "2",
                                     "FHIR_SCHED_LOG_LEVEL": "info",
                                     "FHIR_SCHED_LOG_FORMAT": "json"}).start()
    try:
        assert server.proc is not None
        assert len(children(server.proc.pid)) >= 2  # the supervisor's worker processes

        def create(n: int) -> int:
            return web.post(f"{server.base}/Patient", headers=FHIR_JSON, json={
                "resourceType": "Patient", "identifier": [{"value": f"w{n}"}]},
                timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(create, range(60)))
        assert codes == [201] * 60
        found = web.get(f"{server.base}/Patient", params={"_summary": "count"}).json()
        assert found["total"] == 60
        def answered_by() -> set[object]:
            return {json.loads(ln).get("pid") for ln in server.log().splitlines()
                    if ln.startswith("{") and '"fhir_sched.access"' in ln}

        # Which worker accepts a connection is the kernel's choice; on a loaded machine one
        # may win every race for a while, so keep asking (bounded) until both have answered.
        pids = answered_by()
        for _ in range(20):
            if len(pids) >= 2:
                break
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda _: web.get(f"{server.base}/metadata", timeout=30).status_code,
                              range(32)))
            time.sleep(0.2)
            pids = answered_by()
        assert len(pids) == 2, pids  # both workers answered some of them
    finally:
        server.stop()


def requests_by_worker(exposition: str, interaction: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if (s.name == "fhir_sched_http_requests_total"
                    and s.labels.get("interaction") == interaction):
                out[s.labels["worker"]] = out.get(s.labels["worker"], 0) + s.value
    return out


def test_a_scrape_reaching_any_worker_reports_every_worker_by_pid(url: str) -> None:
    server = ServerProcess(url, env={"FHIR_SCHED_AUTH": "none", "FHIR_SCHED_WORKERS": "2"})
    server.start()
    try:
        assert server.proc is not None
        # uvicorn's worker processes; not multiprocessing's resource tracker beside them
        workers = {str(p) for p in children(server.proc.pid)
                   if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()}
        assert len(workers) == 2
        environ = Path(f"/proc/{min(workers)}/environ").read_bytes().split(b"\0")
        shared = next(v.split(b"=", 1)[1].decode() for v in environ
                      if v.startswith(b"FHIR_SCHED_METRICS_DIR="))

        def create(n: int) -> int:
            return web.post(f"{server.base}/Patient", headers=FHIR_JSON, json={
                "resourceType": "Patient", "identifier": [{"value": f"m{n}"}]},
                timeout=30).status_code

        # Which worker accepts a connection is the kernel's choice, and a loaded machine may
        # give one of them every create for a while: create in rounds (bounded) until the
        # scrapes show both, then check that every create is counted exactly once.
        created = 0
        seen: dict[str, float] = {}
        for _ in range(10):
            with ThreadPoolExecutor(8) as pool:
                assert list(pool.map(create, range(created, created + 40))) == [201] * 40
            created += 40
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                scrape = web.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
                assert scrape.status_code == 200
                seen = requests_by_worker(scrape.text, "create")
                if sum(seen.values()) == created:
                    break
                time.sleep(0.5)
            if set(seen) == workers:
                break
        # Whichever worker answered, every worker's creates are there, each under its pid.
        assert set(seen) == workers and sum(seen.values()) == created, seen
        assert all(v > 0 for v in seen.values())
    finally:
        server.stop()
    assert not Path(shared).exists()  # the parent's directory goes with it


def test_sigterm_lets_a_request_in_flight_finish_before_the_server_exits(url: str) -> None:
    server = ServerProcess(url, env={"FHIR_SCHED_AUTH": "none",
                                     "FHIR_SCHED_LOG_LEVEL": "info"}).start()
    assert server.proc is not None
    body = json.dumps({"resourceType": "Patient", "name": [{"family": "Drained"}]}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/fhir+json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.proc.poll() is None  # still draining: the request is not done
        sock.sendall(body[10:])
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
    # uvicorn ends a clean shutdown by re-raising the signal it caught
    assert server.proc.wait(20) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log_with("Application shutdown complete")
    assert "Traceback" not in server.log()
    later = ServerProcess(url, port=free_port(), env={"FHIR_SCHED_AUTH": "none"}).start()
    try:
        got = web.get(f"{later.base}/Patient", params={"family": "Drained"}).json()
        assert got.get("total", len(got.get("entry", []))) == 1
    finally:
        later.stop()
