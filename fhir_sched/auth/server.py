"""The embedded SMART authorization server and the resource server's token check, as one object.

``SmartAuth`` owns the registry (clients, keys, jti records in the store), the token issuer and
verifier, and the grants. The REST door calls ``context`` on every protected request, ``token``
and ``introspect`` from the OAuth endpoints, and ``configuration`` for discovery.

The issuer and the access tokens' audience are one fixed URL: the configured public base, or
``http://host:port`` the server listens on. Tokens therefore verify whichever Host header a
client uses; a server behind a proxy should set ``--public-base``.
"""

from __future__ import annotations

from typing import Any

from ..context import RequestContext
from ..scopes import Grant
from ..settings import Settings
from ..storage.base import DocumentStore
from .backend import ALGORITHMS, BackendServices
from .errors import OAuthError
from .registry import Registry
from .tokens import InvalidToken, Tokens

TOKEN_PATH = "/auth/token"
INTROSPECT_PATH = "/auth/introspect"
JWKS_PATH = "/auth/jwks"
SCOPES_SUPPORTED = ("system/*.cruds", "system/*.rs", "user/*.cruds", "user/*.rs",
                    "patient/*.cruds", "patient/*.rs", "system/*.read", "user/*.read",
                    "patient/*.read")


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
        self._tokens: Tokens | None = None
        self._backend: BackendServices | None = None

    async def start(self) -> None:
        keys = await self.registry.signing_keys()
        self._tokens = Tokens(keys, self.issuer, self.audience)
        self._backend = BackendServices(self.registry, self._tokens, self.issuer + TOKEN_PATH)

    @property
    def tokens(self) -> Tokens:
        assert self._tokens is not None, "SmartAuth.start() not called"
        return self._tokens

    # -- resource server ---------------------------------------------------------------------
    def context(self, authorization: str | None, *, base_url: str,
                request_id: str | None) -> RequestContext:
        """The context of a request carrying ``Authorization: Bearer <token>``; InvalidToken
        when it is missing or unusable."""
        if not authorization:
            raise InvalidToken("")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("the Authorization header must be 'Bearer <access token>'")
        claims = self.tokens.verify(token.strip())
        grant = Grant.parse(claims.scope, claims.patient)
        extra: dict[str, Any] = {"request_id": request_id} if request_id else {}
        return RequestContext(
            subject=claims.fhir_user or claims.subject, client_id=claims.client_id,
            grant=grant, patient=claims.patient if grant.patient_only else None,
            base_url=base_url, **extra)

    # -- authorization server ----------------------------------------------------------------
    async def token(self, form: dict[str, str]) -> dict[str, Any]:
        assert self._backend is not None, "SmartAuth.start() not called"
        grant_type = form.get("grant_type")
        if grant_type == "client_credentials":
            return await self._backend.token(form)
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not "
                         "supported here (client_credentials is)")

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 with SMART's fields; an unusable token is simply ``active: false``."""
        try:
            claims = self.tokens.verify(token)
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
            "token_endpoint": self.issuer + TOKEN_PATH,
            "introspection_endpoint": self.issuer + INTROSPECT_PATH,
            "jwks_uri": self.issuer + JWKS_PATH,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": sorted(ALGORITHMS),
            "scopes_supported": list(SCOPES_SUPPORTED),
            "response_types_supported": ["token"],
            "capabilities": ["client-confidential-asymmetric", "permission-v1",
                             "permission-v2", "permission-patient", "permission-user"],
            "code_challenge_methods_supported": ["S256"],
        }

    def oauth_uris(self) -> dict[str, str]:
        """For the CapabilityStatement's oauth-uris extension (what Python fhirclient reads)."""
        return {"token": self.issuer + TOKEN_PATH, "introspect": self.issuer + INTROSPECT_PATH}
