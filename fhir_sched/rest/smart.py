"""SMART over HTTP: the bearer gate in front of the FHIR base, discovery and the OAuth endpoints.

``BearerGate`` wraps the FHIR router: every request but the public ones (the
CapabilityStatement, the SMART configuration and the SMART Scheduling Links publication) needs
a valid bearer token, which becomes the request's context (scopes, patient, client) before
any handler runs. A missing or bad token is a 401 with ``WWW-Authenticate: Bearer`` (RFC
6750); what the scopes do not allow is a 403 from the service's policy. With the public view
on (``public_view.py``), a request with no Authorization header at all that reads the
directory or asks ``$find`` runs as the anonymous public context instead, rate limited.

The OAuth endpoints answer RFC 6749 JSON errors with ``Cache-Control: no-store`` and
``Pragma: no-cache`` on every token response, as SMART and Inferno require.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import launch_context, pages
from ..auth.code_flow import BackToApp, ErrorPage
from ..auth.errors import OAuthError
from ..auth.server import SmartAuth
from ..auth.tokens import InvalidToken
from ..context import RequestContext
from ..errors import FhirError
from ..ids import unique_id
from ..service.audit import AuditLog
from ..service.audit import entry as audit_entry
from .http import read_body, scope_base_url
from .public_view import PublicView, admits

PUBLIC = frozenset({"/metadata", "/.well-known/smart-configuration", "/$bulk-publish"})
# SMART Scheduling Links files: open like their manifest (off unless FHIR_SCHED_PUBLISH)
PUBLIC_PREFIX = "/$bulk-publish/"
FLOW_COOKIE = "fhir_sched_flow"
_PAGE_HEADERS = {"content-security-policy": pages.CSP, "x-frame-options": "DENY",
                 "cache-control": "no-store", "referrer-policy": "no-referrer",
                 "x-content-type-options": "nosniff"}
MAX_FORM_BYTES = 64 * 1024
# Token responses: never cached (SMART, RFC 6749 5.1), and readable by browser apps of any
# origin: the token endpoint takes no cookies, so an origin proves nothing there.
_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache",
             "access-control-allow-origin": "*"}


def unauthorized(reason: str) -> FhirError:
    challenge = 'Bearer realm="fhir-sched"'
    if reason:
        safe = reason.replace('"', "'").replace("\\", "/")
        challenge += f', error="invalid_token", error_description="{safe}"'
    return FhirError(401, "login", reason or "this server needs a bearer access token (SMART "
                     "on FHIR); see .well-known/smart-configuration",
                     headers={"www-authenticate": challenge})


class BearerGate:
    """ASGI wrapper: authenticates, then hands the request to ``app`` with its context."""

    def __init__(self, app: ASGIApp, auth: SmartAuth, base_path: str, public_base: str,
                 public: PublicView | None = None) -> None:
        self.app = app
        self.auth = auth
        self.base_path = base_path
        self.public_base = public_base
        self.public = public  # the public view, None when off

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rel = scope["path"][len(self.base_path):]
        if (rel.rstrip("/") in PUBLIC or rel.startswith(PUBLIC_PREFIX)
                or scope["method"] == "OPTIONS"):
            await self.app(scope, receive, send)
            return
        authorization = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
                break
        state = scope.setdefault("state", {})
        base_url = scope_base_url(scope, self.public_base, self.base_path)
        if authorization is None and self.public is not None and admits(scope["method"], rel):
            client = scope.get("client")
            self.public.throttle(client[0] if client else "unknown")
            state["fhir_ctx"] = RequestContext.anonymous(
                base_url=base_url, request_id=state.get("request_id"))
            await self.app(scope, receive, send)
            return
        try:
            ctx = await self.auth.context(
                authorization, request_id=state.get("request_id"), base_url=base_url)
        except InvalidToken as exc:
            raise unauthorized(str(exc)) from None
        state["fhir_ctx"] = ctx
        await self.app(scope, receive, send)


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status, headers=_PAGE_HEADERS)


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
          ) -> Response:
    return Response(orjson.dumps(body), status, headers=headers,
                    media_type="application/json")


async def _pairs(request: Request) -> list[tuple[str, str]]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", f"the body is larger than {MAX_FORM_BYTES} bytes")
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "the body is not UTF-8") from None


def _basic(request: Request) -> tuple[str, str] | None:
    """HTTP Basic client credentials (RFC 6749 2.3.1: both parts form-urlencoded)."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "the Basic credentials cannot be read", 401) from None
    user, sep, password = raw.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "the Basic credentials cannot be read", 401)

    return unquote_plus(user), unquote_plus(password)


async def _form(request: Request) -> dict[str, str]:
    pairs = await _pairs(request)
    form: dict[str, str] = {}
    for k, v in pairs:
        if k in form:  # RFC 6749 3.2: parameters MUST NOT be repeated
            raise OAuthError("invalid_request", f"parameter {k!r} is repeated")
        form[k] = v
    return form


Endpoint = Callable[[Request], Awaitable[Response]]


class _Window:
    """Attempts per key in the last minute (in memory, per process)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[str, list[float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self._seen.get(key, []) if now - t < 60]
        if len(recent) >= self.limit:
            self._seen[key] = recent
            return False
        recent.append(now)
        self._seen[key] = recent
        if len(self._seen) > 10_000:  # forget the oldest addresses rather than grow
            for k in list(self._seen)[:5_000]:
                del self._seen[k]
        return True


class _Trail:
    """The authorization server's part of the audit trail (door ``auth``): sign-ins, consent,
    tokens issued and refused, revocation, introspection and launches. Queued like reads, so
    the token endpoint does not wait on the store. Never a password, a secret or a token;
    for a refused sign-in not even the username typed (people type passwords there), only
    the app and the client address, which is what a brute-force search needs."""

    def __init__(self, audit: AuditLog | None) -> None:
        self.audit = audit

    def __call__(self, request: Request, subtype: str, outcome: str = "0", *,
                 who: str = "anonymous", client_id: str | None = None,
                 patient: str | None = None, detail: str = "", action: str = "E") -> None:
        if self.audit is None:
            return
        rid = getattr(request.state, "request_id", None) or unique_id()
        # who and client_id can come from the request itself: bounded, like everything kept
        ctx = RequestContext(request_id=rid, subject=who[:200],
                             client_id=client_id[:200] if client_id else None, door="auth")
        self.audit.later(audit_entry(ctx, subtype, outcome, patient=patient, detail=detail,
                                     action=action))


def _payload(token: str) -> dict[str, Any]:
    """A JWT's claims, read without checking the signature: for the audit trail only."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _claimed_client(form: dict[str, str], basic: tuple[str, str] | None) -> str | None:
    """Who a refused token request said it was: its Basic user, ``client_id``, or the
    assertion's ``iss`` (unproven, which the refusal itself records)."""
    if basic:
        return basic[0]
    if form.get("client_id"):
        return form["client_id"]
    iss = _payload(form.get("client_assertion", "")).get("iss")
    return iss if isinstance(iss, str) else None


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def endpoints(auth: SmartAuth, audit: AuditLog | None = None
              ) -> dict[str, tuple[str, Endpoint]]:
    """path -> (method, handler) for the SMART endpoints outside the FHIR base."""
    trail = _Trail(audit)

    async def token(request: Request) -> Response:
        form: dict[str, str] = {}
        basic = None
        try:
            form = await _form(request)
            basic = _basic(request)
            body = await auth.token(form, basic)
        except OAuthError as exc:
            headers = dict(_NO_STORE)
            if exc.status == 401:
                headers["www-authenticate"] = 'Basic realm="fhir-sched"'
            trail(request, "auth/token", "4", client_id=_claimed_client(form, basic),
                  detail=f"{form.get('grant_type') or '-'} refused: {exc.error} "
                  f"(from {_address(request)})")
            return _json(exc.body(), exc.status, headers)
        claims = _payload(str(body.get("access_token", "")))
        fhir_user = str(claims.get("fhirUser") or "")
        who = fhir_user.removeprefix(auth.audience + "/") if fhir_user else str(
            claims.get("sub") or "anonymous")
        patient = claims.get("patient")
        trail(request, "auth/token", who=who, client_id=str(claims.get("client_id") or ""),
              patient=f"Patient/{patient}" if patient else None,
              detail=f"{form.get('grant_type')}: {body.get('scope', '')}")
        return _json(body, 200, _NO_STORE)

    async def authorize(request: Request) -> Response:
        if request.method == "POST":
            try:
                params = dict(await _pairs(request))
            except OAuthError as exc:
                return _html(pages.error(exc.description), 400)
        else:
            params = dict(request.query_params)
        try:
            pending = await auth.code.authorize(params)
        except ErrorPage as exc:
            return _html(pages.error(str(exc)), 400)
        except BackToApp as exc:
            return RedirectResponse(exc.url, 303)
        app = params.get("client_id", "")
        response = _html(pages.login(pending.id, app))
        response.set_cookie(FLOW_COOKIE, pending.id, max_age=600, path="/auth", httponly=True,
                            samesite="lax", secure=request.url.scheme == "https")
        return response

    async def _bound(request: Request) -> tuple[dict[str, list[str]], Any]:
        """The form and its pending flow, which must be the one this browser started."""
        form: dict[str, list[str]] = {}
        for k, v in await _pairs(request):
            form.setdefault(k, []).append(v)
        pending_id = (form.get("pending") or [""])[0]
        if not pending_id or request.cookies.get(FLOW_COOKIE) != pending_id:
            raise ErrorPage("This form does not belong to a sign-in started in this browser; "
                            "start again from the app.")
        return form, await auth.code.pending(pending_id)

    # per client address; the per-user lockout is in auth/users.py
    logins = _Window(auth.settings.auth_logins_per_minute)

    async def login(request: Request) -> Response:
        address = request.client.host if request.client else "unknown"
        if not logins.allow(address):
            trail(request, "auth/login", "4", detail=f"rate limited (from {address})")
            return HTMLResponse(pages.error("Too many sign-in attempts from here; wait a "
                                            "minute and try again."), 429,
                                headers={**_PAGE_HEADERS, "retry-after": "60"})
        try:
            form, pending = await _bound(request)
        except ErrorPage as exc:
            return _html(pages.error(str(exc)), 400)
        except OAuthError as exc:
            return _html(pages.error(exc.description), 400)
        user = await auth.code.login(pending, (form.get("username") or [""])[0],
                                     (form.get("password") or [""])[0])
        app = str(pending.doc["client_id"])
        if user is None:
            trail(request, "auth/login", "4", client_id=app,
                  detail=f"wrong username or password, or locked (from {address})")
            return _html(pages.login(pending.id, app, "Wrong username or password, or the "
                                     "account is locked for a while after too many tries."),
                         401)
        trail(request, "auth/login", who=user.fhir_user, client_id=app,
              detail=f"signed in (from {address})")
        pending = await auth.code.pending(pending.id)
        return _html(pages.consent(pending.id, app, f"{user.username} ({user.fhir_user})",
                                   pending.scopes, pending.needs_patient_pick))

    async def consent(request: Request) -> Response:
        try:
            form, pending = await _bound(request)
            url = await auth.code.consent(
                pending, (form.get("decision") or [""])[0], form.get("scope") or [],
                next(iter(form.get("patient") or []), None))
        except ErrorPage as exc:
            return _html(pages.error(str(exc)), 400)
        except OAuthError as exc:
            return _html(pages.error(exc.description), 400)
        answer = parse_qsl(url.partition("?")[2])
        error = next((v for k, v in answer if k == "error"), None)
        trail(request, "auth/consent", "4" if error else "0",
              who=str(pending.doc.get("fhir_user") or "anonymous"),
              client_id=str(pending.doc.get("client_id") or ""),
              detail=error or "allowed")
        response = RedirectResponse(url, 303)
        response.delete_cookie(FLOW_COOKIE, path="/auth")
        return response

    async def revoke(request: Request) -> Response:
        try:
            form = await _form(request)
        except OAuthError as exc:
            return _json(exc.body(), exc.status, _NO_STORE)
        if not form.get("token"):
            return _json(OAuthError("invalid_request", "token is required").body(), 400,
                         _NO_STORE)
        await auth.code.revoke(form["token"])
        trail(request, "auth/revoke", client_id=form.get("client_id"), action="D",
              detail=f"revocation (from {_address(request)})")
        return Response(b"", 200, headers=_NO_STORE)

    async def launch(request: Request) -> Response:
        """The EHR asks for a launch id bound to the patient it has open."""
        try:
            ctx = await auth.context(request.headers.get("authorization"), base_url="",
                               request_id=None)
        except InvalidToken as exc:
            raise unauthorized(str(exc)) from None
        grant = ctx.grant
        assert grant is not None
        if not any(s.level != "patient" for s in grant.matching("Patient", "r")):
            raise FhirError(403, "forbidden", "creating a launch needs a user/ or system/ "
                            "scope that reads Patient")
        try:
            context = launch_context.parse(orjson.loads(
                await read_body(request, MAX_FORM_BYTES)))
        except orjson.JSONDecodeError:
            raise FhirError(400, "invalid", "the body must be JSON: {\"patient\": "
                            "\"Patient/<id>\"}") from None
        except launch_context.LaunchContextError as exc:
            raise FhirError(400, "invalid", str(exc)) from None
        launch_id = await auth.code.new_launch(context)
        trail(request, "auth/launch", who=ctx.subject, client_id=ctx.client_id,
              patient=context.patient, action="C", detail="EHR launch")
        return _json({"launch": launch_id}, 201, _NO_STORE)

    async def introspect(request: Request) -> Response:
        # RFC 7662 2.1: the caller must be authorized: a confidential client's credentials
        # (HTTP Basic), or any valid token of ours
        try:
            basic = _basic(request)
            if basic is not None:
                await auth.introspector(basic)
        except OAuthError as exc:
            return _json(exc.body(), 401, {**_NO_STORE,
                                           "www-authenticate": 'Basic realm="fhir-sched"'})
        if basic is None:
            try:
                await auth.context(request.headers.get("authorization"), base_url="",
                                   request_id=None)
            except InvalidToken as exc:
                return _json({"error": "invalid_token", "error_description": str(exc) or
                              "introspection needs a bearer access token"}, 401,
                             {**_NO_STORE, "www-authenticate": 'Bearer realm="fhir-sched"'})
        try:
            form = await _form(request)
        except OAuthError as exc:
            return _json(exc.body(), exc.status, _NO_STORE)
        if not form.get("token"):
            return _json(OAuthError("invalid_request", "token is required").body(), 400,
                         _NO_STORE)
        answer = await auth.introspect(form["token"])
        trail(request, "auth/introspect", who=basic[0] if basic else "bearer",
              client_id=basic[0] if basic else None,
              detail="active" if answer.get("active") else "inactive")
        return _json(answer, 200, _NO_STORE)

    async def jwks(request: Request) -> Response:
        return _json(await auth.public_jwks(), 200, {"cache-control": "max-age=300",
                                                     "access-control-allow-origin": "*"})

    async def openid(request: Request) -> Response:
        return _json(auth.openid_configuration(), 200, {"access-control-allow-origin": "*"})

    return {"/auth/token": ("POST", token), "/auth/introspect": ("POST", introspect),
            "/auth/jwks": ("GET", jwks), "/auth/authorize": ("GET POST", authorize),
            "/auth/login": ("POST", login), "/auth/consent": ("POST", consent),
            "/auth/revoke": ("POST", revoke), "/auth/launch": ("POST", launch),
            "/.well-known/openid-configuration": ("GET", openid)}


def configuration_endpoint(auth: SmartAuth) -> Endpoint:
    async def configuration(request: Request) -> Response:
        # SMART: application/json whatever Accept says, and reachable from browser apps
        return _json(auth.configuration(), 200, {"access-control-allow-origin": "*"})

    return configuration


def hl7v2_gate(endpoint: Endpoint, auth: SmartAuth) -> Endpoint:
    """``POST /hl7v2`` with auth on: an interface engine's token must allow creating and
    updating Appointments beyond one patient (a ``system/`` or ``user/`` scope), since one
    message can book, move or cancel anyone's visit."""

    async def gated(request: Request) -> Response:
        try:
            ctx = await auth.context(request.headers.get("authorization"), base_url="",
                               request_id=getattr(request.state, "request_id", None))
        except InvalidToken as exc:
            raise unauthorized(str(exc)) from None
        grant = ctx.grant
        assert grant is not None
        if not all(any(s.level != "patient" and not s.where
                       for s in grant.matching("Appointment", letter)) for letter in "cu"):
            raise FhirError(403, "forbidden", "HL7 v2 over HTTP needs a token whose scopes "
                            "create and update any Appointment (for example "
                            "system/Appointment.cu or system/*.cruds)")
        return await endpoint(request)

    return gated
