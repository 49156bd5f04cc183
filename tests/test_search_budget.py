"""A search that runs past its time budget (``FHIR_SCHED_SEARCH_MAX_MS``) is stopped in the
database and answered 400 ``too-costly`` with an OperationOutcome, and the server goes on
serving: against a real server process on both adapters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import web
from tests.support.server import ServerProcess, cleanup_dir, store_url


@pytest.fixture(scope="module")
def server(store_kind: str, mongo_uri: str | None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_budget")
    n = 3000 if url.startswith("sqlite") else 200
    data = Path(tmp_path_factory.mktemp("budget")) / "Patient.ndjson"
    data.write_text("".join(json.dumps({
        "resourceType": "Patient", "id": f"b{i}",
        "name": [{"family": f"Family{i % 97}", "given": [f"Given{i}"]}]}) + "\n"
        for i in range(n)))
    loaded = subprocess.run([sys.executable, "-m", "fhir_sched.cli", "import", str(data),
                             "--store", url], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "FHIR_SCHED_LOG_LEVEL": "warning"})
    assert loaded.returncode == 0, loaded.stderr
    # one millisecond: every search over these patients runs longer than that
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "none",
                                   "FHIR_SCHED_SEARCH_MAX_MS": "1"}).start()
    yield proc
    proc.stop()
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def test_a_search_past_its_budget_is_a_400_too_costly(server: ServerProcess) -> None:
    response = web.get(f"{server.base}/Patient", params={
        "name:contains": "amily", "_sort": "-family,given", "_total": "accurate",
        "_count": "1000"})
    assert response.status_code == 400, response.text[:300]
    issue = response.json()["issue"][0]
    assert issue["code"] == "too-costly"
    assert "FHIR_SCHED_SEARCH_MAX_MS" in issue["diagnostics"]


def test_the_server_keeps_serving_after_a_search_is_stopped(server: ServerProcess) -> None:
    for _ in range(3):
        web.get(f"{server.base}/Patient", params={"name:contains": "amily",
                                                   "_sort": "family"})
    read = web.get(f"{server.base}/Patient/b7")
    assert read.status_code == 200 and read.json()["id"] == "b7"
    assert web.get(f"{server.base}/metadata").status_code == 200
