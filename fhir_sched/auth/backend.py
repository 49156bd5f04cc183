"""SMART Backend Services: ``client_credentials`` with a ``private_key_jwt`` client assertion.

Checks, in the order a failure is reported (SMART backend-services.md and
client-confidential-asymmetric.md; RFC 7523):

1. ``grant_type`` is ``client_credentials`` (else ``unsupported_grant_type``);
2. ``client_assertion_type`` is the JWT-bearer URN and a ``client_assertion`` is present;
3. the assertion's header names ``alg`` RS384 or ES384 (never ``none`` or an HMAC, so a public
   key can never be used as a shared secret) and a ``kid``;
4. ``iss`` = ``sub`` = a registered backend client; a ``jku`` header, if any, is the registered
   JWKS URL;
5. exactly one key of the client's JWKS has that ``kid`` and suits ``alg``, and the signature
   verifies with it;
6. ``aud`` is this token endpoint, ``exp`` is in the future and at most five minutes ahead,
   ``jti`` is present and not seen before for this client;
7. the requested scopes are within the client's registered ones (``invalid_scope`` otherwise).

The token lives ``LIFETIME`` seconds (SMART: SHOULD NOT exceed 300) and no refresh token is
issued.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from ..scopes import ScopeError, grantable
from .errors import OAuthError, invalid_client
from .jwks import JwksCache, JwksError
from .registry import Client, Registry
from .tokens import Tokens

# The front-desk override: book past capacity or availability (the Appointment's overbooked
# extension). Granted only to clients registered for it, never with a patient-only token.
OVERBOOK_SCOPE = "fhir-sched/overbook"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = {"RS384": "RSA", "ES384": "EC"}
MAX_ASSERTION_SECONDS = 300
LEEWAY = 30
LIFETIME = 300


class BackendServices:
    def __init__(self, registry: Registry, tokens: Tokens, token_url: str,
                 jwks: JwksCache | None = None) -> None:
        self.registry = registry
        self.tokens = tokens
        self.token_url = token_url
        self.jwks = jwks or JwksCache()

    async def token(self, form: dict[str, str]) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type",
                             f"grant_type {form.get('grant_type')!r} is not client_credentials")
        client, _claims = await self.authenticate(form)
        requested = form.get("scope", "").strip()
        if not requested:
            raise OAuthError("invalid_scope", "a scope is required (for example system/*.rs)")
        try:
            granted = grantable(requested, client.scope)
        except ScopeError as exc:
            raise OAuthError("invalid_scope", str(exc)) from None
        granted = [s for s in granted if s.startswith("system/") or s == OVERBOOK_SCOPE]
        if not any(s.startswith("system/") for s in granted):
            raise OAuthError("invalid_scope", f"none of the requested scopes ({requested}) is "
                             f"within what client {client.client_id} is registered for "
                             f"({client.scope})")
        scope = " ".join(granted)
        token, expires_in = self.tokens.issue(subject=client.client_id,
                                              client_id=client.client_id, scope=scope,
                                              lifetime=LIFETIME)
        return {"access_token": token, "token_type": "bearer", "expires_in": expires_in,
                "scope": scope}

    async def authenticate(self, form: dict[str, str], kinds: tuple[str, ...] = ("backend",)
                           ) -> tuple[Client, dict[str, Any]]:
        """The client a ``private_key_jwt`` assertion proves, with the assertion's claims:
        a backend client for ``client_credentials``, an asymmetric app for the code flow."""
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise invalid_client(f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion", "")
        if not assertion:
            raise invalid_client("client_assertion is missing")
        try:
            compact = extract_compact(assertion.encode())
            header = compact.headers()
            unverified = orjson.loads(compact.payload)
        except (JoseError, ValueError, orjson.JSONDecodeError):
            raise invalid_client("client_assertion is not a signed JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise invalid_client(f"client_assertion alg {alg!r} is not accepted: sign with "
                                 "RS384 or ES384")
        kid = header.get("kid")
        if not kid:
            raise invalid_client("client_assertion has no kid in its header")
        if not isinstance(unverified, dict):
            raise invalid_client("client_assertion claims are not a JSON object")
        iss, sub = unverified.get("iss"), unverified.get("sub")
        if not iss or iss != sub:
            raise invalid_client("client_assertion iss and sub must both be the client_id")
        if form.get("client_id") not in (None, "", iss):
            raise invalid_client("client_id does not match the assertion's iss")
        client = await self.registry.client(str(iss))
        if client is None or client.kind not in kinds:
            what = "backend client" if kinds == ("backend",) else "app with keys"
            raise invalid_client(f"no {what} {iss!r} is registered")
        key = await self._key(client, header, str(kid), alg)
        try:
            claims = jwt.decode(assertion, key, algorithms=[alg]).claims
        except (JoseError, ValueError):
            raise invalid_client("client_assertion signature does not verify with the "
                                 f"client's key {kid!r}") from None
        now = int(time.time())
        self._check_claims(claims, now)
        if not await self.registry.take_jti(client.client_id, str(claims["jti"]),
                                            int(claims["exp"]) + LEEWAY, now):
            raise invalid_client("client_assertion jti was used before (a replay)")
        return client, claims

    async def _key(self, client: Client, header: dict[str, Any], kid: str, alg: str) -> Any:
        jku = header.get("jku")
        if jku is not None and jku != client.jwks_url:
            raise invalid_client("client_assertion jku is not the client's registered JWKS URL")
        jwks = await self._jwks(client)
        matches = _matching(jwks, kid, alg)
        if not matches and client.jwks_url:  # a rotation the cache has not seen yet
            matches = _matching(await self._jwks(client, refresh=True), kid, alg)
        if len(matches) != 1:
            raise invalid_client(f"the client's JWKS has {len(matches)} keys with kid {kid!r} "
                                 f"for {alg}; exactly one is needed")
        try:
            return KeySet.import_key_set({"keys": matches}).keys[0]
        except (JoseError, ValueError, KeyError, TypeError):
            raise invalid_client(f"the client's key {kid!r} cannot be read") from None

    async def _jwks(self, client: Client, refresh: bool = False) -> dict[str, Any]:
        if client.jwks is not None:
            return client.jwks
        if client.jwks_url is None:
            raise invalid_client(f"client {client.client_id} has no keys registered")
        try:
            return await self.jwks.get(client.jwks_url, refresh=refresh)
        except JwksError as exc:
            raise invalid_client(str(exc)) from None

    def _check_claims(self, claims: dict[str, Any], now: int) -> None:
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if self.token_url not in auds:
            raise invalid_client(f"client_assertion aud must be the token endpoint "
                                 f"{self.token_url}")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise invalid_client("client_assertion has no numeric exp")
        if exp + LEEWAY < now:
            raise invalid_client("client_assertion has expired")
        if exp > now + MAX_ASSERTION_SECONDS + LEEWAY:
            raise invalid_client("client_assertion exp is more than five minutes ahead")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf > now + LEEWAY:
            raise invalid_client("client_assertion is not valid yet (nbf)")
        if not claims.get("jti"):
            raise invalid_client("client_assertion has no jti")


def _matching(jwks: dict[str, Any], kid: str, alg: str) -> list[dict[str, Any]]:
    kty = ALGORITHMS[alg]
    return [k for k in jwks.get("keys") or [] if isinstance(k, dict) and k.get("kid") == kid
            and k.get("kty") == kty and k.get("alg") in (None, alg)
            and k.get("use") in (None, "sig")]
