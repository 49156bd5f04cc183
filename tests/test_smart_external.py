"""External issuer mode: tokens from another authorization server, verified against its JWKS
or, in introspection mode, by asking the issuer about each one (RFC 7662).

The other server is a second fhir-sched process with auth on (its embedded authorization server
stands in for Keycloak, Okta or an EHR's): its discovery document names its JWKS, its keys
rotate, its tokens carry its own ``aud``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from joserfc.jws import extract_compact

from fhir_sched.auth.external import credentials, secret_env
from tests.support import web
from tests.support.server import ServerProcess
from tests.support.smart import BackendClient, get_token, register

CLIENT = BackendClient.new("external-backend", "ES384")
AUDITOR = BackendClient.new("external-auditor", "ES384")


@dataclass
class Issuers:
    issuer: ServerProcess  # the other authorization server
    trusting: ServerProcess  # trusts it, for its audience
    wrong_audience: ServerProcess  # trusts it, but only for its own audience
    stranger: ServerProcess  # an authorization server nobody trusts
    introspecting: ServerProcess  # trusts it, and asks it about every token
    mixed: ServerProcess  # trusts it (asking about each token) and the stranger (by signature)


INTROSPECTOR, INTROSPECTOR_SECRET = "rs-introspector", "introspection secret 0123456789"


@pytest.fixture(scope="module")
def issuers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuers]:
    root = tmp_path_factory.mktemp("external")
    jwks = root / "client.json"
    jwks.write_text(json.dumps(CLIENT.public_jwks()))
    stores = {name: f"sqlite:///{root}/{name}.db" for name in ("a", "b", "c", "d")}
    stores["e"] = f"sqlite:///{root}/e.db"
    stores["f"] = f"sqlite:///{root}/f.db"
    for name in ("a", "d"):
        assert register(stores[name], CLIENT.client_id, "system/*.cruds", "--jwks-file",
                        str(jwks)).returncode == 0
    auditor = root / "auditor.json"
    auditor.write_text(json.dumps(AUDITOR.public_jwks()))
    assert register(stores["a"], AUDITOR.client_id, "system/AuditEvent.rs", "--jwks-file",
                    str(auditor)).returncode == 0
    added = subprocess.run([sys.executable, "-m", "fhir_sched.cli", "client", "add",
                            "--client-id", INTROSPECTOR, "--scope", "system/*.rs",
                            "--secret-stdin", "--store", stores["a"]],
                           input=INTROSPECTOR_SECRET, capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    started: list[ServerProcess] = []
    try:
        a = ServerProcess(stores["a"], env={"FHIR_SCHED_AUTH": "smart"}).start()
        started.append(a)
        issuer = a.base.removesuffix("/fhir")
        b = ServerProcess(stores["b"], env={"FHIR_SCHED_AUTH": "smart",
                                            "FHIR_SCHED_TRUST_ISSUER": issuer,
                                            "FHIR_SCHED_TRUST_AUDIENCE": a.base}).start()
        started.append(b)
        c = ServerProcess(stores["c"], env={"FHIR_SCHED_AUTH": "smart",
                                            "FHIR_SCHED_TRUST_ISSUER": issuer}).start()
        started.append(c)
        d = ServerProcess(stores["d"], env={"FHIR_SCHED_AUTH": "smart"}).start()
        started.append(d)
        e = ServerProcess(stores["e"], env={
            "FHIR_SCHED_AUTH": "smart", "FHIR_SCHED_TRUST_ISSUER": issuer,
            "FHIR_SCHED_TRUST_AUDIENCE": a.base,
            "FHIR_SCHED_TRUST_INTROSPECTION_CLIENT": INTROSPECTOR,
            "FHIR_SCHED_TRUST_INTROSPECTION_SECRET": INTROSPECTOR_SECRET}).start()
        started.append(e)
        stranger = d.base.removesuffix("/fhir")
        f = ServerProcess(stores["f"], env={
            "FHIR_SCHED_AUTH": "smart", "FHIR_SCHED_TRUST_ISSUER": f"{issuer},{stranger}",
            "FHIR_SCHED_TRUST_AUDIENCE": f"{a.base},{d.base}",
            "FHIR_SCHED_TRUST_INTROSPECTION_CLIENT": f"{issuer}={INTROSPECTOR}",
            secret_env(INTROSPECTOR): INTROSPECTOR_SECRET}).start()
        started.append(f)
        yield Issuers(a, b, c, d, e, f)
    finally:
        for proc in started:
            proc.stop()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_a_trusted_issuers_token_is_accepted_with_its_scopes(issuers: Issuers) -> None:
    token = get_token(issuers.issuer.base, CLIENT, "system/Slot.rs")
    assert web.get(f"{issuers.trusting.base}/Slot", headers=bearer(token)).status_code == 200
    refused = web.get(f"{issuers.trusting.base}/Patient", headers=bearer(token))
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "forbidden"


def test_a_trusted_issuers_token_for_another_audience_is_refused(issuers: Issuers) -> None:
    token = get_token(issuers.issuer.base, CLIENT, "system/Slot.rs")
    response = web.get(f"{issuers.wrong_audience.base}/Slot", headers=bearer(token))
    assert response.status_code == 401
    assert "aud" in response.headers["www-authenticate"]


def test_an_untrusted_issuers_token_is_refused(issuers: Issuers) -> None:
    token = get_token(issuers.stranger.base, CLIENT, "system/*.rs")
    response = web.get(f"{issuers.trusting.base}/Slot", headers=bearer(token))
    assert response.status_code == 401


def test_a_rotated_issuer_key_is_fetched_on_first_sight(issuers: Issuers) -> None:
    before = get_token(issuers.issuer.base, CLIENT, "system/Slot.rs")
    assert web.get(f"{issuers.trusting.base}/Slot", headers=bearer(before)).status_code == 200
    old_kid = extract_compact(before.encode()).headers()["kid"]
    done = subprocess.run([sys.executable, "-m", "fhir_sched.cli", "keys", "rotate", "--store",
                           issuers.issuer.store], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 15
    after = before
    while time.monotonic() < deadline:
        after = get_token(issuers.issuer.base, CLIENT, "system/Slot.rs")
        if extract_compact(after.encode()).headers()["kid"] != old_kid:
            break
        time.sleep(0.5)
    assert extract_compact(after.encode()).headers()["kid"] != old_kid
    # the trusting server cached the old key set (max-age 300): it must fetch it again
    assert web.get(f"{issuers.trusting.base}/Slot", headers=bearer(after)).status_code == 200


def test_a_forged_token_naming_the_trusted_issuer_is_refused(issuers: Issuers) -> None:
    from joserfc import jwt
    from joserfc.jwk import ECKey, OctKey

    genuine = get_token(issuers.issuer.base, CLIENT, "system/*.rs")
    header = extract_compact(genuine.encode()).headers()
    claims = json.loads(extract_compact(genuine.encode()).payload)
    forger = ECKey.generate_key("P-256", parameters={"kid": header["kid"]}, private=True)
    forged = jwt.encode({"alg": "ES256", "kid": header["kid"]}, claims, forger)
    assert web.get(f"{issuers.trusting.base}/Slot", headers=bearer(forged)).status_code == 401
    hs = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key("secret-guess-long-enough-x"),
                    algorithms=["HS256"])
    assert web.get(f"{issuers.trusting.base}/Slot", headers=bearer(hs)).status_code == 401


# --- introspection mode ---------------------------------------------------------------------
def test_introspection_accepts_an_active_token_with_its_scopes(issuers: Issuers) -> None:
    token = get_token(issuers.issuer.base, CLIENT, "system/Slot.rs")
    assert web.get(f"{issuers.introspecting.base}/Slot", headers=bearer(token)).status_code \
        == 200
    refused = web.get(f"{issuers.introspecting.base}/Patient", headers=bearer(token))
    assert refused.status_code == 403


def test_introspection_refuses_a_token_its_issuer_revoked(issuers: Issuers) -> None:
    # a signature check alone would accept it: only the issuer knows it was revoked
    token = get_token(issuers.issuer.base, CLIENT, "system/Slot.rs")
    revoked = web.post(f"{issuers.issuer.base.removesuffix('/fhir')}/auth/revoke",
                       data={"token": token})
    assert revoked.status_code == 200
    assert web.get(f"{issuers.trusting.base}/Slot", headers=bearer(token)).status_code == 200
    response = web.get(f"{issuers.introspecting.base}/Slot", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_introspection_refuses_an_opaque_token_no_issuer_knows(issuers: Issuers) -> None:
    response = web.get(f"{issuers.introspecting.base}/Slot",
                       headers=bearer("opaque-0123456789abcdef"))
    assert response.status_code == 401


def _introspections_at_the_issuer(issuers: Issuers) -> int:
    token = get_token(issuers.issuer.base, AUDITOR, "system/AuditEvent.rs")
    bundle = web.get(f"{issuers.issuer.base}/AuditEvent", headers=bearer(token),
                     params={"subtype": "auth/introspect", "_count": "1000"}).json()
    return sum(1 for e in bundle.get("entry", [])
               if any(INTROSPECTOR in json.dumps(a["who"]) for a in e["resource"]["agent"]))


def test_a_token_no_issuer_knows_is_refused_from_memory_after_the_first_ask(
        issuers: Issuers) -> None:
    before = _introspections_at_the_issuer(issuers)
    while True:  # earlier tests' introspections may still be on their way to the trail
        time.sleep(0.6)
        settled = _introspections_at_the_issuer(issuers)
        if settled == before:
            break
        before = settled
    made_up = f"opaque-{os.urandom(12).hex()}"
    for _ in range(5):
        assert web.get(f"{issuers.introspecting.base}/Slot",
                       headers=bearer(made_up)).status_code == 401
    deadline = time.monotonic() + 10
    while _introspections_at_the_issuer(issuers) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # room for any further entry to be flushed, had there been more asks
    assert _introspections_at_the_issuer(issuers) == before + 1


def test_introspection_credentials_per_issuer_ask_one_and_verify_the_others_by_signature(
        issuers: Issuers) -> None:
    revoked = get_token(issuers.issuer.base, CLIENT, "system/Slot.rs")
    assert web.post(f"{issuers.issuer.base.removesuffix('/fhir')}/auth/revoke",
                    data={"token": revoked}).status_code == 200
    assert web.get(f"{issuers.mixed.base}/Slot", headers=bearer(revoked)).status_code == 401
    live = get_token(issuers.issuer.base, CLIENT, "system/Slot.rs")
    assert web.get(f"{issuers.mixed.base}/Slot", headers=bearer(live)).status_code == 200
    # the stranger has no introspection client registered: only a signature check passes
    theirs = get_token(issuers.stranger.base, CLIENT, "system/Slot.rs")
    assert web.get(f"{issuers.mixed.base}/Slot", headers=bearer(theirs)).status_code == 200


ISSUER_A, ISSUER_B = "https://a.example/auth", "https://b.example/auth"


def test_introspection_credentials_default_to_every_issuer_and_a_named_one_wins() -> None:
    env = {"FHIR_SCHED_TRUST_INTROSPECTION_SECRET": "shared",
           secret_env("b-only"): "b-secret"}
    assert credentials("rs", [ISSUER_A, ISSUER_B], env) == {
        ISSUER_A: ("rs", "shared"), ISSUER_B: ("rs", "shared")}
    for spec in (f"rs,{ISSUER_B}=b-only", f"{ISSUER_B}=b-only,rs"):
        assert credentials(spec, [ISSUER_A, ISSUER_B + "/"], env) == {
            ISSUER_A: ("rs", "shared"), ISSUER_B: ("b-only", "b-secret")}
    assert credentials("", [ISSUER_A], env) == {}


@pytest.mark.parametrize(("spec", "issuers", "env", "says"), [
    ("rs", [ISSUER_A], {}, "FHIR_SCHED_TRUST_INTROSPECTION_SECRET_RS"),
    ("https://c.example=rs", [ISSUER_A], {"FHIR_SCHED_TRUST_INTROSPECTION_SECRET": "x"},
     "not a --trust-issuer"),
    (f"{ISSUER_A}=", [ISSUER_A], {"FHIR_SCHED_TRUST_INTROSPECTION_SECRET": "x"},
     "no client id"),
    ("rs", [], {"FHIR_SCHED_TRUST_INTROSPECTION_SECRET": "x"}, "needs a --trust-issuer"),
])
def test_introspection_credentials_that_cannot_work_are_refused_naming_the_problem(
        spec: str, issuers: list[str], env: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        credentials(spec, issuers, env)


def test_serve_refuses_to_start_with_an_introspection_client_lacking_its_secret(
        tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "fhir_sched.cli", "serve", "--store",
                           f"sqlite:///{tmp_path}/x.db", "--trust-issuer", ISSUER_A,
                           "--trust-introspection-client", f"{ISSUER_A}=rs-x"],
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("FHIR_SCHED_")})
    assert done.returncode != 0
    assert "FHIR_SCHED_TRUST_INTROSPECTION_SECRET_RS_X" in done.stderr


def test_the_introspection_endpoint_takes_a_confidential_clients_credentials(
        issuers: Issuers) -> None:
    url = f"{issuers.issuer.base.removesuffix('/fhir')}/auth/introspect"
    token = get_token(issuers.issuer.base, CLIENT, "system/Slot.rs")
    answer = web.post(url, data={"token": token}, auth=(INTROSPECTOR, INTROSPECTOR_SECRET))
    assert answer.status_code == 200
    assert answer.json()["active"] is True and answer.json()["scope"] == "system/Slot.rs"
    wrong = web.post(url, data={"token": token}, auth=(INTROSPECTOR, "not the secret"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    backend = web.post(url, data={"token": token}, auth=(CLIENT.client_id, "anything"))
    assert backend.status_code == 401  # only a client with a secret may introspect this way
