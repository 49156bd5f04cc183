"""Liveness and readiness without a token: ``/healthz`` answers from the process alone,
``/readyz`` checks startup, the store and the MLLP listener, turns 503 while the database is
down (the process stays live) and 200 again once it is back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support import web
from tests.support.mongo_fixture import SecantusServer
from tests.support.server import ServerProcess, cleanup_dir, free_port, store_url


@pytest.fixture(scope="module")
def server(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_health")
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart",
                                   "FHIR_SCHED_MLLP_PORT": str(free_port())}).start()
    yield proc
    proc.stop()
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def root(server: ServerProcess) -> str:
    return server.base.removesuffix("/fhir")


def test_healthz_answers_without_a_token(server: ServerProcess) -> None:
    response = web.get(f"{root(server)}/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_readyz_checks_startup_the_store_and_the_mllp_listener(server: ServerProcess) -> None:
    response = web.get(f"{root(server)}/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready",
                               "checks": {"started": True, "store": True, "mllp": True}}


def test_the_fhir_base_still_needs_a_token_beside_them(server: ServerProcess) -> None:
    assert web.get(f"{server.base}/Patient").status_code == 401


def test_readyz_is_503_while_the_database_is_down_and_200_once_it_is_back() -> None:
    database = SecantusServer().start()
    proc = ServerProcess(f"{database.uri}/health_outage", env={"FHIR_SCHED_AUTH": "none"}
                         ).start()
    try:
        assert web.get(f"{root(proc)}/readyz").status_code == 200
        database.stop()
        started = time.monotonic()
        down = web.get(f"{root(proc)}/readyz", timeout=30)
        assert down.status_code == 503, down.text
        assert down.json()["checks"]["store"] is False
        assert time.monotonic() - started < 10  # the ping is bounded, not the driver's 30 s
        assert web.get(f"{root(proc)}/healthz").status_code == 200  # live: do not restart
        database.start()
        deadline = time.monotonic() + 30
        while web.get(f"{root(proc)}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "readyz did not recover"
            time.sleep(0.5)
    finally:
        proc.stop()
        database.cleanup()
