"""SMART Backend Services against a real server with auth on, on both stores.

Ports of the Inferno SMART App Launch STU2 backend-services and discovery checks, plus the JWT
cases Inferno does not try (expired, exp too far ahead, replayed jti, wrong aud, bad signature,
unknown kid, alg none, HS256 with the public key as secret), and the resource server's answers:
401 with a Bearer challenge without a usable token, 403 with an OperationOutcome when the scopes
do not allow the interaction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jws import extract_compact

from tests.support import web
from tests.support.scheduling import hours, schedule, template
from tests.support.server import ServerProcess, cleanup_dir, store_url
from tests.support.smart import (
    ASSERTION_TYPE,
    BackendClient,
    get_token,
    register_backend,
    token_form,
)

SMART = {"FHIR_SCHED_AUTH": "smart"}
ES = BackendClient.new("backend-es", "ES384")
RS = BackendClient.new("backend-rs", "RS384")
SLOTS_ONLY = BackendClient.new("slots-only", "ES384")
V1 = BackendClient.new("v1-reader", "ES384")
DESK = BackendClient.new("front-desk", "ES384")


@pytest.fixture(scope="module")
def smart(store_kind: str, mongo_uri: str | None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ServerProcess]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_smart")
    keys = tmp_path_factory.mktemp("jwks")
    for client, scope in ((ES, "system/*.cruds"), (RS, "system/*.cruds"),
                          (SLOTS_ONLY, "system/Slot.rs system/Schedule.rs"),
                          (V1, "system/*.read"),
                          (DESK, "system/*.cruds fhir-sched/overbook")):
        register_backend(url, client, scope, keys)
    proc = ServerProcess(url, env=SMART).start()
    yield proc
    proc.stop()
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def config(server: ServerProcess) -> dict[str, Any]:
    return dict(web.get(f"{server.base}/.well-known/smart-configuration").json())


def token_url(server: ServerProcess) -> str:
    return str(config(server)["token_endpoint"])


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def ask(server: ServerProcess, client: BackendClient, scope: str = "system/*.rs",
        **changes: Any) -> httpx.Response:
    url = token_url(server)
    return web.post(url, data=token_form(client, url, scope, **changes))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- discovery ---------------------------------------------------------------------------------
def test_the_smart_configuration_is_public_json_with_the_required_fields(
        smart: ServerProcess) -> None:
    response = web.get(f"{smart.base}/.well-known/smart-configuration",
                       headers={"accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("access-control-allow-origin")
    body = response.json()
    assert body["token_endpoint"].startswith("http://")
    assert "client_credentials" in body["grant_types_supported"]
    assert isinstance(body["capabilities"], list)
    assert all(isinstance(c, str) for c in body["capabilities"])
    assert "client-confidential-asymmetric" in body["capabilities"]
    assert "S256" in body["code_challenge_methods_supported"]
    assert "plain" not in body["code_challenge_methods_supported"]
    assert {"RS384", "ES384"} <= set(body["token_endpoint_auth_signing_alg_values_supported"])
    assert "private_key_jwt" in body["token_endpoint_auth_methods_supported"]


def test_the_capability_statement_is_public_and_publishes_the_oauth_uris(
        smart: ServerProcess) -> None:
    response = web.get(f"{smart.base}/metadata")
    assert response.status_code == 200
    security = response.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for ext in security["extension"] for e in ext["extension"]
            if ext["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"}
    assert uris["token"] == token_url(smart)


# --- the resource server -------------------------------------------------------------------------
def test_a_read_without_a_token_is_401_with_a_bearer_challenge(smart: ServerProcess) -> None:
    response = web.get(f"{smart.base}/Appointment")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["code"] == "login"


@pytest.mark.parametrize("header", ["Bearer", "Bearer not-a-jwt", "Basic dXNlcjpwYXNz",
                                    "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."])
def test_an_unusable_authorization_header_is_401_invalid_token(smart: ServerProcess,
                                                               header: str) -> None:
    response = web.get(f"{smart.base}/Patient", headers={"authorization": header})
    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]


def test_every_door_is_closed_without_a_token(smart: ServerProcess) -> None:
    for method, path in [("GET", "/Slot/x"), ("POST", "/Patient"), ("POST", "/"),
                         ("GET", "/_history"), ("POST", "/Appointment/$book"),
                         ("DELETE", "/Patient/x"), ("GET", "/StructureDefinition")]:
        response = web.request(method, f"{smart.base}{path}", json={})
        assert response.status_code == 401, (method, path, response.status_code)
    hl7 = web.post(smart.base.removesuffix("/fhir") + "/hl7v2",
                   content=b"MSH|^~\\&|A|B|C|D|20240101||SIU^S12|1|P|2.5\r",
                   headers={"content-type": "x-application/hl7-v2+er7"})
    assert hl7.status_code == 401


# --- backend services: success ------------------------------------------------------------------
@pytest.mark.parametrize("client", [ES, RS], ids=["ES384", "RS384"])
def test_a_backend_client_gets_a_token_and_reads_with_it(smart: ServerProcess,
                                                         client: BackendClient) -> None:
    response = ask(smart, client, "system/*.rs")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"].lower() == "bearer"
    assert isinstance(body["expires_in"], int) and 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/*.rs"
    assert "refresh_token" not in body
    read = web.get(f"{smart.base}/Appointment", headers=bearer(body["access_token"]))
    assert read.status_code == 200
    assert read.json()["resourceType"] == "Bundle"


def test_a_token_with_write_scopes_creates_and_reads_back(smart: ServerProcess) -> None:
    token = get_token(smart.base, ES, "system/Patient.cruds")
    created = web.post(f"{smart.base}/Patient", headers=bearer(token),
                       json={"resourceType": "Patient", "name": [{"family": "Okafor"}]})
    assert created.status_code == 201
    pid = created.json()["id"]
    assert web.get(f"{smart.base}/Patient/{pid}", headers=bearer(token)).status_code == 200


def test_only_registered_scopes_are_granted(smart: ServerProcess) -> None:
    response = ask(smart, SLOTS_ONLY, "system/Slot.rs system/Appointment.rs launch/patient")
    assert response.status_code == 200
    assert response.json()["scope"] == "system/Slot.rs"
    refused = ask(smart, SLOTS_ONLY, "system/Appointment.rs")
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_scope"


def test_a_malformed_scope_is_invalid_scope(smart: ServerProcess) -> None:
    response = ask(smart, ES, "system/Appointment.dus")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


# --- scopes on the resource server -----------------------------------------------------------
def test_the_scopes_decide_what_a_token_may_do(smart: ServerProcess) -> None:
    token = get_token(smart.base, SLOTS_ONLY, "system/Slot.rs system/Schedule.rs")
    h = bearer(token)
    assert web.get(f"{smart.base}/Slot", headers=h).status_code == 200
    for method, path, body in [("GET", "/Appointment", None), ("GET", "/Patient/x", None),
                               ("POST", "/Slot", {"resourceType": "Slot"}),
                               ("DELETE", "/Slot/x", None)]:
        response = web.request(method, f"{smart.base}{path}", headers=h, json=body)
        assert response.status_code == 403, (method, path, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "forbidden"


def test_v1_read_scopes_read_and_search_but_never_write(smart: ServerProcess) -> None:
    token = get_token(smart.base, V1, "system/*.read")
    h = bearer(token)
    assert web.get(f"{smart.base}/Schedule", headers=h).status_code == 200
    written = web.post(f"{smart.base}/Patient", headers=h,
                       json={"resourceType": "Patient", "name": [{"family": "Ng"}]})
    assert written.status_code == 403


def test_a_patient_scope_token_cannot_be_had_by_a_backend_client(smart: ServerProcess) -> None:
    response = ask(smart, ES, "patient/*.rs")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_hl7v2_over_http_needs_appointment_write_scopes(smart: ServerProcess) -> None:
    url = smart.base.removesuffix("/fhir") + "/hl7v2"
    msg = (b"MSH|^~\\&|ENGINE|CLINIC|FHIRSCHED|FS|20300101120000+0000||SIU^S12|T1|P|2.5.1\r"
           b"SCH|P1^ENG|F1^ENG|||||||10|min|^^10^20300101120000+0000\rPID|1||M1^^^ENG^MR||Doe^J\r")
    headers = {"content-type": "x-application/hl7-v2+er7"}
    reader = get_token(smart.base, V1, "system/*.read")
    assert web.post(url, content=msg, headers={**headers, **bearer(reader)}
                    ).status_code == 403
    writer = get_token(smart.base, ES, "system/*.cruds")
    ok = web.post(url, content=msg, headers={**headers, **bearer(writer)})
    assert ok.status_code == 200
    assert b"MSA|" in ok.content


# --- backend services: refusals (Inferno and the cases it misses) -------------------------------
def test_a_bad_grant_type_is_400_unsupported_grant_type(smart: ServerProcess) -> None:
    url = token_url(smart)
    form = token_form(ES, url, "system/*.rs")
    form["grant_type"] = "password"
    response = web.post(url, data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    assert response.headers["cache-control"] == "no-store"


def test_a_bad_client_assertion_type_is_invalid_client(smart: ServerProcess) -> None:
    url = token_url(smart)
    form = token_form(ES, url, "system/*.rs")
    form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
    response = web.post(url, data=form)
    assert response.status_code in (400, 401)
    assert response.json()["error"] == "invalid_client"


def _refused(response: httpx.Response) -> str:
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == "invalid_client", response.text
    return str(response.json()["error_description"])


def test_an_expired_assertion_is_refused(smart: ServerProcess) -> None:
    now = int(time.time())
    assert "expired" in _refused(ask(smart, ES, exp=now - 120, iat=now - 400))


def test_an_assertion_expiring_more_than_five_minutes_ahead_is_refused(
        smart: ServerProcess) -> None:
    assert "five minutes" in _refused(ask(smart, ES, exp=int(time.time()) + 600))


def test_a_replayed_jti_is_refused(smart: ServerProcess) -> None:
    url = token_url(smart)
    form = token_form(ES, url, "system/*.rs")
    assert web.post(url, data=form).status_code == 200
    assert "replay" in _refused(web.post(url, data=form))


def test_an_assertion_for_another_audience_is_refused(smart: ServerProcess) -> None:
    assert "aud" in _refused(ask(smart, ES, aud="https://elsewhere.example/token"))


def test_a_signature_by_another_key_with_the_same_kid_is_refused(smart: ServerProcess) -> None:
    impostor = BackendClient.new(ES.client_id, "ES384", kid=ES.key.kid)
    url = token_url(smart)
    response = web.post(url, data=token_form(impostor, url, "system/*.rs"))
    assert "signature" in _refused(response)


def test_an_unknown_kid_is_refused(smart: ServerProcess) -> None:
    stranger = BackendClient.new(ES.client_id, "ES384", kid="never-registered")
    url = token_url(smart)
    assert "kid" in _refused(web.post(url, data=token_form(stranger, url, "system/*.rs")))


def test_alg_none_is_refused(smart: ServerProcess) -> None:
    url = token_url(smart)
    now = int(time.time())
    claims = {"iss": ES.client_id, "sub": ES.client_id, "aud": url, "exp": now + 200,
              "jti": os.urandom(8).hex()}
    unsigned = (b64(json.dumps({"alg": "none", "kid": ES.key.kid, "typ": "JWT"}).encode())
                + "." + b64(json.dumps(claims).encode()) + ".")
    form = {"grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": unsigned}
    assert "alg" in _refused(web.post(url, data=form))


def test_hs256_signed_with_the_public_key_is_refused(smart: ServerProcess) -> None:
    url = token_url(smart)
    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "kid": RS.key.kid, "typ": "JWT"}).encode())
    payload = b64(json.dumps({"iss": RS.client_id, "sub": RS.client_id, "aud": url,
                              "exp": now + 200, "jti": os.urandom(8).hex()}).encode())
    secret = json.dumps(RS.public_jwks()["keys"][0]).encode()
    signature = b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    form = {"grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": f"{header}.{payload}.{signature}"}
    assert "alg" in _refused(web.post(url, data=form))


def test_an_unknown_client_is_refused(smart: ServerProcess) -> None:
    stranger = BackendClient.new("nobody-registered-me", "ES384")
    url = token_url(smart)
    assert "registered" in _refused(web.post(url, data=token_form(stranger, url,
                                                                  "system/*.rs")))


def test_iss_and_sub_must_both_be_the_client(smart: ServerProcess) -> None:
    assert "iss and sub" in _refused(ask(smart, ES, sub="someone-else"))


def test_an_assertion_without_jti_is_refused(smart: ServerProcess) -> None:
    assert "jti" in _refused(ask(smart, ES, jti=None))


def test_a_jku_other_than_the_registered_url_is_refused(smart: ServerProcess) -> None:
    response = ask(smart, ES, _header={"jku": "https://attacker.example/jwks.json"})
    assert "jku" in _refused(response)


def test_the_token_endpoint_refuses_a_json_body(smart: ServerProcess) -> None:
    url = token_url(smart)
    response = web.post(url, json=token_form(ES, url, "system/*.rs"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# --- introspection ------------------------------------------------------------------------------
def test_introspection_reports_an_active_token_with_its_smart_fields(
        smart: ServerProcess) -> None:
    token = get_token(smart.base, ES, "system/Slot.rs")
    caller = get_token(smart.base, ES, "system/*.rs")
    endpoint = config(smart)["introspection_endpoint"]
    response = web.post(endpoint, data={"token": token}, headers=bearer(caller))
    assert response.status_code == 200
    body = response.json()
    assert body["active"] is True
    assert body["client_id"] == ES.client_id
    assert body["scope"] == "system/Slot.rs"
    assert isinstance(body["exp"], int) and body["exp"] > time.time()


def test_introspection_reports_garbage_as_inactive_and_needs_a_caller_token(
        smart: ServerProcess) -> None:
    endpoint = config(smart)["introspection_endpoint"]
    caller = get_token(smart.base, ES, "system/*.rs")
    response = web.post(endpoint, data={"token": "garbage"}, headers=bearer(caller))
    assert response.json() == {"active": False}
    assert web.post(endpoint, data={"token": "garbage"}).status_code == 401


# --- defaults -----------------------------------------------------------------------------------
def test_smart_is_the_default_when_nothing_is_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FHIR_SCHED_AUTH"}
    proc = ServerProcess(f"sqlite:///{tmp_path}/default.db")
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        proc.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        assert web.get(f"{proc.base}/Patient").status_code == 401
        assert "x-fhir-sched-auth" not in web.get(f"{proc.base}/metadata").headers
    finally:
        proc.stop()


def test_auth_none_says_so_on_every_response_and_in_the_log(tmp_path: Path) -> None:
    proc = ServerProcess(f"sqlite:///{tmp_path}/open.db",
                         env={"FHIR_SCHED_AUTH": "none", "FHIR_SCHED_LOG_LEVEL": "info"}).start()
    try:
        response = web.get(f"{proc.base}/Patient")
        assert response.status_code == 200
        assert response.headers["x-fhir-sched-auth"] == "none"
        assert "AUTH IS OFF" in proc.log_with("AUTH IS OFF")
    finally:
        proc.stop()


# --- staff powers as scopes ---------------------------------------------------------------------
OVERBOOKED = "https://fhir-sched.org/fhir/StructureDefinition/overbooked"


def test_overbooking_needs_the_overbook_scope(smart: ServerProcess) -> None:
    desk = get_token(smart.base, DESK, "system/*.cruds fhir-sched/overbook")
    plain = get_token(smart.base, ES, "system/*.cruds")
    assert web.put(f"{smart.base}/Practitioner/pr-ob", headers=bearer(desk), json={
        "resourceType": "Practitioner", "id": "pr-ob"}).status_code in (200, 201)
    sched = schedule("sch-ob", "Practitioner/pr-ob", template(
        "UTC", hours(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "08:00:00", "18:00:00"),
        capacity=1))
    assert web.put(f"{smart.base}/Schedule/sch-ob", headers=bearer(desk),
                   json=sched).status_code in (200, 201)
    visit = {"resourceType": "Appointment", "status": "booked",
             "start": "2031-01-07T09:00:00Z", "end": "2031-01-07T09:30:00Z",
             "participant": [{"actor": {"reference": "Practitioner/pr-ob"},
                              "status": "accepted"}]}
    assert web.post(f"{smart.base}/Appointment", headers=bearer(plain),
                    json=visit).status_code == 201
    assert web.post(f"{smart.base}/Appointment", headers=bearer(plain),
                    json=visit).status_code == 409
    extra = {**visit, "extension": [{"url": OVERBOOKED, "valueBoolean": True}]}
    refused = web.post(f"{smart.base}/Appointment", headers=bearer(plain), json=extra)
    assert refused.status_code == 403
    allowed = web.post(f"{smart.base}/Appointment", headers=bearer(desk), json=extra)
    assert allowed.status_code == 201, allowed.text
    assert {"url": OVERBOOKED, "valueBoolean": True} in allowed.json()["extension"]


def test_rotated_keys_sign_new_tokens_while_old_tokens_stay_valid(smart: ServerProcess) -> None:
    old = get_token(smart.base, ES, "system/*.rs")
    old_kid = extract_compact(old.encode()).headers()["kid"]
    done = subprocess.run([sys.executable, "-m", "fhir_sched.cli", "keys", "rotate", "--store",
                           smart.store], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 15
    new = old
    while time.monotonic() < deadline:
        new = get_token(smart.base, ES, "system/*.rs")
        if extract_compact(new.encode()).headers()["kid"] != old_kid:
            break
        time.sleep(0.5)
    assert extract_compact(new.encode()).headers()["kid"] != old_kid
    for token in (old, new):
        assert web.get(f"{smart.base}/Slot", headers=bearer(token)).status_code == 200
    jwks = web.get(config(smart)["jwks_uri"]).json()
    assert {k["kid"] for k in jwks["keys"]} >= {old_kid,
                                                 extract_compact(new.encode()).headers()["kid"]}
    assert all("d" not in k for k in jwks["keys"])


def test_responses_carry_the_security_headers(smart: ServerProcess) -> None:
    response = web.get(f"{smart.base}/metadata")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


# --- third-party clients with a backend token -----------------------------------------------
def test_fhirpy_reads_and_writes_with_a_backend_token(smart: ServerProcess) -> None:
    from fhirpy import SyncFHIRClient

    token = get_token(smart.base, ES, "system/*.cruds")
    client = SyncFHIRClient(smart.base, authorization=f"Bearer {token}")
    patient = client.resource("Patient", name=[{"family": "Fhirpy-Backend"}])
    patient.save()
    found = client.resources("Patient").search(family="Fhirpy-Backend").fetch()
    assert [p["id"] for p in found] == [patient["id"]]
    anonymous = SyncFHIRClient(smart.base)
    with pytest.raises(Exception, match=r"401|Unauthorized|login"):
        anonymous.resources("Patient").fetch()


def test_python_fhirclient_gets_a_backend_token_from_the_capability_statement(
        smart: ServerProcess) -> None:
    from fhirclient import client
    from fhirclient.models.schedule import Schedule

    url = token_url(smart)
    smart_client = client.FHIRClient(settings={
        "app_id": ES.client_id, "api_base": smart.base, "scope": "system/*.rs",
        "jwt_token": ES.assertion(url)})
    smart_client.prepare()
    assert smart_client.server.auth.__class__.__name__ == "FHIROAuth2Auth"
    smart_client.authorize()
    assert smart_client.ready
    bundle = next(Schedule.where(struct={}).perform_iter(smart_client.server))
    assert bundle.type == "searchset"
