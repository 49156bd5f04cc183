"""External issuer mode: tokens from another authorization server, verified against its JWKS.

The other server is a second fhir-sched process with auth on (its embedded authorization server
stands in for Keycloak, Okta or an EHR's): its discovery document names its JWKS, its keys
rotate, its tokens carry its own ``aud``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from joserfc.jws import extract_compact

from tests.support import web
from tests.support.server import ServerProcess
from tests.support.smart import BackendClient, get_token, register

CLIENT = BackendClient.new("external-backend", "ES384")


@dataclass
class Issuers:
    issuer: ServerProcess  # the other authorization server
    trusting: ServerProcess  # trusts it, for its audience
    wrong_audience: ServerProcess  # trusts it, but only for its own audience
    stranger: ServerProcess  # an authorization server nobody trusts


@pytest.fixture(scope="module")
def issuers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuers]:
    root = tmp_path_factory.mktemp("external")
    jwks = root / "client.json"
    jwks.write_text(json.dumps(CLIENT.public_jwks()))
    stores = {name: f"sqlite:///{root}/{name}.db" for name in ("a", "b", "c", "d")}
    for name in ("a", "d"):
        assert register(stores[name], CLIENT.client_id, "system/*.cruds", "--jwks-file",
                        str(jwks)).returncode == 0
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
        yield Issuers(a, b, c, d)
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
