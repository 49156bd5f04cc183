"""Access tokens: JWTs the embedded server signs, and their verification on every request.

An access token is an ES256 JWT (RFC 9068 shape: ``iss``, ``sub``, ``aud``, ``exp``, ``iat``,
``jti``, ``client_id``, ``scope``, plus SMART's ``patient`` and ``fhirUser`` when there is
one). Self-contained tokens keep the read path free of a store lookup; a verified token is
cached by its bytes until it expires, so after the first request a check is a dict lookup and
a clock comparison (the issue's target: authenticated reads at >= 90% of anonymous ones).

Revocation is checked against an in-process set that the revocation endpoint fills; tokens live
at most ``MAX_LIFETIME`` seconds, which bounds what a revoked token seen by another process
could still do.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

ACCESS_ALG = "ES256"
MAX_LIFETIME = 3600
CACHE_SIZE = 10_000
LEEWAY = 30  # seconds of clock skew allowed on exp / nbf


class InvalidToken(Exception):
    """The bearer token cannot be used; the message says why (sent in WWW-Authenticate)."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str
    client_id: str
    scope: str
    expires: int
    jti: str
    patient: str | None = None
    fhir_user: str | None = None
    issuer: str = ""

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> TokenClaims:
        patient = claims.get("patient")
        return cls(
            subject=str(claims.get("sub", "")), client_id=str(claims.get("client_id", "")),
            scope=str(claims.get("scope", "")), expires=int(claims["exp"]),
            jti=str(claims.get("jti", "")),
            patient=f"Patient/{patient}" if patient and "/" not in str(patient) else patient,
            fhir_user=claims.get("fhirUser"), issuer=str(claims.get("iss", "")))


class Tokens:
    """Issues and verifies this server's access tokens."""

    def __init__(self, keys: KeySet, issuer: str, audience: str) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self._cache: OrderedDict[str, TokenClaims] = OrderedDict()
        self.revoked: set[str] = set()

    def _signing_key(self) -> Any:
        for key in self.keys:
            if key.alg == ACCESS_ALG:
                return key
        raise RuntimeError("no ES256 signing key")  # pragma: no cover - made with the keys

    def issue(self, *, subject: str, client_id: str, scope: str, lifetime: int,
              patient: str | None = None, fhir_user: str | None = None,
              max_lifetime: int = MAX_LIFETIME) -> tuple[str, int]:
        """(token, expires_in); ``max_lifetime`` is raised only for the demo's token."""
        now = int(time.time())
        lifetime = min(lifetime, max_lifetime)
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": subject, "aud": self.audience, "iat": now,
            "exp": now + lifetime, "jti": secrets.token_hex(16), "client_id": client_id,
            "scope": scope,
        }
        if patient:
            claims["patient"] = patient.removeprefix("Patient/")
        if fhir_user:
            claims["fhirUser"] = fhir_user
        key = self._signing_key()
        token = jwt.encode({"alg": ACCESS_ALG, "kid": key.kid, "typ": "at+jwt"}, claims, key)
        return token, lifetime

    def verify(self, token: str) -> TokenClaims:
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires + LEEWAY < now:
                self._cache.pop(token, None)
                raise InvalidToken("the access token has expired")
            if cached.jti in self.revoked:
                raise InvalidToken("the access token was revoked")
            return cached
        try:
            decoded = jwt.decode(token, self.keys, algorithms=[ACCESS_ALG])
        except (JoseError, ValueError) as exc:
            raise InvalidToken(f"the access token is not one this server issued ({exc})"
                               ) from None
        claims = decoded.claims
        try:
            registry = jwt.JWTClaimsRegistry(
                leeway=LEEWAY, iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience}, exp={"essential": True})
            registry.validate(claims)
        except JoseError as exc:
            raise InvalidToken(f"the access token is not valid here ({exc})") from None
        found = TokenClaims.from_claims(claims)
        if found.jti in self.revoked:
            raise InvalidToken("the access token was revoked")
        self._cache[token] = found
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return found

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self.keys]}
