"""Which stores the suite runs against, and a real MongoDB-wire server when MongoDB is one.

SQLite always. MongoDB once the adapter exists: against ``MONGODB_URI`` when set (a real
``mongod`` replica set), otherwise against a SecantusDB process this fixture starts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest


def _store_kinds() -> list[str]:
    kinds = ["sqlite"]
    if importlib.util.find_spec("fhir_sched.storage.mongo") is not None:
        kinds.append("mongo")
    return kinds


STORE_KINDS = _store_kinds()


@pytest.fixture(scope="session", params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def mongo_uri(store_kind: str) -> Iterator[str | None]:
    yield None
