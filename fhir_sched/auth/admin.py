"""What the ``client`` commands and the demo do to the registry: framework-free coroutines."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson

from ..scopes import Grant, ScopeError
from ..settings import Settings
from ..storage import open_store
from .registry import Client, hash_secret
from .server import SmartAuth
from .users import UserError

DEMO_SCOPE = "system/*.cruds"
DEMO_HOURS = 8


class AdminError(Exception):
    """A command-line mistake, printed as is (exit 2)."""


def check_scopes(scope: str) -> None:
    try:
        grant = Grant.parse(scope)
    except ScopeError as exc:
        raise AdminError(str(exc)) from None
    if not grant.resource:
        raise AdminError(f"--scope {scope!r} names no resource scope (for example "
                         "system/*.rs or patient/Appointment.cruds)")


@asynccontextmanager
async def _opened(settings: Settings) -> AsyncIterator[SmartAuth]:
    """The authorization server's parts on the settings' store, open for one command."""
    store = open_store(settings)
    await store.start()
    try:
        yield SmartAuth(store, settings)
    finally:
        await store.close()


async def add_client(settings: Settings, client: Client) -> None:
    async with _opened(settings) as auth:
        if not await auth.registry.add_client(client):
            raise AdminError(f"client {client.client_id!r} is already registered; remove it "
                             "first to change it")


async def list_clients(settings: Settings) -> list[Client]:
    async with _opened(settings) as auth:
        return await auth.registry.clients()


async def remove_client(settings: Settings, client_id: str) -> bool:
    async with _opened(settings) as auth:
        return await auth.registry.remove_client(client_id)


async def add_user(settings: Settings, username: str, password: str, fhir_user: str) -> None:
    async with _opened(settings) as auth:
        try:
            await auth.users.add(username, password, fhir_user)
        except UserError as exc:
            raise AdminError(str(exc)) from None


async def remove_user(settings: Settings, username: str) -> bool:
    async with _opened(settings) as auth:
        return await auth.users.remove(username)


async def rotate_keys(settings: Settings) -> list[str]:
    async with _opened(settings) as auth:
        return await auth.registry.rotate_keys()


async def demo_token(settings: Settings) -> str:
    """A ready access token for the demo clinic (``system/*.cruds``, valid for a working
    day), signed with the store's own key, so the server about to start accepts it."""
    async with _opened(settings) as auth:
        await auth.start()
        token, _ = auth.tokens.issue(subject="demo", client_id="demo", scope=DEMO_SCOPE,
                                     lifetime=DEMO_HOURS * 3600, max_lifetime=DEMO_HOURS * 3600)
        return token


async def demo_console(settings: Settings, client_id: str, scope: str, pages: list[str],
                       fhir_user: str) -> str:
    """The demo's console sign-in: its public client registered for ``pages`` (replacing an
    earlier registration, made for another port) and a front-desk user, ``frontdesk``, with a
    fresh password, which is returned."""
    password = secrets.token_urlsafe(12)
    async with _opened(settings) as auth:
        await auth.registry.remove_client(client_id)
        await auth.registry.add_client(Client(client_id, scope, "public",
                                              redirect_uris=tuple(pages)))
        await auth.users.remove("frontdesk")
        await auth.users.add("frontdesk", password, fhir_user)
    return password


def client_from_args(client_id: str, scope: str, *, jwks_file: str | None,
                     jwks_url: str | None, redirect_uris: list[str], public: bool,
                     secret: str | None) -> Client:
    check_scopes(scope)
    if jwks_file or jwks_url:
        jwks = None
        if jwks_file:
            try:
                with open(jwks_file, "rb") as fh:
                    jwks = orjson.loads(fh.read())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise AdminError(f"--jwks-file {jwks_file}: {exc}") from None
            keys = jwks.get("keys") if isinstance(jwks, dict) else None
            if not isinstance(keys, list) or not keys:
                raise AdminError(f"--jwks-file {jwks_file} is not a JWKS with keys")
            if any("d" in k for k in keys if isinstance(k, dict)):
                raise AdminError(f"--jwks-file {jwks_file} holds a private key; register the "
                                 "public keys only")
        if public:
            raise AdminError("a client with keys is confidential; --public does not apply")
        if redirect_uris:
            # An app that signs in users and proves itself with private_key_jwt at the token
            # endpoint (SMART client-confidential-asymmetric) instead of a shared secret.
            return Client(client_id, scope, "asymmetric", jwks=jwks, jwks_url=jwks_url,
                          redirect_uris=tuple(redirect_uris))
        return Client(client_id, scope, "backend", jwks=jwks, jwks_url=jwks_url)
    if not redirect_uris:
        if secret and not public:
            # A confidential client with nowhere to send a browser: a resource server that
            # introspects tokens (RFC 7662) with its secret, and cannot run the code flow.
            return Client(client_id, scope, "confidential", secret_hash=hash_secret(secret))
        raise AdminError("give --jwks-file or --jwks-url (a backend client), --redirect-uri "
                         "(an app), or --secret-stdin alone (a resource server introspecting "
                         "tokens)")
    if public:
        return Client(client_id, scope, "public", redirect_uris=tuple(redirect_uris))
    if not secret:
        raise AdminError("a confidential app needs --secret-stdin (or --public for a public "
                         "app using PKCE)")
    return Client(client_id, scope, "confidential", redirect_uris=tuple(redirect_uris),
                  secret_hash=hash_secret(secret))
