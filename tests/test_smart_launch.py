"""SMART App Launch against a real server: standalone and EHR launch, PKCE, refresh, revocation,
OpenID, and the patient compartment a patient token is confined to.

Ports of the Inferno SMART App Launch STU2 and ONC g(10) checks: discovery, the four invalid
PKCE launches, a bad code, a bad client id, an invalid ``aud``, token response body and headers,
refresh with and without ``scope``, a revoked token, introspection; then what the scopes and the
compartment let a token see and do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support import web
from tests.support.launch import REDIRECT, Browser, add_user, pkce, query_of
from tests.support.server import ServerProcess, cleanup_dir, store_url
from tests.support.smart import BackendClient, get_token, register, register_backend

PASSWORD = "correct horse battery"
KEYED_APP = BackendClient.new("app-keys", "RS384")
AUDITOR = BackendClient.new("launch-auditor", "ES384")
SCOPES = ("launch/patient openid fhirUser offline_access patient/Patient.rs "
          "patient/Appointment.rs")


@dataclass
class World:
    server: ServerProcess
    issuer: str
    admin: str  # a system/*.cruds token
    alice: str  # Patient/<id> of the patient user
    bob: str  # another patient, nobody's user
    alice_appointment: str
    bob_appointment: str

    def browser(self) -> Browser:
        return Browser(self.issuer, self.server.base)


def _appointment(base: str, token: str, patient: str) -> str:
    body = {"resourceType": "Appointment", "status": "proposed",
            "requestedPeriod": [{"start": "2031-03-01T09:00:00Z", "end": "2031-03-01T17:00:00Z"}],
            "participant": [{"actor": {"reference": patient}, "status": "needs-action"}]}
    response = web.post(f"{base}/Appointment", json=body,
                        headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def world(store_kind: str, mongo_uri: str | None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_launch")
    admin = BackendClient.new("launch-admin", "ES384")
    register_backend(url, admin, "system/*.cruds", tmp_path_factory.mktemp("launch"))
    register_backend(url, AUDITOR, "system/AuditEvent.rs", tmp_path_factory.mktemp("auditor"))
    scope = ("launch launch/patient openid fhirUser offline_access online_access "
             "patient/*.cruds user/*.cruds")
    assert register(url, "app-public", scope, "--redirect-uri", REDIRECT, "--public"
                    ).returncode == 0
    done = subprocess.run([sys.executable, "-m", "fhir_sched.cli", "client", "add",
                           "--client-id", "app-secret", "--scope", scope, "--redirect-uri",
                           REDIRECT, "--secret-stdin", "--store", url],
                          input="s3cret-value-for-tests\n", capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    keys = tmp_path_factory.mktemp("launch-keys") / "app-keys.json"
    keys.write_text(json.dumps(KEYED_APP.public_jwks()))
    keyed = register(url, "app-keys", scope, "--redirect-uri", REDIRECT, "--jwks-file",
                     str(keys))
    assert keyed.returncode == 0 and "asymmetric" in keyed.stdout, keyed.stderr
    # this module signs in dozens of times a minute from one address
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart",
                                   "FHIR_SCHED_AUTH_LOGINS_PER_MINUTE": "100000"}).start()
    try:
        token = get_token(proc.base, admin, "system/*.cruds")
        h = {"authorization": f"Bearer {token}"}
        ids = []
        for family in ("Alvarez", "Brown"):
            r = web.post(f"{proc.base}/Patient", headers=h,
                         json={"resourceType": "Patient", "name": [{"family": family}]})
            assert r.status_code == 201
            ids.append(f"Patient/{r.json()['id']}")
        add_user(url, "alice", PASSWORD, ids[0])
        add_user(url, "dr-lee", PASSWORD, "Practitioner/dr-lee")
        issuer = proc.base.removesuffix("/fhir")
        yield World(proc, issuer, token, ids[0], ids[1], _appointment(proc.base, token, ids[0]),
                    _appointment(proc.base, token, ids[1]))
    finally:
        proc.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def tokens_for(world: World, scope: str = SCOPES, user: str = "alice", **extra: str
               ) -> dict[str, Any]:
    verifier, challenge = pkce()
    b = world.browser()
    code = b.code("app-public", scope, challenge, user, PASSWORD, **extra)
    response = b.exchange("app-public", code, verifier)
    assert response.status_code == 200, response.text
    return dict(response.json())


def h(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# --- the standalone patient launch ------------------------------------------------------------
def test_a_standalone_patient_launch_gets_a_complete_token_response(world: World) -> None:
    verifier, challenge = pkce()
    b = world.browser()
    code = b.code("app-public", SCOPES, challenge, "alice", PASSWORD)
    response = b.exchange("app-public", code, verifier)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert f"Patient/{body['patient']}" == world.alice
    assert set(body["scope"].split()) == set(SCOPES.split())
    assert body["refresh_token"]
    assert body["need_patient_banner"] is False


def test_the_id_token_is_rs256_signed_and_names_the_fhir_user(world: World) -> None:
    body = tokens_for(world)
    openid = web.get(f"{world.issuer}/.well-known/openid-configuration").json()
    assert openid["issuer"] == world.issuer
    jwks = web.get(openid["jwks_uri"]).json()
    decoded = jwt.decode(body["id_token"], KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert decoded.header["alg"] == "RS256"
    assert decoded.claims["aud"] == "app-public"
    assert decoded.claims["iss"] == world.issuer
    assert decoded.claims["fhirUser"] == f"{world.server.base}/{world.alice}"


def test_the_state_is_echoed_on_the_redirect(world: World) -> None:
    _, challenge = pkce()
    b = world.browser()
    b.code("app-public", SCOPES, challenge, "alice", PASSWORD, state="opaque-Xy_9")


def test_a_confidential_app_authenticates_with_its_secret(world: World) -> None:
    verifier, challenge = pkce()
    b = world.browser()
    code = b.code("app-secret", SCOPES, challenge, "alice", PASSWORD)
    wrong = b.exchange("app-secret", code, verifier, auth=("app-secret", "wrong"))
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    code = b.code("app-secret", SCOPES, challenge, "alice", PASSWORD)
    right = b.exchange("app-secret", code, verifier, auth=("app-secret",
                                                             "s3cret-value-for-tests"))
    assert right.status_code == 200, right.text


# --- g(10): invalid PKCE, code, client, aud ----------------------------------------------------
def test_an_authorize_request_without_a_code_challenge_gets_no_code(world: World) -> None:
    response = world.browser().authorize("app-public", SCOPES, None, method=None)
    assert response.status_code == 303
    q = query_of(response.headers["location"])
    assert q["error"] == "invalid_request" and "code" not in q and q["state"] == "st-1"


def test_the_plain_pkce_method_is_refused(world: World) -> None:
    verifier, _ = pkce()
    response = world.browser().authorize("app-public", SCOPES, verifier, method="plain")
    assert response.status_code == 303
    assert query_of(response.headers["location"])["error"] == "invalid_request"


@pytest.mark.parametrize("case", ["missing", "blank", "wrong", "the challenge itself"])
def test_an_invalid_code_verifier_is_400(world: World, case: str) -> None:
    _, challenge = pkce()
    b = world.browser()
    code = b.code("app-public", SCOPES, challenge, "alice", PASSWORD)
    sent = {"missing": None, "blank": "", "wrong": pkce()[0],
            "the challenge itself": challenge}[case]
    response = b.exchange("app-public", code, sent)
    assert response.status_code in (400, 401)
    assert response.json()["error"] == "invalid_grant"


def test_a_bad_code_is_400_invalid_grant(world: World) -> None:
    verifier, _ = pkce()
    response = world.browser().exchange("app-public", "not-a-code", verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_a_code_works_once(world: World) -> None:
    verifier, challenge = pkce()
    b = world.browser()
    code = b.code("app-public", SCOPES, challenge, "alice", PASSWORD)
    assert b.exchange("app-public", code, verifier).status_code == 200
    again = b.exchange("app-public", code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_a_bad_client_id_at_the_token_endpoint_is_refused(world: World) -> None:
    verifier, challenge = pkce()
    b = world.browser()
    code = b.code("app-public", SCOPES, challenge, "alice", PASSWORD)
    response = b.exchange("no-such-app", code, verifier)
    assert response.status_code in (400, 401)
    assert response.json()["error"] == "invalid_client"


def test_an_invalid_aud_gets_no_code(world: World) -> None:
    _, challenge = pkce()
    response = world.browser().authorize("app-public", SCOPES, challenge,
                                          aud="https://another.example/fhir")
    assert response.status_code == 303
    q = query_of(response.headers["location"])
    assert "code" not in q and q["error"] == "invalid_request"


def test_an_unknown_client_or_redirect_uri_is_an_error_page_not_a_redirect(
        world: World) -> None:
    _, challenge = pkce()
    b = world.browser()
    unknown = b.authorize("no-such-app", SCOPES, challenge)
    assert unknown.status_code == 400 and "location" not in unknown.headers
    elsewhere = b.authorize("app-public", SCOPES, challenge,
                            redirect="https://attacker.example/cb")
    assert elsewhere.status_code == 400 and "location" not in elsewhere.headers
    assert "script" not in elsewhere.headers["content-security-policy"]


def test_a_denied_consent_sends_access_denied(world: World) -> None:
    _, challenge = pkce()
    b = world.browser()
    page = b.login(b.authorize("app-public", SCOPES, challenge), "alice", PASSWORD)
    done = b.consent(page, decision="deny")
    assert done.status_code == 303
    q = query_of(done.headers["location"])
    assert q["error"] == "access_denied" and q["state"] == "st-1"


def test_a_form_from_another_browser_is_refused(world: World) -> None:
    _, challenge = pkce()
    page = world.browser().authorize("app-public", SCOPES, challenge)
    intruder = world.browser()  # no flow cookie
    response = intruder.login(page, "alice", PASSWORD)
    assert response.status_code == 400


def test_five_wrong_passwords_lock_the_account(world: World) -> None:
    add_user(world.server.store, "carol", PASSWORD, world.bob)
    _, challenge = pkce()
    b = world.browser()
    page = b.authorize("app-public", SCOPES, challenge)
    for _ in range(5):
        assert b.login(page, "carol", "wrong password!").status_code == 401
    assert b.login(page, "carol", PASSWORD).status_code == 401  # locked, though right


# --- refresh and revocation -------------------------------------------------------------------
def test_a_refresh_token_is_rotated_and_works_once(world: World) -> None:
    first = tokens_for(world)
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
            "client_id": "app-public"}
    second = web.post(f"{world.issuer}/auth/token", data=form)
    assert second.status_code == 200, second.text
    assert second.json()["refresh_token"] != first["refresh_token"]
    assert second.headers["cache-control"] == "no-store"
    replay = web.post(f"{world.issuer}/auth/token", data=form)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"


def test_a_refresh_may_narrow_the_scope_but_never_widen_it(world: World) -> None:
    first = tokens_for(world)
    narrow = web.post(f"{world.issuer}/auth/token", data={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"],
        "client_id": "app-public", "scope": "patient/Patient.rs offline_access"})
    assert narrow.status_code == 200
    assert narrow.json()["scope"] == "offline_access patient/Patient.rs" or set(
        narrow.json()["scope"].split()) == {"patient/Patient.rs", "offline_access"}
    wide = web.post(f"{world.issuer}/auth/token", data={
        "grant_type": "refresh_token", "refresh_token": narrow.json()["refresh_token"],
        "client_id": "app-public", "scope": "patient/*.cruds"})
    assert wide.status_code == 400 and wide.json()["error"] == "invalid_scope"


def test_a_revoked_access_token_stops_working(world: World) -> None:
    access = tokens_for(world)["access_token"]
    assert web.get(f"{world.server.base}/{world.alice}", headers=h(access)).status_code == 200
    assert web.post(f"{world.issuer}/auth/revoke", data={"token": access}).status_code == 200
    after = web.get(f"{world.server.base}/{world.alice}", headers=h(access))
    assert after.status_code == 401
    active = web.post(f"{world.issuer}/auth/introspect", data={"token": access},
                      headers=h(world.admin)).json()
    assert active == {"active": False}


def test_a_revoked_refresh_token_cannot_be_used(world: World) -> None:
    refresh = tokens_for(world)["refresh_token"]
    assert web.post(f"{world.issuer}/auth/revoke", data={"token": refresh}).status_code == 200
    used = web.post(f"{world.issuer}/auth/token", data={
        "grant_type": "refresh_token", "refresh_token": refresh, "client_id": "app-public"})
    assert used.status_code == 400


def test_introspection_carries_the_launch_context(world: World) -> None:
    access = tokens_for(world)["access_token"]
    body = web.post(f"{world.issuer}/auth/introspect", data={"token": access},
                    headers=h(world.admin)).json()
    assert body["active"] is True
    assert f"Patient/{body['patient']}" == world.alice
    assert body["fhirUser"].endswith(world.alice)
    assert body["client_id"] == "app-public"
    assert body["exp"] > time.time()


# --- what a patient token sees and does ---------------------------------------------------------
def test_a_patient_token_reads_its_own_patient_and_not_another(world: World) -> None:
    access = tokens_for(world)["access_token"]
    assert web.get(f"{world.server.base}/{world.alice}", headers=h(access)).status_code == 200
    other = web.get(f"{world.server.base}/{world.bob}", headers=h(access))
    assert other.status_code == 403
    assert other.json()["issue"][0]["code"] == "forbidden"


def test_a_patient_token_searches_only_its_compartment(world: World) -> None:
    access = tokens_for(world)["access_token"]
    bundle = web.get(f"{world.server.base}/Appointment", headers=h(access)).json()
    ids = {e["resource"]["id"] for e in bundle.get("entry", [])}
    assert world.alice_appointment in ids
    assert world.bob_appointment not in ids
    patients = web.get(f"{world.server.base}/Patient", headers=h(access)).json()
    assert [e["resource"]["id"] for e in patients.get("entry", [])] == [
        world.alice.split("/")[1]]
    by_id = web.get(f"{world.server.base}/Appointment/{world.bob_appointment}",
                    headers=h(access))
    assert by_id.status_code == 403


def test_a_read_scope_patient_token_cannot_write(world: World) -> None:
    access = tokens_for(world)["access_token"]
    response = web.post(f"{world.server.base}/Appointment", headers=h(access), json={
        "resourceType": "Appointment", "status": "proposed",
        "participant": [{"actor": {"reference": world.alice}, "status": "needs-action"}]})
    assert response.status_code == 403


def test_a_write_scope_patient_token_writes_only_inside_its_compartment(world: World) -> None:
    access = tokens_for(world, "launch/patient patient/Appointment.cruds")["access_token"]
    own = {"resourceType": "Appointment", "status": "proposed",
           "requestedPeriod": [{"start": "2031-04-01T09:00:00Z", "end": "2031-04-01T10:00:00Z"}],
           "participant": [{"actor": {"reference": world.alice}, "status": "needs-action"}]}
    assert web.post(f"{world.server.base}/Appointment", headers=h(access),
                    json=own).status_code == 201
    foreign = {**own, "participant": [{"actor": {"reference": world.bob},
                                       "status": "needs-action"}]}
    assert web.post(f"{world.server.base}/Appointment", headers=h(access),
                    json=foreign).status_code == 403


def test_unticked_scopes_are_not_granted(world: World) -> None:
    verifier, challenge = pkce()
    b = world.browser()
    page = b.login(b.authorize("app-public", SCOPES, challenge), "alice", PASSWORD)
    done = b.consent(page, scopes=["launch/patient", "patient/Patient.rs"])
    code = query_of(done.headers["location"])["code"]
    body = b.exchange("app-public", code, verifier).json()
    assert body["scope"].split() == ["launch/patient", "patient/Patient.rs"]
    refused = web.get(f"{world.server.base}/Appointment", headers=h(body["access_token"]))
    assert refused.status_code == 403


def test_a_patient_user_is_never_granted_user_scopes(world: World) -> None:
    body = tokens_for(world, "launch/patient user/*.cruds patient/Appointment.rs")
    assert "user/*.cruds" not in body["scope"].split()
    assert web.get(f"{world.server.base}/{world.bob}",
                   headers=h(body["access_token"])).status_code == 403


# --- a practitioner: user scopes, patient picker, EHR launch -----------------------------------
def test_a_practitioner_with_user_scopes_sees_every_patient(world: World) -> None:
    body = tokens_for(world, "openid fhirUser user/Patient.rs user/Appointment.rs",
                      user="dr-lee")
    assert "patient" not in body
    bundle = web.get(f"{world.server.base}/Appointment", headers=h(body["access_token"]))
    ids = {e["resource"]["id"] for e in bundle.json().get("entry", [])}
    assert {world.alice_appointment, world.bob_appointment} <= ids


def test_a_practitioner_launching_standalone_picks_the_patient(world: World) -> None:
    body = tokens_for(world, "launch/patient patient/Appointment.rs", user="dr-lee",
                      patient=world.bob)
    assert f"Patient/{body['patient']}" == world.bob
    assert body["need_patient_banner"] is True
    bundle = web.get(f"{world.server.base}/Appointment", headers=h(body["access_token"]))
    ids = {e["resource"]["id"] for e in bundle.json().get("entry", [])}
    assert world.bob_appointment in ids and world.alice_appointment not in ids


def test_an_ehr_launch_binds_the_patient_the_ehr_has_open(world: World) -> None:
    created = web.post(f"{world.issuer}/auth/launch", headers=h(world.admin),
                       json={"patient": world.bob})
    assert created.status_code == 201
    launch = created.json()["launch"]
    body = tokens_for(world, "launch patient/Appointment.rs", user="dr-lee", launch=launch)
    assert f"Patient/{body['patient']}" == world.bob


def test_an_ehr_launch_hands_its_encounter_and_fhir_context_to_the_app_and_its_refresh(
        world: World) -> None:
    in_view = [{"reference": f"Appointment/{world.bob_appointment}"},
               {"reference": "Schedule/dr-lee-clinic", "type": "Schedule",
                "role": "https://example.org/launch-role/calendar-on-screen"},
               {"identifier": {"system": "urn:ehr:orders", "value": "ord-42"},
                "type": "ServiceRequest"}]
    created = web.post(f"{world.issuer}/auth/launch", headers=h(world.admin), json={
        "patient": world.bob, "encounter": "Encounter/enc-9", "fhirContext": in_view})
    assert created.status_code == 201, created.text
    body = tokens_for(world, "launch offline_access patient/Appointment.rs", user="dr-lee",
                      launch=created.json()["launch"])
    assert f"Patient/{body['patient']}" == world.bob
    assert body["encounter"] == "enc-9"
    assert body["fhirContext"] == in_view
    again = web.post(f"{world.issuer}/auth/token", data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"],
        "client_id": "app-public"})
    assert again.status_code == 200, again.text
    assert again.json()["encounter"] == "enc-9" and again.json()["fhirContext"] == in_view
    discovery = web.get(f"{world.server.base}/.well-known/smart-configuration").json()
    assert "context-ehr-encounter" in discovery["capabilities"]


def test_a_standalone_launch_carries_no_encounter_or_fhir_context(world: World) -> None:
    body = tokens_for(world)
    assert "encounter" not in body and "fhirContext" not in body


@pytest.mark.parametrize(("launch", "names"), [
    ({"patient": "Bob"}, "patient"),
    ({"patient": "Patient/b", "encounter": "enc-9"}, "encounter"),
    ({"fhirContext": [{"reference": "Patient/b"}]}, "patient member"),
    ({"fhirContext": [{"reference": "https://elsewhere/Appointment/1"}]}, "relative"),
    ({"fhirContext": [{"reference": "Appointment/1", "canonical": "http://x/y"}]},
     "exactly one"),
    ({"fhirContext": [{"reference": "Appointment/1", "role": "launch"}]}, "role"),
    ({"fhirContext": [{"reference": "Appointment/1", "colour": "red"}]}, "colour"),
    ({"fhirContext": [{"reference": "Appointment/1"}] * 17}, "at most 16"),
    ({"fhirContext": "Appointment/1"}, "array"),
    ({}, "name what the EHR has open"),
    ([], "JSON object"),
])
def test_a_launch_with_a_malformed_context_is_refused_naming_the_member(
        world: World, launch: Any, names: str) -> None:
    created = web.post(f"{world.issuer}/auth/launch", headers=h(world.admin), json=launch)
    assert created.status_code == 400, created.text
    assert names in created.json()["issue"][0]["diagnostics"]


# --- a confidential-asymmetric app (private_key_jwt in the code flow) ----------------------------
def _keyed_code(world: World) -> tuple[str, str]:
    verifier, challenge = pkce()
    code = world.browser().code("app-keys", SCOPES, challenge, "alice", PASSWORD)
    return code, verifier


def _keyed_form(world: World, code: str, verifier: str, **changes: Any) -> dict[str, str]:
    token_url = f"{world.issuer}/auth/token"
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": "app-keys",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": KEYED_APP.assertion(token_url, **changes)}


def test_an_app_with_keys_proves_itself_with_a_client_assertion_in_the_code_flow(
        world: World) -> None:
    code, verifier = _keyed_code(world)
    response = web.post(f"{world.issuer}/auth/token", data=_keyed_form(world, code, verifier))
    assert response.status_code == 200, response.text
    body = response.json()
    assert f"Patient/{body['patient']}" == world.alice
    again = web.post(f"{world.issuer}/auth/token", data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"],
        "client_id": "app-keys",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": KEYED_APP.assertion(f"{world.issuer}/auth/token")})
    assert again.status_code == 200, again.text


def test_an_app_with_keys_is_refused_without_its_assertion(world: World) -> None:
    code, verifier = _keyed_code(world)
    response = world.browser().exchange("app-keys", code, verifier)
    assert response.status_code in (400, 401)
    assert response.json()["error"] == "invalid_client"
    assert "client_assertion" in response.json()["error_description"]


@pytest.mark.parametrize(("changes", "says"), [
    ({"aud": "https://elsewhere.example/token"}, "aud"),
    ({"exp": int(time.time()) - 600}, "expired"),
    ({"_key": BackendClient.new("app-keys", "RS384").key}, "signature"),
])
def test_an_app_assertion_that_does_not_hold_is_refused(world: World, changes: dict[str, Any],
                                                         says: str) -> None:
    code, verifier = _keyed_code(world)
    response = web.post(f"{world.issuer}/auth/token",
                        data=_keyed_form(world, code, verifier, **changes))
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == "invalid_client"
    assert says in response.json()["error_description"]


def test_an_app_assertion_is_used_once(world: World) -> None:
    code, verifier = _keyed_code(world)
    form = _keyed_form(world, code, verifier)
    assert web.post(f"{world.issuer}/auth/token", data=form).status_code == 200
    code2, verifier2 = _keyed_code(world)
    replay = web.post(f"{world.issuer}/auth/token", data={
        **form, "code": code2, "code_verifier": verifier2})
    assert replay.status_code in (400, 401) and "replay" in replay.json()["error_description"]


def test_an_app_with_keys_gets_no_client_credentials_token(world: World) -> None:
    app_form = {"grant_type": "client_credentials", "scope": "system/*.rs",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": KEYED_APP.assertion(f"{world.issuer}/auth/token")}
    refused = web.post(f"{world.issuer}/auth/token", data=app_form)
    assert refused.status_code in (400, 401) and refused.json()["error"] == "invalid_client"


def test_an_unknown_launch_is_refused(world: World) -> None:
    _, challenge = pkce()
    response = world.browser().authorize("app-public", "launch patient/Appointment.rs",
                                         challenge, launch="nope")
    assert response.status_code == 303
    assert query_of(response.headers["location"])["error"] == "invalid_request"


# --- the authorization server's audit trail ---------------------------------------------------
def _auth_events(world: World, subtype: str, want: Any, count: int = 1
                 ) -> list[dict[str, Any]]:
    token = get_token(world.server.base, AUDITOR, "system/AuditEvent.rs")
    deadline = time.monotonic() + 10
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        bundle = web.get(f"{world.server.base}/AuditEvent", headers=h(token),
                         params={"subtype": subtype, "_count": "1000"}).json()
        found = [e["resource"] for e in bundle.get("entry", []) if want(e["resource"])]
        if len(found) >= count:
            break
        time.sleep(0.2)
    return found


def test_sign_ins_consent_and_the_token_are_audited_without_password_or_username(
        world: World) -> None:
    _, challenge = pkce()
    b = world.browser()
    page = b.authorize("app-public", SCOPES, challenge, state="audit-1")
    assert b.login(page, "alice", "a wrong password!").status_code == 401
    assert b.login(page, "alice-typo-username", PASSWORD).status_code == 401
    tokens_for(world)
    refused = _auth_events(world, "auth/login", lambda e: e["outcome"] == "4", 2)
    assert len(refused) >= 2
    signed_in = _auth_events(world, "auth/login", lambda e: e["outcome"] == "0" and any(
        world.alice in json.dumps(a["who"]) for a in e["agent"]))
    assert signed_in and signed_in[0]["type"]["code"] == "110114"
    consent = _auth_events(world, "auth/consent", lambda e: "allowed" in e["outcomeDesc"])
    assert consent
    issued = _auth_events(world, "auth/token", lambda e: e["outcome"] == "0" and any(
        world.alice in json.dumps(x.get("what", {})) for x in e.get("entity", [])))
    assert issued and "authorization_code" in issued[0]["outcomeDesc"]
    text = json.dumps(refused + signed_in + consent + issued)
    assert PASSWORD not in text and "a wrong password!" not in text
    assert "alice-typo-username" not in text and '"alice"' not in text


def test_an_ehr_launch_is_audited_for_its_patient(world: World) -> None:
    created = web.post(f"{world.issuer}/auth/launch", headers=h(world.admin),
                       json={"patient": world.bob})
    assert created.status_code == 201
    found = _auth_events(world, "auth/launch", lambda e: any(
        world.bob in json.dumps(x.get("what", {})) for x in e.get("entity", [])))
    assert found and found[0]["action"] == "C"
    assert created.json()["launch"] not in json.dumps(found)


# --- a third-party client: Python fhirclient ----------------------------------------------------
def test_python_fhirclient_completes_a_standalone_launch_with_pkce(world: World) -> None:
    from fhirclient import client
    from fhirclient.models.patient import Patient

    smart = client.FHIRClient(settings={
        "app_id": "app-public", "api_base": world.server.base, "redirect_uri": REDIRECT,
        "scope": "openid fhirUser patient/Patient.rs patient/Appointment.rs"})
    url = smart.authorize_url
    assert "code_challenge=" in url and "code_challenge_method=S256" in url
    b = world.browser()
    page = b.http.get(url)
    assert page.status_code == 200, page.text
    consent = b.login(page, "alice", PASSWORD)
    done = b.consent(consent)
    assert done.status_code == 303
    smart.handle_callback(done.headers["location"])
    assert smart.ready
    assert f"Patient/{smart.patient_id}" == world.alice
    patient = Patient.read(smart.patient_id, smart.server)
    assert patient.name[0].family == "Alvarez"


def test_a_patient_token_finds_time_only_for_its_own_patient(world: World) -> None:
    access = tokens_for(world, "launch/patient patient/Appointment.cruds")["access_token"]
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueDateTime": "2031-05-01T08:00:00Z"},
        {"name": "end", "valueDateTime": "2031-05-02T18:00:00Z"},
        {"name": "patient", "valueReference": {"reference": world.bob}}]}
    other = web.post(f"{world.server.base}/Appointment/$find", headers=h(access), json=params)
    assert other.status_code == 403, other.text
    params["parameter"][2] = {"name": "patient", "valueReference": {"reference": world.alice}}
    own = web.post(f"{world.server.base}/Appointment/$find", headers=h(access), json=params)
    assert own.status_code == 200, own.text


def test_a_patient_token_cannot_book_for_another_patient(world: World) -> None:
    access = tokens_for(world, "launch/patient patient/Appointment.cruds")["access_token"]
    appointment = {"resourceType": "Appointment", "status": "proposed",
                   "start": "2031-06-01T09:00:00Z", "end": "2031-06-01T09:30:00Z",
                   "participant": [{"actor": {"reference": world.bob}, "status": "accepted"}]}
    response = web.post(f"{world.server.base}/Appointment/$book", headers=h(access), json={
        "resourceType": "Parameters",
        "parameter": [{"name": "appointment-resource", "resource": appointment}]})
    assert response.status_code == 403, response.text


def test_sign_in_attempts_from_one_address_are_rate_limited(world: World, tmp_path: Path
                                                            ) -> None:
    url = f"sqlite:///{tmp_path}/rate.db"
    assert register(url, "app-rate", SCOPES, "--redirect-uri", REDIRECT, "--public"
                    ).returncode == 0
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart",
                                   "FHIR_SCHED_AUTH_LOGINS_PER_MINUTE": "5"}).start()
    try:
        _, challenge = pkce()
        b = Browser(proc.base.removesuffix("/fhir"), proc.base)
        page = b.authorize("app-rate", SCOPES, challenge)
        statuses = [b.login(page, f"nobody{n}", "wrong password!").status_code
                    for n in range(7)]
        assert statuses == [401] * 5 + [429] * 2
    finally:
        proc.stop()


def test_every_launch_id_the_server_hands_out_is_accepted(world: World) -> None:
    # launch ids are URL-safe base64: '_' and '-' among them (once refused, one launch in five)
    for _ in range(12):
        created = web.post(f"{world.issuer}/auth/launch", headers=h(world.admin),
                           json={"patient": world.bob})
        _, challenge = pkce()
        page = world.browser().authorize("app-public", "launch patient/Appointment.rs",
                                         challenge, launch=created.json()["launch"])
        assert page.status_code == 200, page.headers.get("location")
