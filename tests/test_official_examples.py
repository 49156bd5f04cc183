"""The official R4 examples of the eleven hosted types go in and come back out unchanged.

The examples (hl7.fhir.r4.examples@4.0.1, pinned by tests/support/fhir_assets.py) were
written by HL7, not by us, so they are the fairest sample of what real clients send. They are
PUT with their own ids in dependency order, so that every relative reference to a hosted type
can resolve; a few reference hosted resources that no example provides, and our referential
rule (a relative reference to a hosted type must resolve) must reject exactly those, naming the
element.

The module runs its own server on a fresh store: the rejections below depend on ``Patient/5``
and friends *not* existing, which the shared session server cannot promise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from fhir_sched.resources import HOSTED_TYPES, is_hosted
from fhir_sched.resources.references import RELATIVE, iter_references
from fhir_sched.service.resources import SERVER_MADE
from tests.support import web
from tests.support.client import fhir_client
from tests.support.fhir_assets import SchemaValidator, example_resources
from tests.support.server import ServerProcess, cleanup_dir, store_url

Key = tuple[str, str]

# Examples that reference a hosted resource no example provides. Each must be refused with 422
# naming the first such element (document order). The reason says what is missing.
REJECTED: dict[Key, tuple[str, str]] = {
    ("Communication", "fm-attachment"): ("Communication.subject.reference",
                                         "Patient/1 is in no example"),
    ("Communication", "fm-solicited"): ("Communication.subject.reference",
                                        "Patient/1 is in no example"),
    ("Coverage", "7546D"): ("Coverage.subscriber.reference", "Patient/5 is in no example"),
    ("CoverageEligibilityRequest", "52345"): ("CoverageEligibilityRequest.insurance[0]."
                                              "coverage.reference", "Coverage/9876B1 is refused"),
    ("CoverageEligibilityRequest", "52346"): ("CoverageEligibilityRequest.insurance[0]."
                                              "coverage.reference", "Coverage/9876B1 is refused"),
    ("Endpoint", "direct-endpoint"): ("Endpoint.managingOrganization.reference",
                                      "Organization/299 is in no example"),
    ("Provenance", "consent-signature"): ("Provenance.agent[0].who.reference",
                                          "Patient/72 is in no example"),
    ("Coverage", "7547E"): ("Coverage.subscriber.reference", "Patient/5 is in no example"),
    ("Coverage", "9876B1"): ("Coverage.subscriber.reference", "Patient/4 is in no example"),
    ("Coverage", "SP1234"): ("Coverage.subscriber.reference", "Patient/5 is in no example"),
    ("Patient", "infant-mom"): ("Patient.generalPractitioner[0].reference",
                                "Practitioner/21B is in no example"),
    ("Schedule", "exampleloc1"): ("Schedule.actor[0].reference",
                                  "Practitioner/1 (and Location/3) are in no example"),
    ("Schedule", "exampleloc2"): ("Schedule.actor[0].reference",
                                  "Practitioner/1 is in no example"),
    ("ServiceRequest", "ambulation"): ("ServiceRequest.requester.reference",
                                       "Practitioner/3ad0687e-... is in no example"),
    ("ServiceRequest", "colon-biopsy"): ("ServiceRequest.requester.reference",
                                         "Practitioner/3ad0687e-... is in no example"),
    ("ServiceRequest", "colonoscopy"): ("ServiceRequest.requester.reference",
                                        "Practitioner/3ad0687e-... is in no example"),
    ("ServiceRequest", "example-implant"): ("ServiceRequest.requester.reference",
                                            "Practitioner/3ad0687e-... is in no example"),
    ("ServiceRequest", "example-pgx"): ("ServiceRequest.subject.reference",
                                        "Patient/899962 and Practitioner/12345 are in no example"),
    ("ServiceRequest", "vent"): ("ServiceRequest.requester.reference",
                                 "Practitioner/3ad0687e-... is in no example"),
}


# Examples the server refuses on purpose, with a 422 naming the element: R4's own Subscription
# example asks for a query criteria; this server takes Subscriptions Backport topics only.
NOT_HONOURED: dict[Key, str] = {("Subscription", "example"): "Subscription.criteria",
                                ("Subscription", "example-error"): "Subscription.criteria"}


def all_examples() -> dict[Key, dict[str, Any]]:
    """Every example keyed by (type, id). Ids can repeat across files of one type; the later
    file wins, exactly as two PUTs to one id would, so the comparison uses what was sent last."""
    found: dict[Key, dict[str, Any]] = {}
    for type_ in HOSTED_TYPES:
        if type_ in SERVER_MADE:
            continue  # only the server writes these (test_a_server_made_example_is_refused)
        for res in example_resources(type_):
            found[(type_, res["id"])] = res
    return found


def hosted_targets(key: Key, res: dict[str, Any]) -> set[Key]:
    """The hosted resources an example refers to by relative reference."""
    out: set[Key] = set()
    for _path, ref in iter_references(res, key[0]):
        m = RELATIVE.match(ref["reference"])
        if m and is_hosted(m[1]):
            out.add((m[1], m[2]))
    return out


def unresolvable(examples: dict[Key, dict[str, Any]]) -> set[Key]:
    """Examples that cannot be accepted: a missing target, or a target that is itself refused."""
    bad: set[Key] = set()
    changed = True
    while changed:
        changed = False
        for key, res in examples.items():
            if key not in bad and any(t not in examples or t in bad
                                      for t in hosted_targets(key, res)):
                bad.add(key)
                changed = True
    return bad


def load_order(examples: dict[Key, dict[str, Any]]) -> list[list[Key]]:
    """Groups to load, dependencies first (Tarjan's strongly connected components come out in
    reverse topological order). A group of several is a reference cycle (Patient pat1 and pat2
    link to each other) and has to go in one transaction."""
    index: dict[Key, int] = {}
    low: dict[Key, int] = {}
    stack: list[Key] = []
    on_stack: set[Key] = set()
    groups: list[list[Key]] = []

    def visit(k: Key) -> None:
        index[k] = low[k] = len(index)
        stack.append(k)
        on_stack.add(k)
        for t in sorted(hosted_targets(k, examples[k]) & examples.keys()):
            if t not in index:
                visit(t)
                low[k] = min(low[k], low[t])
            elif t in on_stack:
                low[k] = min(low[k], index[t])
        if low[k] == index[k]:
            group = []
            while True:
                t = stack.pop()
                on_stack.discard(t)
                group.append(t)
                if t == k:
                    break
            groups.append(sorted(group))

    for k in sorted(examples):
        if k not in index:
            visit(k)
    return groups


def without_meta(res: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in res.items() if k != "meta"}


@pytest.fixture(scope="module")
def examples_server(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_examples")
    proc = ServerProcess(url).start()
    yield proc
    proc.stop()
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@pytest.fixture(scope="module")
async def loaded(examples_server: ServerProcess, fhir_schema: SchemaValidator
                 ) -> AsyncIterator[tuple[httpx.AsyncClient, dict[Key, dict[str, Any]]]]:
    """The acceptable examples, loaded once for the module; each PUT must answer 201."""
    examples = all_examples()
    bad = unresolvable(examples) | set(NOT_HONOURED)
    async with fhir_client(examples_server.base, fhir_schema) as client:
        for group in load_order({k: v for k, v in examples.items() if k not in bad}):
            if len(group) == 1:
                (type_, id_), = group
                r = await client.put(f"/{type_}/{id_}", json=examples[(type_, id_)])
                assert r.status_code == 201, f"{type_}/{id_}: {r.status_code} {r.text}"
                continue
            tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": examples[k], "request": {"method": "PUT", "url": f"{k[0]}/{k[1]}"}}
                for k in group]}
            r = await client.post("/", json=tx)
            assert r.status_code == 200, f"cycle {group}: {r.status_code} {r.text}"
            assert [e["response"]["status"] for e in r.json()["entry"]] == ["201 Created"] * len(
                group)
        yield client, {k: v for k, v in examples.items() if k not in bad}


def test_every_hosted_type_has_official_examples() -> None:
    examples = all_examples()
    assert {t for t, _ in examples} == set(HOSTED_TYPES) - set(SERVER_MADE)
    assert all(example_resources(t) for t in SERVER_MADE)


async def test_examples_the_server_does_not_honour_are_refused_naming_the_element(
        loaded: tuple[httpx.AsyncClient, dict[Key, dict[str, Any]]]) -> None:
    client, _ = loaded
    examples = all_examples()
    for (type_, id_), element in NOT_HONOURED.items():
        r = await client.put(f"/{type_}/{id_}", json=examples[(type_, id_)])
        assert r.status_code == 422, r.text
        assert element in r.json()["issue"][0]["expression"], r.text


def test_rejection_table_lists_exactly_the_unresolvable_examples() -> None:
    assert unresolvable(all_examples()) == set(REJECTED)


def test_reference_cycle_among_examples_is_found() -> None:
    groups = load_order(all_examples())
    assert [("Patient", "pat1"), ("Patient", "pat2")] in groups


async def test_official_examples_read_back_equal_apart_from_meta(
        loaded: tuple[httpx.AsyncClient, dict[Key, dict[str, Any]]]) -> None:
    client, examples = loaded
    assert len(examples) > 70
    for (type_, id_), sent in examples.items():
        r = await client.get(f"/{type_}/{id_}")
        assert r.status_code == 200, f"{type_}/{id_}"
        got = r.json()
        assert without_meta(got) == without_meta(sent), f"{type_}/{id_} changed on the way"
        assert got["meta"]["versionId"] == "1"
        for key in ("tag", "security", "profile"):  # client meta survives beside ours
            assert got["meta"].get(key) == (sent.get("meta") or {}).get(key), f"{type_}/{id_}"


async def test_references_to_types_not_hosted_are_kept_as_given(
        loaded: tuple[httpx.AsyncClient, dict[Key, dict[str, Any]]]) -> None:
    client, examples = loaded
    kept = 0
    for (type_, id_), sent in examples.items():
        foreign = [ref["reference"] for _p, ref in iter_references(sent, type_)
                   if not ref["reference"].startswith("#")
                   and not ((m := RELATIVE.match(ref["reference"])) and is_hosted(m[1]))]
        if not foreign:
            continue
        got = (await client.get(f"/{type_}/{id_}")).json()
        got_refs = [ref["reference"] for _p, ref in iter_references(got, type_)]
        for value in foreign:
            assert value in got_refs
            kept += 1
    assert kept >= 10  # Encounter, Condition, Endpoint, absolute URLs... in the examples


@pytest.mark.parametrize("key", sorted(REJECTED), ids=lambda k: f"{k[0]}-{k[1]}")
async def test_example_with_unresolvable_reference_is_rejected_naming_the_element(
        loaded: tuple[httpx.AsyncClient, dict[Key, dict[str, Any]]], key: Key) -> None:
    client, _ = loaded
    type_, id_ = key
    element, _reason = REJECTED[key]
    res = all_examples()[key]
    r = await client.put(f"/{type_}/{id_}", json=res)
    assert r.status_code == 422, r.text
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert element in oo["issue"][0]["expression"]
    assert (await client.get(f"/{type_}/{id_}")).status_code == 404


async def test_a_server_made_example_is_refused(examples_server: ServerProcess) -> None:
    """The official CoverageEligibilityResponse examples are valid, but an eligibility answer
    is the server's to make: a client's PUT of one is 405, naming how one comes to be."""
    [example, *_] = [r for r in example_resources("CoverageEligibilityResponse")
                     if r["id"] == "E2502"]
    r = web.put(f"{examples_server.base}/CoverageEligibilityResponse/E2502", json=example)
    assert r.status_code == 405, r.text
    assert "$submit" in r.json()["issue"][0]["diagnostics"]
