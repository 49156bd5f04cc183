"""Bearer tokens from another authorization server (``--trust-issuer``): Keycloak, Okta, an EHR.

A JWT whose ``iss`` is a trusted issuer is verified against that issuer's keys: its discovery
document (``.well-known/openid-configuration``, else ``.well-known/smart-configuration``) names
the ``jwks_uri``; the key set is cached as its ``Cache-Control`` allows and fetched again when a
token names a ``kid`` the cached set lacks (the issuer rotated its keys). Only asymmetric
algorithms are accepted, the ``aud`` must be one this server accepts (``--trust-audience``,
default its own FHIR base), and ``exp`` is required. Scopes come from ``scope`` (a string) or
``scp`` (a list, as Okta and Azure send them); ``patient`` and ``fhirUser`` as SMART defines.
A verified token is cached by its bytes until it expires, as the embedded server's are.

Introspection mode (``--trust-introspection-client``, see ``credentials``): the issuer itself
is asked (RFC 7662, the ``introspection_endpoint`` of its discovery document, HTTP Basic client
authentication) about each token it issued, opaque ones included. The issuer's verdict takes in
what a signature cannot: a token it revoked is refused here within
``INTROSPECTION_CACHE_SECONDS``. Each issuer has its own credentials, or none (its JWTs are
then verified by signature), so one server can introspect for one issuer and verify another's.
A token no issuer knows is remembered as such for ``INACTIVE_CACHE_SECONDS``, so a client
resending a dead or made-up token does not cost an outbound call per request.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..outbound import TooLarge, fetch
from .jwks import JwksCache, JwksError
from .tokens import CACHE_SIZE, LEEWAY, InvalidToken, TokenClaims

# How long an issuer's "active" answer is trusted before the token is introspected again.
INTROSPECTION_CACHE_SECONDS = 30
# How long "no issuer knows this token" is remembered; an issued token is active at once, so
# only a made-up, expired or revoked one is ever refused from here.
INACTIVE_CACHE_SECONDS = 10
SECRET_ENV = "FHIR_SCHED_TRUST_INTROSPECTION_SECRET"
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384")
_KTY = {"R": "RSA", "P": "RSA", "E": "EC"}


def secret_env(client_id: str) -> str:
    """The environment variable holding one introspection client's secret:
    ``FHIR_SCHED_TRUST_INTROSPECTION_SECRET_`` and the client id in capitals, each run of other
    characters an underscore (``rs-introspector`` -> ``..._RS_INTROSPECTOR``)."""
    return f"{SECRET_ENV}_{re.sub(r'[^A-Z0-9]+', '_', client_id.upper()).strip('_')}"


def credentials(spec: str, issuers: list[str], environ: Mapping[str, str]
                ) -> dict[str, tuple[str, str]]:
    """Introspection credentials by issuer, from ``--trust-introspection-client`` values
    (comma-separated): ``ID`` for every trusted issuer, or ``ISSUER=ID`` for one. A client's
    secret is read from ``secret_env(ID)``, else from ``FHIR_SCHED_TRUST_INTROSPECTION_SECRET``
    (secrets never go on a command line, where ``ps`` shows them). Raises ValueError naming
    what is wrong: an issuer not trusted, a client without a secret."""
    trusted = [i.rstrip("/") for i in issuers]
    out: dict[str, tuple[str, str]] = {}
    if spec.strip() and not trusted:
        raise ValueError("--trust-introspection-client needs a --trust-issuer to ask")
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        issuer, sep, client_id = item.rpartition("=")
        client_id = client_id.strip()
        if not client_id:
            raise ValueError(f"--trust-introspection-client {item!r} names no client id")
        secret = environ.get(secret_env(client_id)) or environ.get(SECRET_ENV, "")
        if not secret:
            raise ValueError(f"--trust-introspection-client {client_id} needs its secret in "
                             f"{secret_env(client_id)} or {SECRET_ENV}")
        if not sep:  # every issuer; one named on its own keeps its own, in whatever order
            for name in trusted:
                out.setdefault(name, (client_id, secret))
            continue
        issuer = issuer.strip().rstrip("/")
        if issuer not in trusted:
            raise ValueError(f"--trust-introspection-client names {issuer}, which is not a "
                             "--trust-issuer")
        out[issuer] = (client_id, secret)
    return out


class TrustedIssuers:
    def __init__(self, issuers: list[str], audiences: list[str],
                 jwks: JwksCache | None = None,
                 introspection: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.issuers = [i.rstrip("/") for i in dict.fromkeys(issuers) if i]
        self.audiences = [a.rstrip("/") for a in audiences if a]
        self.jwks = jwks or JwksCache()
        # issuer -> (client id, secret) this server introspects its tokens with; an issuer
        # not named here has its JWTs verified by signature
        self.introspection = {i.rstrip("/"): c for i, c in (introspection or {}).items()}
        self._discovery: dict[str, dict[str, Any]] = {}
        # token -> (claims, the moment the answer stops being trusted)
        self._cache: OrderedDict[str, tuple[TokenClaims, float]] = OrderedDict()
        # digest of a token no issuer knew -> until when that answer holds
        self._inactive: OrderedDict[bytes, float] = OrderedDict()

    @property
    def introspects(self) -> bool:
        """Some issuer is asked about its tokens: an opaque token may be one of them."""
        return bool(self.introspection)

    def trusts(self, issuer: str) -> bool:
        return issuer.rstrip("/") in self.issuers

    def cached(self, token: str) -> TokenClaims | None:
        found = self._cache.get(token)
        if found is None:
            return None
        claims, until = found
        now = time.time()
        if claims.expires + LEEWAY < now:
            self._cache.pop(token, None)
            raise InvalidToken("the access token has expired")
        if until < now:  # an introspected answer gone stale: ask the issuer again
            self._cache.pop(token, None)
            return None
        return claims

    def _keep(self, token: str, claims: TokenClaims, until: float) -> TokenClaims:
        self._cache[token] = (claims, until)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return claims

    async def introspect(self, token: str, issuer: str | None = None) -> TokenClaims:
        """The issuer's own word on ``token`` (every issuer we introspect for, in turn, for an
        opaque token, whose issuer cannot be read from it)."""
        digest = hashlib.sha256(token.encode()).digest()
        now = time.time()
        until = self._inactive.get(digest)
        if until is not None:
            if until > now:
                raise InvalidToken("no trusted issuer knows this token as active")
            del self._inactive[digest]
        for candidate in ([issuer.rstrip("/")] if issuer else
                          [i for i in self.issuers if i in self.introspection]):
            answer = await self._ask(candidate, token)
            if answer is not None:
                return self._keep(token, *self._introspected(candidate, answer))
        self._inactive[digest] = now + INACTIVE_CACHE_SECONDS
        if len(self._inactive) > CACHE_SIZE:
            self._inactive.popitem(last=False)
        raise InvalidToken("no trusted issuer knows this token as active")

    async def _ask(self, issuer: str, token: str) -> dict[str, Any] | None:
        auth = self.introspection[issuer]
        endpoint = (await self._document(issuer)).get("introspection_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise InvalidToken(f"the trusted issuer {issuer} publishes no "
                               "introspection_endpoint")
        try:
            response = await fetch("POST", endpoint, auth=auth, data={
                "token": token, "token_type_hint": "access_token"})
        except (httpx.HTTPError, TooLarge):
            raise InvalidToken(f"the trusted issuer {issuer} cannot be reached to introspect "
                               "the token") from None
        if response.status != 200:
            raise InvalidToken(f"the trusted issuer {issuer} answered introspection with "
                               f"HTTP {response.status}")
        try:
            answer = json.loads(response.body)
        except ValueError:
            raise InvalidToken(f"the trusted issuer {issuer} answered introspection with "
                               "something that is not JSON") from None
        if not isinstance(answer, dict) or answer.get("active") is not True:
            return None
        return answer

    def _introspected(self, issuer: str, answer: dict[str, Any]) -> tuple[TokenClaims, float]:
        claims = dict(answer)
        claims["iss"] = str(claims.get("iss") or issuer).rstrip("/")
        if not self.trusts(claims["iss"]):
            raise InvalidToken(f"the introspected token names issuer {claims['iss']!r}, which "
                               "is not trusted here")
        now = time.time()
        if "aud" in claims:  # optional in RFC 7662; checked when the issuer says
            self._check_audience(claims["aud"])
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            exp = now + INTROSPECTION_CACHE_SECONDS  # no expiry given: good until asked again
        if exp + LEEWAY < now:
            raise InvalidToken("the access token has expired")
        claims["exp"] = int(exp)
        return self._claims(claims), min(float(exp), now + INTROSPECTION_CACHE_SECONDS)

    def _check_audience(self, aud: Any) -> None:
        auds = [a.rstrip("/") for a in (aud if isinstance(aud, list) else [aud])
                if isinstance(a, str)]
        if not set(auds) & set(self.audiences):
            raise InvalidToken(f"the token's aud {aud!r} is not this server "
                               f"({', '.join(self.audiences)})")

    @staticmethod
    def _claims(claims: dict[str, Any]) -> TokenClaims:
        if "scope" not in claims and isinstance(claims.get("scp"), list):
            claims["scope"] = " ".join(str(s) for s in claims["scp"])
        claims.setdefault("client_id", claims.get("azp") or claims.get("cid") or "")
        return TokenClaims.from_claims(claims)

    async def verify(self, token: str, header: dict[str, Any], issuer: str) -> TokenClaims:
        if issuer.rstrip("/") in self.introspection:
            return await self.introspect(token, issuer)
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
        self._check_audience(claims.get("aud"))
        found = self._claims(claims)
        return self._keep(token, found, float(found.expires))

    async def _discover(self, issuer: str) -> str:
        found = (await self._document(issuer)).get("jwks_uri")
        if isinstance(found, str) and found:
            return found
        raise InvalidToken(f"the trusted issuer {issuer} publishes no jwks_uri")

    async def _document(self, issuer: str) -> dict[str, Any]:
        """The issuer's discovery metadata, fetched once: its OpenID document, with what only
        its RFC 8414 or SMART document names (an introspection endpoint, often) filled in."""
        doc = self._discovery.get(issuer)
        if doc is not None:
            return doc
        merged: dict[str, Any] = {}
        for path in ("/.well-known/openid-configuration",
                     "/.well-known/oauth-authorization-server",  # RFC 8414
                     "/.well-known/smart-configuration"):
            try:
                response = await fetch("GET", issuer + path)
                found = json.loads(response.body) if response.status == 200 else None
            except (httpx.HTTPError, TooLarge, ValueError):
                continue
            if isinstance(found, dict):
                merged = {**found, **merged}
        if not merged:
            raise InvalidToken(f"the trusted issuer {issuer} publishes no discovery document "
                               "(or cannot be reached)")
        self._discovery[issuer] = merged
        return merged

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
