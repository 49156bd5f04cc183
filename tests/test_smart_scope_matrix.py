"""The scope matrix: every hosted type x every interaction x a spread of SMART scopes, on a real
server with auth on, on both stores, with zero leaks.

Each cell's expectation comes from an oracle written here from the SMART App Launch 2.2 text
(scopes-and-launch-context.md), not from the server's policy code: the letter an interaction
needs (c create; r read, vread, instance history; u update, patch; d delete; s search, type
history), the scope's type (or ``*``), and for ``patient/`` scopes the token patient's
compartment (R4 CompartmentDefinition ``patient``; outside it, reads only). A search must not
return a single resource the same token could not read.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from fhir_sched.service.authorization import PUBLIC_TYPES
from tests.support import web
from tests.support.fhir_assets import HOSTED_TYPES, r4_examples_dir
from tests.support.launch import REDIRECT, Browser, add_user, pkce
from tests.support.server import ServerProcess, cleanup_dir, store_url
from tests.support.smart import BackendClient, get_token, register, register_backend

PASSWORD = "matrix password 1"
# R4 CompartmentDefinition "patient", for the hosted types (checked against the official file
# below): the parameters that put a resource in a patient's compartment
# Outside the compartment, but read by a patient's scope only when about that patient: a
# Subscription filtered Appointment?patient= them.
CONFINED = {"Subscription"}
COMPARTMENT = {"Appointment", "AppointmentResponse", "Communication", "CommunicationRequest",
               "Coverage", "CoverageEligibilityRequest",
               "CoverageEligibilityResponse", "Patient", "Provenance", "Schedule",
               "ServiceRequest"}
# Written by the server only (the eligibility checker's answers): every write is refused,
# whatever the scopes (403 for want of them, else 405).
SERVER_MADE = {"CoverageEligibilityResponse"}
LETTER = {"read": "r", "vread": "r", "history-instance": "r", "search": "s",
          "history-type": "s", "create": "c", "update": "u", "patch": "u", "delete": "d"}
ADMIN = BackendClient.new("matrix-admin", "ES384")
SYSTEM_READER = BackendClient.new("matrix-system-reader", "ES384")
SYSTEM_TYPED = BackendClient.new("matrix-system-typed", "ES384")


@dataclass(frozen=True)
class Scope:
    level: str
    type: str
    letters: str
    where: tuple[str, str] | None = None  # (param, value): only status= is used here

    @classmethod
    def parse(cls, text: str) -> Scope:
        head, _, query = text.partition("?")
        level, _, rest = head.partition("/")
        type_, _, letters = rest.partition(".")
        letters = {"read": "rs", "write": "cud", "*": "cruds"}.get(letters, letters)
        where = tuple(query.split("=", 1)) if query else None
        return cls(level, type_, letters, where)  # type: ignore[arg-type]


@dataclass
class Target:
    """A resource a request is about: its id, whether it is in the token patient's
    compartment, and its status (for granular scopes)."""

    id: str
    own: bool
    status: str | None = None


def oracle(scopes: list[Scope], type_: str, interaction: str, target: Target | None) -> bool:
    letter = LETTER[interaction]
    for s in scopes:
        if s.type not in ("*", type_) or letter not in s.letters:
            continue
        if s.where is not None and target is not None and s.where != ("status",
                                                                      target.status):
            continue
        if s.level != "patient":
            return True
        if type_ in COMPARTMENT:
            if target is None or target.own:
                return True
        elif type_ in CONFINED:
            if letter in "rs" and (target is None or target.own):
                return True
        elif letter in "rs":
            return True
    return False


@dataclass
class World:
    server: ServerProcess
    admin: dict[str, str]
    alice: str
    bob: str
    org: str
    practitioner: str
    schedule: str
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def body(self, type_: str, own: bool) -> dict[str, Any]:
        """A minimal valid resource of ``type_``; for compartment types, in Alice's
        compartment when ``own`` else in Bob's."""
        patient = self.alice if own else self.bob
        n = next(self.counter)
        ref = {"reference": patient}
        if type_ == "AppointmentResponse":  # an answer to an appointment that exists
            appointment = self.create("Appointment", own)
            return {"resourceType": type_, "participantStatus": "accepted", "actor": ref,
                    "appointment": {"reference": f"Appointment/{appointment.id}"}}
        bodies: dict[str, dict[str, Any]] = {
            "Appointment": {"status": "proposed", "participant": [
                {"actor": ref, "status": "needs-action"}], "requestedPeriod": [
                {"start": "2032-01-01T09:00:00Z", "end": "2032-01-01T10:00:00Z"}]},
            "Communication": {"status": "completed", "subject": ref},
            "CommunicationRequest": {"status": "active", "subject": ref},
            "Subscription": {"status": "requested", "reason": "matrix",
                             "criteria": "https://fhir-sched.org/fhir/SubscriptionTopic/"
                                         "appointment-booked",
                             "_criteria": {"extension": [{
                                 "url": "http://hl7.org/fhir/uv/subscriptions-backport/"
                                        "StructureDefinition/backport-filter-criteria",
                                 "valueString": f"Appointment?patient={patient}"}]},
                             "channel": {"type": "rest-hook",
                                         "endpoint": "https://receiver.invalid/hook"}},
            "Coverage": {"status": "active", "beneficiary": ref,
                         "payor": [{"reference": self.org}]},
            "CoverageEligibilityRequest": {"status": "active", "purpose": ["validation"],
                                           "patient": ref, "created": "2031-01-01",
                                           "insurer": {"reference": self.org}},
            "CoverageEligibilityResponse": {
                "status": "active", "purpose": ["validation"], "patient": ref,
                "created": "2031-01-01", "outcome": "complete",
                "request": {"reference": "CoverageEligibilityRequest/x"},
                "insurer": {"reference": self.org}},
            "Patient": {"name": [{"family": f"Matrix{n}"}]},
            "Provenance": {"target": [ref], "recorded": "2031-01-01T00:00:00Z",
                           "agent": [{"who": {"reference": self.practitioner}}]},
            "Schedule": {"actor": [ref]},
            "ServiceRequest": {"status": "active", "intent": "order", "subject": ref},
            "Slot": {"schedule": {"reference": self.schedule}, "status": "free",
                     "start": f"2033-01-01T{n % 24:02d}:{(n // 24) % 60:02d}:00Z",
                     "end": f"2033-01-01T{n % 24:02d}:{(n // 24) % 60:02d}:30Z"},
            "Practitioner": {"name": [{"family": f"Doc{n}"}]},
            "PractitionerRole": {"practitioner": {"reference": self.practitioner}},
            "Location": {"name": f"Room {n}"},
            "HealthcareService": {"name": f"Service {n}"},
            "Organization": {"name": f"Org {n}"},
            "Endpoint": {"status": "active", "connectionType": {
                "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                "code": "hl7-fhir-rest"}, "payloadType": [{"text": "any"}],
                "address": f"https://example.org/fhir/{n}"},
        }
        return {"resourceType": type_, **bodies[type_]}

    def create(self, type_: str, own: bool) -> Target:
        """A fresh resource made by the admin; for Patient, ``own`` means Alice herself."""
        if type_ == "Patient" and own:
            return Target(self.alice.split("/")[1], True)
        if type_ in SERVER_MADE:  # an eligibility answer: asked for by $submit
            plan = self.create("Coverage", own)
            ask = {**self.body("CoverageEligibilityRequest", own), "insurance": [
                {"coverage": {"reference": f"Coverage/{plan.id}"}}]}
            r = web.post(f"{self.server.base}/CoverageEligibilityRequest/$submit", json=ask,
                         headers=self.admin)
            assert r.status_code == 200, r.text
            return Target(str(r.json()["id"]), own, r.json().get("status"))
        body = self.body(type_, own)
        r = web.post(f"{self.server.base}/{type_}", json=body, headers=self.admin)
        assert r.status_code == 201, (type_, r.text)
        return Target(str(r.json()["id"]), own or type_ not in COMPARTMENT | CONFINED,
                      r.json().get("status"))


def _token(world: World, who: str, scope: str) -> str:
    if who == "system":
        client = {"system/*.rs": SYSTEM_READER}.get(scope, SYSTEM_TYPED)
        return get_token(world.server.base, client, scope)
    verifier, challenge = pkce()
    b = Browser(world.server.base.removesuffix("/fhir"), world.server.base)
    user = "alice" if who == "patient" else "dr-matrix"
    code = b.code("matrix-app", scope, challenge, user, PASSWORD)
    response = b.exchange("matrix-app", code, verifier)
    assert response.status_code == 200, response.text
    granted = set(response.json()["scope"].split())
    assert granted == set(scope.split()), (scope, granted)
    return str(response.json()["access_token"])


@pytest.fixture(scope="module")
def world(store_kind: str, mongo_uri: str | None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_matrix")
    keys = tmp_path_factory.mktemp("matrix")
    for client, scope in ((ADMIN, "system/*.cruds"), (SYSTEM_READER, "system/*.rs"),
                          (SYSTEM_TYPED, "system/Appointment.cruds system/Patient.rs")):
        register_backend(url, client, scope, keys)
    assert register(url, "matrix-app", "launch/patient patient/*.cruds user/*.cruds "
                    "patient/Appointment.rs?status=waitlist", "--redirect-uri", REDIRECT,
                    "--public").returncode == 0
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart"}).start()
    try:
        admin = {"authorization": f"Bearer {get_token(proc.base, ADMIN, 'system/*.cruds')}"}

        def make(body: dict[str, Any]) -> str:
            r = web.post(f"{proc.base}/{body['resourceType']}", json=body, headers=admin)
            assert r.status_code == 201, r.text
            return f"{body['resourceType']}/{r.json()['id']}"

        alice = make({"resourceType": "Patient", "name": [{"family": "Matrix-Alice"}]})
        bob = make({"resourceType": "Patient", "name": [{"family": "Matrix-Bob"}]})
        org = make({"resourceType": "Organization", "name": "Payer"})
        prac = make({"resourceType": "Practitioner", "name": [{"family": "Matrix"}]})
        sched = make({"resourceType": "Schedule", "actor": [{"reference": prac}]})
        add_user(url, "alice", PASSWORD, alice)
        add_user(url, "dr-matrix", PASSWORD, prac)
        yield World(proc, admin, alice, bob, org, prac, sched)
    finally:
        proc.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


# (who logs in, scopes): patient-level for Alice, user-level for a practitioner, system-level
# for backend clients
GRANTS = [
    ("patient", "launch/patient patient/*.read"),
    ("patient", "launch/patient patient/*.rs"),
    ("patient", "launch/patient patient/*.cruds"),
    ("patient", "launch/patient patient/Appointment.rs?status=waitlist"),
    ("practitioner", "user/*.read"),
    ("practitioner", "user/*.cruds"),
    ("system", "system/*.rs"),
    ("system", "system/Appointment.cruds system/Patient.rs"),
]


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle.get("entry", []) if "resource" in e}


def test_every_type_and_interaction_is_decided_by_the_scopes(world: World) -> None:
    failures: list[str] = []
    for who, scope in GRANTS:
        failures += [f"[{scope}] {f}" for f in _cells(world, who, scope)]
    assert not failures, f"{len(failures)} cells wrong:\n" + "\n".join(failures)


def _cells(world: World, who: str, scope: str) -> list[str]:
    """The cells one grant gets wrong (empty when every one is right)."""
    token = _token(world, who, scope)
    h = {"authorization": f"Bearer {token}"}
    scopes = [Scope.parse(s) for s in scope.split() if "/" in s and not s.startswith("launch")]
    base = world.server.base
    failures: list[str] = []

    def expect(label: str, allowed: bool, response: httpx.Response) -> None:
        ok = 200 <= response.status_code < 300
        if label.split()[0] in ("create", "update", "patch", "delete") and (
                label.split()[1] in SERVER_MADE):
            if allowed and response.status_code == 405:
                return  # the scopes allow it; the type does not
            allowed = False
        if allowed != ok or (not allowed and response.status_code != 403):
            failures.append(f"{label}: expected {'2xx' if allowed else '403'}, got "
                            f"{response.status_code} {response.text[:160]}")

    for type_ in HOSTED_TYPES:
        own, other = world.create(type_, True), world.create(type_, False)
        for target, tag in ((own, "own"), (other, "other")):
            url = f"{base}/{type_}/{target.id}"
            expect(f"read {type_} {tag}", oracle(scopes, type_, "read", target),
                   web.get(url, headers=h))
            expect(f"vread {type_} {tag}", oracle(scopes, type_, "vread", target),
                   web.get(f"{url}/_history/1", headers=h))
            expect(f"history {type_} {tag}", oracle(scopes, type_, "history-instance", target),
                   web.get(f"{url}/_history", headers=h))
        # search and type history: allowed by the letter alone, and never a leak
        for label, path in (("search", f"/{type_}"), ("history-type", f"/{type_}/_history")):
            response = web.get(f"{base}{path}", params={"_count": 1000}, headers=h)
            expect(f"{label} {type_}", oracle(scopes, type_, label, None), response)
            if response.status_code == 200:
                seen = _ids(response.json())
                if f"{type_}/{other.id}" in seen and not oracle(scopes, type_, "read", other):
                    failures.append(f"{label} {type_}: leaked {type_}/{other.id}")
                if f"{type_}/{own.id}" in seen and not oracle(scopes, type_, "read", own):
                    failures.append(f"{label} {type_}: leaked {type_}/{own.id}")
        # writes, each on a fresh resource made for it
        new_own = world.body(type_, True)
        create_target = Target("new", (type_ in COMPARTMENT and type_ != "Patient") or
                               type_ not in COMPARTMENT, new_own.get("status"))
        expect(f"create {type_}", oracle(scopes, type_, "create", create_target),
               web.post(f"{base}/{type_}", json=new_own, headers=h))
        for tag, is_own in (("own", True), ("other", False)):
            for interaction in ("update", "patch", "delete"):
                if type_ == "Patient" and is_own and interaction == "delete":
                    continue  # Alice stays; deleting another patient is checked below
                target = world.create(type_, is_own)
                url = f"{base}/{type_}/{target.id}"
                if interaction == "update":
                    current = web.get(url, headers=world.admin).json()
                    response = web.put(url, json={**current, "language": "en"}, headers=h)
                elif interaction == "patch":
                    response = web.patch(url, content=json.dumps(
                        [{"op": "add", "path": "/language", "value": "en"}]),
                        headers={**h, "content-type": "application/json-patch+json"})
                else:
                    response = web.delete(url, headers=h)
                expect(f"{interaction} {type_} {tag}",
                       oracle(scopes, type_, interaction, target), response)
        # batch read entries: each entry decided on its own
        batch = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"{type_}/{own.id}"}},
            {"request": {"method": "GET", "url": f"{type_}/{other.id}"}}]}
        response = web.post(f"{base}/", json=batch, headers=h)
        if response.status_code != 200:
            failures.append(f"batch {type_}: {response.status_code} {response.text[:160]}")
        else:
            statuses = [e["response"]["status"] for e in response.json()["entry"]]
            for status, target, tag in zip(statuses, (own, other), ("own", "other"),
                                           strict=True):
                allowed = oracle(scopes, type_, "read", target)
                if allowed != status.startswith("200"):
                    failures.append(f"batch read {type_} {tag}: expected "
                                    f"{'200' if allowed else '403'}, got {status}")
    return failures


def test_no_token_is_401_for_every_type_and_interaction(world: World) -> None:
    """But for the public view (on by default, tests/test_public_view.py): reads and
    searches of the directory types answer without a token."""
    base = world.server.base
    for type_ in HOSTED_TYPES:
        for method, path in (("GET", f"/{type_}/x"), ("GET", f"/{type_}"),
                             ("GET", f"/{type_}/_history"), ("POST", f"/{type_}"),
                             ("PUT", f"/{type_}/x"), ("DELETE", f"/{type_}/x")):
            if method == "GET" and type_ in PUBLIC_TYPES and not path.endswith("_history"):
                continue
            response = web.request(method, f"{base}{path}", json={"resourceType": type_})
            assert response.status_code == 401, (method, path)


def test_the_compartment_is_the_official_one_for_the_hosted_types() -> None:
    official = json.loads((r4_examples_dir() / "CompartmentDefinition-patient.json"
                           ).read_text())
    with_params = {r["code"] for r in official["resource"] if r.get("param")}
    assert with_params & set(HOSTED_TYPES) == COMPARTMENT
    from fhir_sched.search.compartment import PATIENT_COMPARTMENT

    for r in official["resource"]:
        if r["code"] in HOSTED_TYPES and r.get("param"):
            assert set(PATIENT_COMPARTMENT[r["code"]]) == set(r["param"]), r["code"]
