"""Shared fixtures: every integration test talks to a real uvicorn process over a socket.

``store_kind`` parametrises the server over the storage adapters (SQLite always; MongoDB
when the adapter and a server are available), so one suite covers both.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.client import fhir_client
from tests.support.server import ServerProcess, cleanup_dir, store_url

pytest_plugins = ["tests.support.fhir_assets", "tests.support.mongo_fixture"]

# Everything but the SMART tests checks FHIR behaviour, so the servers the suite starts (and the
# Settings it builds from the environment) run with auth off unless a test turns it on: the
# SMART tests start theirs with FHIR_SCHED_AUTH=smart, and one starts a server with no setting
# at all to prove that smart is the default.
os.environ.setdefault("FHIR_SCHED_AUTH", "none")


@pytest.fixture(scope="session")
def server(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_suite")
    proc = ServerProcess(url).start()
    yield proc
    proc.stop()
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@pytest.fixture
async def fhir(server: ServerProcess, fhir_schema: object) -> AsyncIterator[httpx.AsyncClient]:
    async with fhir_client(server.base, fhir_schema) as client:
        yield client
