"""Shared fixtures: every integration test talks to a real uvicorn process over a socket.

``store_kind`` parametrises the server over the storage adapters (SQLite always; MongoDB
when the adapter and a server are available), so one suite covers both.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.client import fhir_client
from tests.support.server import ServerProcess, cleanup_dir, sqlite_url

pytest_plugins = ["tests.fhir_assets", "tests.support.mongo_fixture"]


def new_store_url(kind: str, mongo_uri: str | None, name: str) -> str:
    if kind == "sqlite":
        return sqlite_url(tempfile.mkdtemp(prefix="fhir-sched-"))
    assert mongo_uri is not None
    base = mongo_uri.rstrip("/").split("?")[0]
    if base.count("/") > 2:
        base = base.rsplit("/", 1)[0]
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def server(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    url = new_store_url(store_kind, mongo_uri, "fhir_sched_suite")
    proc = ServerProcess(url).start()
    yield proc
    proc.stop()
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@pytest.fixture
async def fhir(server: ServerProcess, fhir_schema: object) -> AsyncIterator[httpx.AsyncClient]:
    async with fhir_client(server.base, fhir_schema) as client:
        yield client
