"""Bearer tokens from another authorization server (``--trust-issuer``): Keycloak, Okta, an EHR.

A JWT whose ``iss`` is a trusted issuer is verified against that issuer's keys: its discovery
document (``.well-known/openid-configuration``, else ``.well-known/smart-configuration``) names
the ``jwks_uri``; the key set is cached as its ``Cache-Control`` allows and fetched again when a
token names a ``kid`` the cached set lacks (the issuer rotated its keys). Only asymmetric
algorithms are accepted, the ``aud`` must be one this server accepts (``--trust-audience``,
default its own FHIR base), and ``exp`` is required. Scopes come from ``scope`` (a string) or
``scp`` (a list, as Okta and Azure send them); ``patient`` and ``fhirUser`` as SMART defines.
A verified token is cached by its bytes until it expires, as the embedded server's are.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .jwks import FETCH_TIMEOUT, JwksCache, JwksError
from .tokens import CACHE_SIZE, LEEWAY, InvalidToken, TokenClaims

ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384")
_KTY = {"R": "RSA", "P": "RSA", "E": "EC"}


class TrustedIssuers:
    def __init__(self, issuers: list[str], audiences: list[str],
                 jwks: JwksCache | None = None) -> None:
        self.issuers = {i.rstrip("/") for i in issuers if i}
        self.audiences = [a.rstrip("/") for a in audiences if a]
        self.jwks = jwks or JwksCache()
        self._jwks_uri: dict[str, str] = {}
        self._cache: OrderedDict[str, TokenClaims] = OrderedDict()

    def trusts(self, issuer: str) -> bool:
        return issuer.rstrip("/") in self.issuers

    def cached(self, token: str) -> TokenClaims | None:
        found = self._cache.get(token)
        if found is not None and found.expires + LEEWAY < time.time():
            self._cache.pop(token, None)
            raise InvalidToken("the access token has expired")
        return found

    async def verify(self, token: str, header: dict[str, Any], issuer: str) -> TokenClaims:
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidToken(f"tokens signed {alg!r} are not accepted (asymmetric only)")
        kid = header.get("kid")
        uri = await self._discover(issuer.rstrip("/"))
        keys = await self._keys(uri, kid, str(alg))
        try:
            decoded = jwt.decode(token, keys, algorithms=[str(alg)])
            jwt.JWTClaimsRegistry(leeway=LEEWAY, exp={"essential": True},
                                  iss={"essential": True, "value": issuer}).validate(
                decoded.claims)
        except (JoseError, ValueError) as exc:
            raise InvalidToken(f"the token from {issuer} does not verify ({exc})") from None
        claims = dict(decoded.claims)
        aud = claims.get("aud")
        auds = [a.rstrip("/") for a in (aud if isinstance(aud, list) else [aud])
                if isinstance(a, str)]
        if not set(auds) & set(self.audiences):
            raise InvalidToken(f"the token's aud {aud!r} is not this server "
                               f"({', '.join(self.audiences)})")
        if "scope" not in claims and isinstance(claims.get("scp"), list):
            claims["scope"] = " ".join(str(s) for s in claims["scp"])
        claims.setdefault("client_id", claims.get("azp") or claims.get("cid") or "")
        found = TokenClaims.from_claims(claims)
        self._cache[token] = found
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return found

    async def _discover(self, issuer: str) -> str:
        uri = self._jwks_uri.get(issuer)
        if uri is not None:
            return uri
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False) as http:
            for path in ("/.well-known/openid-configuration", "/.well-known/smart-configuration"):
                try:
                    response = await http.get(issuer + path)
                except httpx.HTTPError:
                    continue
                if response.status_code == 200:
                    try:
                        found = response.json().get("jwks_uri")
                    except ValueError:
                        continue
                    if isinstance(found, str) and found:
                        self._jwks_uri[issuer] = found
                        return found
        raise InvalidToken(f"the trusted issuer {issuer} publishes no jwks_uri (or cannot be "
                           "reached)")

    async def _keys(self, uri: str, kid: Any, alg: str) -> KeySet:
        try:
            jwks = await self.jwks.get(uri)
            if not _has(jwks, kid, alg):
                jwks = await self.jwks.get(uri, refresh=True)
        except JwksError as exc:
            raise InvalidToken(str(exc)) from None
        keys = [k for k in jwks.get("keys", []) if isinstance(k, dict)
                and k.get("kty") == _KTY[alg[0]] and (kid is None or k.get("kid") == kid)
                and k.get("use") in (None, "sig")]
        if not keys:
            raise InvalidToken(f"the issuer's key set has no key {kid!r} for {alg}")
        try:
            return KeySet.import_key_set({"keys": keys})
        except (JoseError, ValueError, KeyError, TypeError):
            raise InvalidToken("the issuer's key set cannot be read") from None


def _has(jwks: dict[str, Any], kid: Any, alg: str) -> bool:
    return any(isinstance(k, dict) and k.get("kty") == _KTY[alg[0]]
               and (kid is None or k.get("kid") == kid) for k in jwks.get("keys", []))
