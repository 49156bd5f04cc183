"""``/openapi.json`` (OpenAPI 3.1, derived from the CapabilityStatement) and a third-party
check of the whole API against it: Schemathesis generates requests for every operation it
lists and the run must end with no 5xx and no response outside its documented schema, on a
real server process for both adapters."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import web
from tests.support.server import ServerProcess, served


@pytest.fixture(scope="module")
def server(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    with served(store_kind, mongo_uri, "fhir_sched_openapi", {"FHIR_SCHED_AUTH": "none"}) as proc:
        yield proc


def root(server: ServerProcess) -> str:
    return server.base.removesuffix("/fhir")


def test_the_openapi_document_lists_what_the_capability_statement_does(
        server: ServerProcess) -> None:
    doc = web.get(f"{root(server)}/openapi.json").json()
    assert doc["openapi"] == "3.1.0" and doc["servers"][0]["url"] == server.base
    rest = web.get(f"{server.base}/metadata").json()["rest"][0]
    for entry in rest["resource"]:
        kinds = {i["code"] for i in entry["interaction"]}
        if "read" in kinds:
            assert "get" in doc["paths"][f"/{entry['type']}/{{id}}"], entry["type"]
        if "search-type" in kinds:
            names = {p["name"] for p in doc["paths"][f"/{entry['type']}"]["get"]["parameters"]}
            assert {p["name"] for p in entry.get("searchParam", [])} <= names
    assert "/Appointment/$find" in doc["paths"] and "/$export" in doc["paths"]


def test_the_docs_page_lists_the_paths_without_fetching_anything(
        server: ServerProcess) -> None:
    page = web.get(f"{root(server)}/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/Appointment/$find" in page.text and "<script" not in page.text


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
        server: ServerProcess, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    run = subprocess.run(
        [st, "run", f"{root(server)}/openapi.json", "--checks",
         "not_a_server_error,response_schema_conformance", "--max-examples", "5",
         "--workers", "1", "--seed", "1", "--phases", "coverage,fuzzing",
         "--request-timeout", "30"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
    tail = run.stdout[-4000:]
    assert run.returncode == 0, tail
    cases = re.search(r"(\d+) generated, (\d+) passed", tail)
    assert cases is not None, tail
    assert int(cases[1]) >= 500 and cases[1] == cases[2], tail  # every operation exercised
