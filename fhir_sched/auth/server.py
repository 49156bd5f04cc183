"""The embedded SMART authorization server and the resource server's token check, as one object.

``SmartAuth`` owns the registry (clients, keys, jti records in the store), the token issuer and
verifier, and the grants. The REST door calls ``context`` on every protected request, ``token``
and ``introspect`` from the OAuth endpoints, and ``configuration`` for discovery.

The issuer and the access tokens' audience are one fixed URL: the configured public base, or
``http://host:port`` the server listens on. Tokens therefore verify whichever Host header a
client uses; a server behind a proxy should set ``--public-base``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from functools import lru_cache
from typing import Any

import orjson
from joserfc.errors import JoseError
from joserfc.jws import extract_compact

from ..context import RequestContext
from ..scopes import Grant
from ..settings import Settings
from ..storage.base import DocumentStore
from .backend import ALGORITHMS, OVERBOOK_SCOPE, BackendServices
from .code_flow import REVOKED, CodeFlow
from .errors import OAuthError
from .external import SECRET_ENV, TrustedIssuers, credentials
from .registry import Registry
from .tokens import InvalidToken, TokenClaims, Tokens
from .users import Users

TOKEN_PATH = "/auth/token"
AUTHORIZE_PATH = "/auth/authorize"
INTROSPECT_PATH = "/auth/introspect"
REVOKE_PATH = "/auth/revoke"
LAUNCH_PATH = "/auth/launch"
JWKS_PATH = "/auth/jwks"
REVOCATION_POLL_SECONDS = 5.0
log = logging.getLogger("fhir_sched.auth")
SCOPES_SUPPORTED = ("system/*.cruds", "system/*.rs", "user/*.cruds", "user/*.rs",
                    "patient/*.cruds", "patient/*.rs", "system/*.read", "user/*.read",
                    "patient/*.read")


@lru_cache(maxsize=4096)
def _grant(scope: str, patient: str | None) -> Grant:
    """Parsed once per distinct (scopes, patient): grants are immutable, tokens repeat them."""
    return Grant.parse(scope, patient)


@lru_cache(maxsize=4096)
def _caller(claims: TokenClaims) -> tuple[str, str | None, Grant, str | None, bool]:
    """What a request context takes from a token's claims, worked out once per token:
    subject, client, grant, confining patient, overbooking."""
    grant = _grant(claims.scope, claims.patient)
    return (claims.fhir_user or claims.subject, claims.client_id, grant,
            claims.patient if grant.patient_only else None,
            OVERBOOK_SCOPE in grant.other and not grant.patient_only)


def _context(claims: TokenClaims, base_url: str, request_id: str | None) -> RequestContext:
    subject, client_id, grant, patient, overbook = _caller(claims)
    if request_id:
        return RequestContext(request_id=request_id, subject=subject, client_id=client_id,
                              grant=grant, patient=patient, base_url=base_url,
                              may_overbook=overbook)
    return RequestContext(subject=subject, client_id=client_id, grant=grant, patient=patient,
                          base_url=base_url, may_overbook=overbook)


def issuer_of(settings: Settings) -> str:
    if settings.public_base:
        base = settings.public_base.rstrip("/")
        return base.removesuffix(settings.base_path) if settings.base_path else base
    host = "localhost" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


class SmartAuth:
    def __init__(self, store: DocumentStore, settings: Settings) -> None:
        self.settings = settings
        self.registry = Registry(store)
        self.issuer = issuer_of(settings)
        self.audience = self.issuer + settings.base_path
        self.users = Users(self.registry)
        issuers = [i.strip() for i in settings.trust_issuer.split(",") if i.strip()]
        audiences = [a.strip() for a in settings.trust_audience.split(",") if a.strip()]
        environ = dict(os.environ)
        if settings.trust_introspection_secret:
            environ[SECRET_ENV] = settings.trust_introspection_secret
        introspection = credentials(settings.trust_introspection_client, issuers, environ)
        self.trusted = (TrustedIssuers(issuers, audiences or [self.audience],
                                       introspection=introspection) if issuers else None)
        self._tokens: Tokens | None = None
        self._backend: BackendServices | None = None
        self._code: CodeFlow | None = None

    async def start(self) -> None:
        keys = await self.registry.signing_keys()
        self._tokens = Tokens(keys, self.issuer, self.audience)
        self._backend = BackendServices(self.registry, self._tokens, self.issuer + TOKEN_PATH)
        self._code = CodeFlow(self.registry, self.users, self._tokens, self.audience,
                              self.issuer)

    @property
    def code(self) -> CodeFlow:
        assert self._code is not None, "SmartAuth.start() not called"
        return self._code

    async def follow_revocations(self) -> None:
        """Background job: tokens revoked through any process sharing the store stop working
        here within ``REVOCATION_POLL_SECONDS`` (expired records are dropped), and keys
        rotated with ``fhir-sched keys rotate`` are used and trusted as quickly."""
        while True:
            try:
                self.tokens.keys = await self.registry.signing_keys()
                now = time.time()
                live: set[str] = set()
                for key, doc in await self.registry.docs(REVOKED):
                    if float(doc.get("expires", 0)) + 60 < now:
                        await self.registry.delete_doc(key)
                    else:
                        live.add(key.removeprefix(REVOKED))
                self.tokens.revoked |= live
            except Exception as exc:  # store trouble: try again next round
                log.warning("reading revoked tokens failed: %s", type(exc).__name__)
            await asyncio.sleep(REVOCATION_POLL_SECONDS)

    @property
    def tokens(self) -> Tokens:
        assert self._tokens is not None, "SmartAuth.start() not called"
        return self._tokens

    # -- resource server ---------------------------------------------------------------------
    async def context(self, authorization: str | None, *, base_url: str,
                      request_id: str | None) -> RequestContext:
        """The context of a request carrying ``Authorization: Bearer <token>``; InvalidToken
        when it is missing or unusable."""
        if not authorization:
            raise InvalidToken("")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise InvalidToken("the Authorization header must be 'Bearer <access token>'")
        claims = await self._verify(token)  # expiry and revocation: checked on every request
        return _context(claims, base_url, request_id)

    async def _verify(self, token: str) -> TokenClaims:
        """Ours (the common case: a cache hit), or a trusted issuer's."""
        if self.trusted is None:
            return self.tokens.verify(token)
        hit = self.trusted.cached(token)
        if hit is not None:
            return hit
        try:
            compact = extract_compact(token.encode())
            header = compact.headers()
            issuer = orjson.loads(compact.payload).get("iss", "")
        except (JoseError, ValueError, AttributeError):
            if self.trusted.introspects:  # opaque: only its issuer can tell
                return await self.trusted.introspect(token)
            raise InvalidToken("the access token is not a JWT") from None
        if isinstance(issuer, str) and issuer != self.issuer and self.trusted.trusts(issuer):
            return await self.trusted.verify(token, header, issuer)
        return self.tokens.verify(token)

    # -- authorization server ----------------------------------------------------------------
    async def token(self, form: dict[str, str], basic: tuple[str, str] | None = None
                    ) -> dict[str, Any]:
        assert self._backend is not None, "SmartAuth.start() not called"
        grant_type = form.get("grant_type")
        if grant_type == "client_credentials":
            return await self._backend.token(form)
        if grant_type in ("authorization_code", "refresh_token"):
            if form.get("client_assertion_type") or form.get("client_assertion"):
                client, _ = await self._backend.authenticate(form, kinds=("asymmetric",))
            else:
                client = await self.code.authenticate(form, basic)
            if grant_type == "authorization_code":
                return await self.code.exchange(form, client)
            return await self.code.refresh(form, client)
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not "
                         "supported here (authorization_code, refresh_token and "
                         "client_credentials are)")

    async def introspector(self, basic: tuple[str, str]) -> None:
        """A resource server asking about tokens as a confidential client (RFC 7662 2.1's
        usual way, and the one Keycloak and Okta expect): only a registered client with a
        secret may, and the secret must match."""
        client = await self.registry.client(basic[0]) if basic[0] else None
        if client is None or client.kind != "confidential" or not client.secret_matches(basic[1]):
            raise OAuthError("invalid_client", "introspection needs a bearer token or a "
                             "confidential client's credentials", 401)

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 with SMART's fields; an unusable token is simply ``active: false``."""
        try:
            claims = await self._verify(token)
        except InvalidToken:
            return {"active": False}
        out: dict[str, Any] = {"active": True, "scope": claims.scope,
                               "client_id": claims.client_id, "exp": claims.expires,
                               "sub": claims.subject, "iss": claims.issuer,
                               "token_type": "Bearer"}
        if claims.patient:
            out["patient"] = claims.patient.removeprefix("Patient/")
        if claims.fhir_user:
            out["fhirUser"] = claims.fhir_user
        return out

    def configuration(self) -> dict[str, Any]:
        """``.well-known/smart-configuration`` (SMART App Launch 2.2, conformance.md)."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + JWKS_PATH,
            "authorization_endpoint": self.issuer + AUTHORIZE_PATH,
            "token_endpoint": self.issuer + TOKEN_PATH,
            "introspection_endpoint": self.issuer + INTROSPECT_PATH,
            "revocation_endpoint": self.issuer + REVOKE_PATH,
            "grant_types_supported": ["authorization_code", "client_credentials",
                                      "refresh_token"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic",
                                                      "client_secret_post", "none"],
            "token_endpoint_auth_signing_alg_values_supported": sorted(ALGORITHMS),
            "scopes_supported": [*SCOPES_SUPPORTED, "openid", "fhirUser", "launch",
                                 "launch/patient", "offline_access", "online_access",
                                 OVERBOOK_SCOPE],
            "response_types_supported": ["code"],
            "capabilities": [
                "launch-ehr", "launch-standalone", "authorize-post", "client-public",
                "client-confidential-symmetric", "client-confidential-asymmetric",
                "sso-openid-connect", "context-ehr-patient", "context-ehr-encounter",
                "context-standalone-patient",
                "context-banner", "permission-offline", "permission-online",
                "permission-patient", "permission-user", "permission-v1", "permission-v2"],
            "code_challenge_methods_supported": ["S256"],
        }

    async def public_jwks(self) -> dict[str, Any]:
        """The public signing keys as the store has them now (a key another process added or
        rotated in is published at once), without the private parts."""
        keys = await self.registry.signing_keys()
        self.tokens.keys = keys
        return self.tokens.public_jwks()

    def openid_configuration(self) -> dict[str, Any]:
        """OpenID Connect discovery at the issuer (what Inferno's OIDC tests fetch)."""
        return {
            "issuer": self.issuer, "authorization_endpoint": self.issuer + AUTHORIZE_PATH,
            "token_endpoint": self.issuer + TOKEN_PATH, "jwks_uri": self.issuer + JWKS_PATH,
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "fhirUser", "profile"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "fhirUser", "nonce"],
            "code_challenge_methods_supported": ["S256"],
            # RFC 8414 metadata OpenID discovery may carry too (Keycloak's does): what a
            # resource server introspecting our tokens looks for
            "introspection_endpoint": self.issuer + INTROSPECT_PATH,
            "revocation_endpoint": self.issuer + REVOKE_PATH,
        }

    def oauth_uris(self) -> dict[str, str]:
        """For the CapabilityStatement's oauth-uris extension (what Python fhirclient reads)."""
        return {"authorize": self.issuer + AUTHORIZE_PATH, "token": self.issuer + TOKEN_PATH,
                "introspect": self.issuer + INTROSPECT_PATH, "revoke": self.issuer + REVOKE_PATH}
