"""The authorization code flow with PKCE: standalone and EHR launch, refresh, revocation.

Steps (SMART App Launch 2.2, app-launch.md; RFC 6749 4.1, RFC 7636):

1. ``authorize``: the app's request is checked. An unknown client or a redirect URI it did not
   register is an error page, never a redirect (an open redirector otherwise). Past that, a
   problem goes back to the app as ``error=...&state=...``. PKCE is required of every client
   and only ``S256`` is accepted (SMART: SHALL NOT support ``plain``); ``aud`` must be this
   server's FHIR base. The checked request is kept as a *pending* flow (10 minutes).
2. ``login``: the user signs in (``users``).
3. ``consent``: the user allows or denies, may untick scopes, and a practitioner launching
   standalone with ``launch/patient`` picks the patient. An allowed flow becomes a one-time
   code (60 seconds) bound to the client, redirect URI and code challenge.
4. ``exchange``: the code, its verifier and the client's credentials give the token response:
   access token, ``patient`` and other context, an ``id_token`` for ``openid fhirUser``, and a
   refresh token for ``offline_access``/``online_access``.
5. ``refresh``: a refresh token is used once and replaced (rotation); a narrower ``scope`` may
   be asked for, never a wider one.

Who gets which scopes: a Patient user is only ever granted ``patient/`` scopes, confined to
their own compartment (a ``user/`` scope for a patient would mean the same, and is dropped).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt

from ..scopes import Grant, ScopeError, grantable
from .errors import OAuthError, invalid_client
from .launch_context import LaunchContext
from .registry import Client, Registry
from .tokens import InvalidToken, Tokens
from .users import User, Users

PENDING = "auth/pending/"
CODE = "auth/code/"
REFRESH = "auth/refresh/"
LAUNCH = "auth/launch/"
REVOKED = "auth/revoked/"
PENDING_SECONDS = 600
CODE_SECONDS = 60
LAUNCH_SECONDS = 3600
ACCESS_SECONDS = 3600
OFFLINE_SECONDS = 30 * 86400
ONLINE_SECONDS = 8 * 3600
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_ID = re.compile(r"^[A-Za-z0-9_\-.]{1,64}$")  # launch ids are URL-safe base64


class ErrorPage(Exception):
    """Shown to the user; the app is not redirected to."""


class BackToApp(Exception):
    """An error sent back to the app's redirect URI."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


@dataclass(frozen=True, slots=True)
class Pending:
    id: str
    doc: dict[str, Any]

    @property
    def scopes(self) -> list[str]:
        return list(self.doc["scopes"])

    @property
    def user(self) -> str | None:
        return self.doc.get("user")

    @property
    def needs_patient_pick(self) -> bool:
        """A practitioner launching standalone with launch/patient picks a patient."""
        return (self.doc.get("launch_patient") is None and "launch/patient" in self.scopes
                and not str(self.doc.get("fhir_user", "")).startswith("Patient/"))


def _with_query(url: str, params: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _error_url(redirect: str, state: str, error: str, description: str) -> str:
    """An RFC 6749 4.1.2.1 error sent back to the app, with its state."""
    out = {"error": error, "error_description": description}
    if state:
        out["state"] = state
    return _with_query(redirect, out)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                    ).rstrip(b"=").decode()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CodeFlow:
    def __init__(self, registry: Registry, users: Users, tokens: Tokens, audience: str,
                 issuer: str) -> None:
        self.registry = registry
        self.users = users
        self.tokens = tokens
        self.audience = audience
        self.issuer = issuer

    # -- 1. authorize ---------------------------------------------------------------------------
    async def authorize(self, params: dict[str, str]) -> Pending:
        client_id = params.get("client_id", "")
        client = await self.registry.client(client_id) if client_id else None
        if client is None or client.kind == "backend":
            raise ErrorPage(f"No app with client_id {client_id!r} is registered here.")
        redirect = params.get("redirect_uri") or (
            client.redirect_uris[0] if len(client.redirect_uris) == 1 else "")
        if redirect not in client.redirect_uris:
            raise ErrorPage("The redirect_uri is not one this app registered.")
        state = params.get("state", "")

        def back(error: str, description: str) -> BackToApp:
            return BackToApp(_error_url(redirect, state, error, description))

        if params.get("response_type") != "code":
            raise back("unsupported_response_type", "response_type must be code")
        if params.get("aud", "").rstrip("/") != self.audience:
            raise back("invalid_request", f"aud must be this FHIR server, {self.audience}")
        if not params.get("code_challenge"):
            raise back("invalid_request", "PKCE is required: send code_challenge with "
                       "code_challenge_method=S256")
        if params.get("code_challenge_method") != "S256":
            raise back("invalid_request", "code_challenge_method must be S256 (plain is not "
                       "supported)")
        try:
            scopes = grantable(params.get("scope", ""), client.scope)
        except ScopeError as exc:
            raise back("invalid_scope", str(exc)) from None
        scopes = [s for s in scopes if not s.startswith("system/")]
        if not Grant.parse(scopes).resource:
            raise back("invalid_scope", "none of the requested scopes is registered for this "
                       "app")
        launch_patient = None
        launched: dict[str, Any] = {}
        if params.get("launch"):
            launch = await self.registry.get_doc(LAUNCH + params["launch"]) if _ID.match(
                params["launch"]) else None
            if launch is None or launch["expires"] < time.time():
                raise back("invalid_request", "the launch parameter names no current launch")
            launch_patient = launch.get("patient")
            launched = {"encounter": launch.get("encounter"),
                        "fhir_context": launch.get("fhir_context") or []}
        elif "launch" in scopes:
            raise back("invalid_request", "the launch scope needs a launch parameter (EHR "
                       "launch)")
        pending = Pending(secrets.token_urlsafe(24), {
            "client_id": client.client_id, "redirect_uri": redirect, "scopes": scopes,
            "state": state, "code_challenge": params["code_challenge"],
            "nonce": params.get("nonce"), "launch_patient": launch_patient,
            "launched": launched, "expires": time.time() + PENDING_SECONDS})
        await self.registry.put_doc(PENDING + pending.id, pending.doc)
        return pending

    async def pending(self, pending_id: str) -> Pending:
        doc = await self.registry.get_doc(PENDING + pending_id) if re.fullmatch(
            r"[A-Za-z0-9_\-]{16,64}", pending_id or "") else None
        if doc is None or doc["expires"] < time.time():
            raise ErrorPage("This sign-in has expired or is unknown; start again from the app.")
        return Pending(pending_id, doc)

    # -- 2. login ---------------------------------------------------------------------------
    async def login(self, pending: Pending, username: str, password: str) -> User | None:
        user = await self.users.login(username, password)
        if user is not None:
            doc = {**pending.doc, "user": user.username, "fhir_user": user.fhir_user}
            await self.registry.put_doc(PENDING + pending.id, doc)
        return user

    # -- 3. consent ---------------------------------------------------------------------------
    async def consent(self, pending: Pending, decision: str, chosen: list[str] | None,
                      patient_pick: str | None) -> str:
        """The URL to send the browser to: the app's redirect with a code or an error."""
        doc = await self.registry.take_doc(PENDING + pending.id)
        if doc is None or doc.get("user") is None:
            raise ErrorPage("This sign-in has expired or is unknown; start again from the app.")
        state = doc.get("state") or ""
        redirect = str(doc["redirect_uri"])

        def back(error: str, description: str) -> str:
            return _error_url(redirect, state, error, description)

        if decision != "allow":
            return back("access_denied", "the user denied access")
        scopes = [s for s in doc["scopes"] if chosen is None or s in chosen]
        fhir_user = str(doc["fhir_user"])
        patient = doc.get("launch_patient")
        if fhir_user.startswith("Patient/"):
            scopes = [s for s in scopes if not s.startswith("user/")]
            patient = fhir_user
        elif patient is None and "launch/patient" in scopes:
            if not patient_pick or not re.fullmatch(r"(Patient/)?[A-Za-z0-9\-.]{1,64}",
                                                    patient_pick):
                return back("access_denied", "no patient was chosen")
            patient = patient_pick if patient_pick.startswith("Patient/") else (
                f"Patient/{patient_pick}")
            rec = await self.registry.store.get("Patient", patient.split("/", 1)[1])
            if rec is None or rec.deleted:
                return back("access_denied", f"{patient} does not exist")
        grant = Grant.parse(scopes)
        if not grant.resource:
            return back("access_denied", "no resource scope was allowed")
        if any(s.level == "patient" for s in grant.resource) and patient is None:
            return back("invalid_scope", "patient/ scopes need a patient: ask for "
                        "launch/patient, or launch from the EHR")
        code = secrets.token_urlsafe(32)
        await self.registry.put_doc(CODE + _hash(code), {
            "client_id": doc["client_id"], "redirect_uri": redirect, "scopes": scopes,
            "code_challenge": doc["code_challenge"], "patient": patient,
            "fhir_user": fhir_user, "user": doc["user"], "nonce": doc.get("nonce"),
            "launched": doc.get("launched") or {}, "expires": time.time() + CODE_SECONDS})
        out = {"code": code}
        if state:
            out["state"] = state
        return _with_query(redirect, out)

    # -- 4. the token endpoint ------------------------------------------------------------
    async def authenticate(self, form: dict[str, str], basic: tuple[str, str] | None) -> Client:
        """A public client names itself; a confidential one proves its secret (HTTP Basic or
        in the form)."""
        client_id = basic[0] if basic else form.get("client_id", "")
        client = await self.registry.client(client_id) if client_id else None
        if client is None or client.kind == "backend":
            raise invalid_client(f"no app {client_id!r} is registered")
        if client.kind == "asymmetric":
            raise invalid_client(f"app {client_id!r} authenticates with a private_key_jwt "
                                 "client_assertion")
        if client.kind == "confidential":
            secret = basic[1] if basic else form.get("client_secret", "")
            if not secret or not client.secret_matches(secret):
                raise OAuthError("invalid_client", "the client secret is wrong",
                                 401 if basic else 400)
        return client

    async def exchange(self, form: dict[str, str], client: Client) -> dict[str, Any]:
        code = form.get("code", "")
        doc = await self.registry.take_doc(CODE + _hash(code)) if code else None
        if doc is None or doc["expires"] < time.time():
            raise OAuthError("invalid_grant", "the code is unknown, used or expired")
        if doc["client_id"] != client.client_id:
            raise OAuthError("invalid_grant", "the code was issued to another client")
        if form.get("redirect_uri") != doc["redirect_uri"]:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorize request")
        verifier = form.get("code_verifier", "")
        if not _VERIFIER.match(verifier):
            raise OAuthError("invalid_grant", "code_verifier is missing or malformed (43-128 "
                             "unreserved characters)")
        if not secrets.compare_digest(s256(verifier), str(doc["code_challenge"])):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        return await self._respond(client, doc, list(doc["scopes"]))

    async def refresh(self, form: dict[str, str], client: Client) -> dict[str, Any]:
        token = form.get("refresh_token", "")
        doc = await self.registry.take_doc(REFRESH + _hash(token)) if token else None
        if doc is None or doc["expires"] < time.time():
            raise OAuthError("invalid_grant", "the refresh token is unknown, used or expired")
        if doc["client_id"] != client.client_id:
            raise OAuthError("invalid_grant", "the refresh token was issued to another client")
        scopes = list(doc["scopes"])
        if form.get("scope"):
            asked = form["scope"].split()
            if not set(asked) <= set(scopes):
                raise OAuthError("invalid_scope", "a refresh may narrow the scopes, never widen "
                                 "them")
            scopes = [s for s in scopes if s in asked]
        return await self._respond(client, doc, scopes)

    async def _respond(self, client: Client, doc: dict[str, Any], scopes: list[str]
                       ) -> dict[str, Any]:
        grant = Grant.parse(scopes)
        resource_scope = " ".join(sorted(s.text for s in grant.resource))
        patient = doc.get("patient")
        fhir_user = doc.get("fhir_user")
        access, expires_in = self.tokens.issue(
            subject=str(doc["user"]), client_id=client.client_id, scope=resource_scope,
            lifetime=ACCESS_SECONDS, patient=patient,
            fhir_user=f"{self.audience}/{fhir_user}" if fhir_user else None)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                "expires_in": expires_in, "scope": " ".join(scopes)}
        if patient:
            body["patient"] = str(patient).removeprefix("Patient/")
            body["need_patient_banner"] = not str(fhir_user).startswith("Patient/")
        launched = doc.get("launched") or {}
        if launched.get("encounter"):
            body["encounter"] = str(launched["encounter"]).removeprefix("Encounter/")
        if launched.get("fhir_context"):
            body["fhirContext"] = launched["fhir_context"]
        if "openid" in scopes and ("fhirUser" in scopes or "profile" in scopes):
            body["id_token"] = await self._id_token(client, doc)
        if "offline_access" in scopes or "online_access" in scopes:
            refresh = secrets.token_urlsafe(32)
            lifetime = OFFLINE_SECONDS if "offline_access" in scopes else ONLINE_SECONDS
            await self.registry.put_doc(REFRESH + _hash(refresh), {
                "client_id": client.client_id, "scopes": scopes, "patient": patient,
                "fhir_user": fhir_user, "user": doc["user"], "launched": launched,
                "expires": time.time() + lifetime})
            body["refresh_token"] = refresh
        return body

    async def _id_token(self, client: Client, doc: dict[str, Any]) -> str:
        keys = await self.registry.with_id_token_key()
        self.tokens.keys = keys  # so the JWKS this process serves carries the new key at once
        key = next(k for k in keys if k.alg == "RS256")
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "sub": str(doc["user"]),
                                  "aud": client.client_id, "iat": now, "exp": now + 3600,
                                  "fhirUser": f"{self.audience}/{doc['fhir_user']}"}
        if doc.get("nonce"):
            claims["nonce"] = doc["nonce"]
        return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key,
                          algorithms=["RS256"])

    # -- EHR launch ------------------------------------------------------------------------
    async def new_launch(self, context: LaunchContext) -> str:
        """A launch id bound to what the EHR has open; its context reaches the app with the
        access token (and again with each refresh)."""
        launch = secrets.token_urlsafe(16)
        await self.registry.put_doc(LAUNCH + launch, {
            **context.doc(), "expires": time.time() + LAUNCH_SECONDS})
        return launch

    # -- revocation ------------------------------------------------------------------------
    async def revoke(self, token: str) -> None:
        """RFC 7009: revoking an unknown token is not an error."""
        if await self.registry.take_doc(REFRESH + _hash(token)) is not None:
            return
        await self.tokens_revoke(token)

    async def tokens_revoke(self, token: str) -> None:
        try:
            claims = self.tokens.verify(token)
        except InvalidToken:  # not a live token of ours: nothing to revoke
            return
        self.tokens.revoked.add(claims.jti)
        await self.registry.put_doc(f"{REVOKED}{claims.jti}", {"expires": claims.expires})

