"""The CapabilityStatement claims exactly what the server routes: no more, no less.

The expected claims are derived here from the app's routing table by the FHIR RESTful API's own
rules (``PUT [type]/[id]`` is ``update``, ``GET [type]/[id]/_history`` is ``history-instance``,
``[type]/$op`` is a type-level operation...), independently of the route metadata the server uses
to build its statement. So a route added without a declaration, or a declaration without a route,
fails here. A second test sends each declared interaction to the live server and requires that
something answers it.
"""

from __future__ import annotations

import tempfile
import uuid
from collections import defaultdict
from typing import Any

import httpx
import pytest

from fhir_sched.app import create_app
from fhir_sched.resources import HOSTED_TYPES
from fhir_sched.rest.conformance import CONFORMANCE_TYPES
from fhir_sched.rest.router import RouteEntry
from fhir_sched.settings import Settings
from tests.support.server import cleanup_dir, sqlite_url

BASE = "/fhir"
# Types routed by a literal segment, read and search only: the conformance definitions and the
# audit trail (AuditEvent, written by the server alone)
READ_ONLY = (*CONFORMANCE_TYPES, "AuditEvent")
# Routes that are not part of the FHIR API, with the reason they are not in the statement.
NOT_FHIR = {"/fhir/openapi.json": "the OpenAPI document for tooling, not a FHIR interaction"}

Claims = dict[str, Any]


def rest_interactions(method: str, segs: list[str]) -> tuple[str, set[str]]:
    """(level, interaction codes) for a RESTful route, per the FHIR R4 http page."""
    shape = ["T" if s == "{type}" else "*" if s.startswith("{") else s for s in segs]
    table: dict[tuple[str, tuple[str, ...]], tuple[str, set[str]]] = {
        ("POST", ()): ("system", {"batch", "transaction"}),
        ("GET", ("_history",)): ("system", {"history-system"}),
        ("GET", ("metadata",)): ("system", set()),  # capabilities: the statement itself
        ("GET", ("T",)): ("type", {"search-type"}),
        ("POST", ("T",)): ("type", {"create"}),
        ("PUT", ("T",)): ("type", {"update"}),  # conditional update
        ("DELETE", ("T",)): ("type", {"delete"}),  # conditional delete
        ("POST", ("T", "_search")): ("type", {"search-type"}),
        ("GET", ("T", "_history")): ("type", {"history-type"}),
        ("GET", ("T", "*")): ("type", {"read"}),
        ("PUT", ("T", "*")): ("type", {"update"}),
        ("PATCH", ("T", "*")): ("type", {"patch"}),
        ("DELETE", ("T", "*")): ("type", {"delete"}),
        ("GET", ("T", "*", "_history")): ("type", {"history-instance"}),
        ("GET", ("T", "*", "_history", "*")): ("type", {"vread"}),
    }
    if method == "GET" and len(shape) == 3 and shape[0] == "Patient" and shape[2] in HOSTED_TYPES:
        # Patient compartment: a search of that type, confined to one patient
        return "type", {"search-type"}
    key = (method, tuple(shape))
    assert key in table, f"route {method} /{'/'.join(segs)} is no FHIR interaction we know"
    return table[key]


def expected_claims(app_routes: list[Any]) -> Claims:
    """What the statement must say, from the routing table alone."""
    per_type: dict[str, set[str]] = defaultdict(set)
    ops: dict[str, set[str]] = defaultdict(set)  # type (or "system") -> operation names
    system: set[str] = set()
    for route in app_routes:
        if route.path in NOT_FHIR:
            continue
        assert isinstance(route, RouteEntry)
        assert route.path.startswith(BASE)
        segs = [s for s in route.path[len(BASE):].split("/") if s]
        for method in route.methods or ():
            if method == "HEAD":
                continue
            op = [s for s in segs if s.startswith("$")]
            if op:
                owner = segs[0] if len(segs) > 1 else "system"
                targets = HOSTED_TYPES if owner == "{type}" else (owner,)
                for t in targets:
                    ops[t].add(op[0][1:])
                continue
            # a literal type segment (the read-only conformance types) routes that type only
            fixed = segs[0] if segs and segs[0] in READ_ONLY else None
            level, codes = rest_interactions(method, ["{type}", *segs[1:]] if fixed else segs)
            if level == "system":
                system |= codes
            else:
                for t in (fixed,) if fixed else HOSTED_TYPES:
                    per_type[t] |= codes
    return {"types": dict(per_type), "system": system, "ops": dict(ops)}


def declared_claims(cs: dict[str, Any]) -> Claims:
    rest = cs["rest"][0]
    types = {r["type"]: {i["code"] for i in r.get("interaction", [])} for r in rest["resource"]}
    ops: dict[str, set[str]] = {r["type"]: {o["name"] for o in r["operation"]}
                                for r in rest["resource"] if r.get("operation")}
    if rest.get("operation"):
        ops["system"] = {o["name"] for o in rest["operation"]}
    return {"types": types, "system": {i["code"] for i in rest.get("interaction", [])},
            "ops": ops}


@pytest.fixture(scope="module")
def app_routes() -> list[Any]:
    directory = tempfile.mkdtemp(prefix="fhir-sched-cap-")
    try:
        app = create_app(Settings(store=sqlite_url(directory)))
        return list(app.state.fhir_router.routes)
    finally:
        cleanup_dir(directory)


async def test_statement_declares_exactly_the_routed_interactions(
        fhir: httpx.AsyncClient, app_routes: list[Any]) -> None:
    cs = (await fhir.get("/metadata")).json()
    expected, declared = expected_claims(app_routes), declared_claims(cs)
    assert declared["types"] == expected["types"]
    assert declared["system"] == expected["system"]


async def test_statement_declares_exactly_the_routed_operations(
        fhir: httpx.AsyncClient, app_routes: list[Any]) -> None:
    cs = (await fhir.get("/metadata")).json()
    assert declared_claims(cs)["ops"] == expected_claims(app_routes)["ops"]


async def test_every_declared_operation_names_a_definition(fhir: httpx.AsyncClient) -> None:
    rest = (await fhir.get("/metadata")).json()["rest"][0]
    ops = [o for r in rest["resource"] for o in r.get("operation", [])] + rest.get(
        "operation", [])
    assert all(o["definition"].startswith("http") for o in ops)


async def test_statement_lists_every_hosted_type_once(fhir: httpx.AsyncClient) -> None:
    cs = (await fhir.get("/metadata")).json()
    types = [r["type"] for r in cs["rest"][0]["resource"]]
    assert sorted(types) == sorted((*HOSTED_TYPES, *READ_ONLY))
    assert set(cs["format"]) == {"json", "application/fhir+json", "xml", "application/fhir+xml"}
    assert cs["fhirVersion"] == "4.0.1"


async def test_conditional_flags_match_the_conditional_routes(
        fhir: httpx.AsyncClient, app_routes: list[Any]) -> None:
    routed = {(m, r.path) for r in app_routes if r.path not in NOT_FHIR for m in r.methods}
    for r in (await fhir.get("/metadata")).json()["rest"][0]["resource"]:
        if r["type"] in READ_ONLY:  # read-only: no conditional writes at all
            assert (r["conditionalUpdate"], r["conditionalDelete"]) == (False, "not-supported")
            continue
        assert r["conditionalUpdate"] is (("PUT", f"{BASE}/{{type}}") in routed)
        assert (r["conditionalDelete"] != "not-supported") is (
            ("DELETE", f"{BASE}/{{type}}") in routed)


REQUESTS = {
    "read": ("GET", "/{t}/{id}"), "vread": ("GET", "/{t}/{id}/_history/1"),
    "update": ("PUT", "/{t}/{id}"), "patch": ("PATCH", "/{t}/{id}"),
    "delete": ("DELETE", "/{t}/{id}"), "history-instance": ("GET", "/{t}/{id}/_history"),
    "history-type": ("GET", "/{t}/_history"), "create": ("POST", "/{t}"),
    "search-type": ("GET", "/{t}"),
}


async def test_every_declared_interaction_is_answered_by_the_server(
        fhir: httpx.AsyncClient) -> None:
    """The reverse direction, over the wire: nothing declared may meet "no such endpoint" (the
    router's 404 or a 405). Requests carry no valid body, so 4xx from the handler is fine."""
    rest = (await fhir.get("/metadata")).json()["rest"][0]
    for res in rest["resource"]:
        for code in (i["code"] for i in res["interaction"]):
            method, path = REQUESTS[code]
            url = path.format(t=res["type"], id=uuid.uuid4().hex)
            r = await fhir.request(method, url, content=b"{}",
                                   headers={"content-type": "application/fhir+json"}
                                   if method != "PATCH" else
                                   {"content-type": "application/json-patch+json"})
            assert r.status_code != 405, f"{code} {method} {url}"
            assert "no FHIR endpoint" not in r.text, f"{code} {method} {url}"
            assert r.status_code < 500, f"{code} {method} {url}: {r.text[:200]}"
