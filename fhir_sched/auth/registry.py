"""Registered clients and the server's signing keys, kept as marks in the store.

Everything the authorization server knows lives in the store it protects (``auth/...`` marks),
so every server process on one store agrees on clients and keys, a backup carries them, and
nothing depends on a file beside the database. A client is one JSON document:

    {"client_id": ..., "scope": "system/*.rs ...", "kind": "backend" | "public" | "confidential",
     "jwks": {...} | null, "jwks_url": ... | null, "redirect_uris": [...],
     "secret_hash": ... | null, "created": ...}
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from joserfc.jwk import ECKey, KeySet, RSAKey

from ..storage.base import DocumentStore, Unit
from ..timeutil import now_instant

CLIENT = "auth/client/"
KEYS = "auth/keys"
JTI = "auth/jti/"
CLIENT_KINDS = ("backend", "public", "confidential")


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    scope: str
    kind: str = "backend"
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    redirect_uris: tuple[str, ...] = ()
    secret_hash: str | None = None
    created: str = field(default_factory=now_instant)

    def to_json(self) -> str:
        doc = asdict(self)
        doc["redirect_uris"] = list(self.redirect_uris)
        return orjson.dumps(doc).decode()

    @classmethod
    def from_json(cls, text: str) -> Client:
        doc = orjson.loads(text)
        doc["redirect_uris"] = tuple(doc.get("redirect_uris") or ())
        return cls(**doc)

    def secret_matches(self, secret: str) -> bool:
        """Constant-time check of a confidential client's secret against its stored hash."""
        if self.secret_hash is None:
            return False
        salt, _, digest = self.secret_hash.partition("$")
        return hmac.compare_digest(_hash_secret(secret, salt), digest)


def _hash_secret(secret: str, salt: str) -> str:
    # Client secrets are generated, long and random (unlike passwords): a salted SHA-256 is
    # enough, and keeps the token endpoint cheap.
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def hash_secret(secret: str) -> str:
    salt = secrets.token_hex(8)
    return f"{salt}${_hash_secret(secret, salt)}"


class Registry:
    """Clients and keys on one store; every change is its own atomic unit."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    async def client(self, client_id: str) -> Client | None:
        async def run(unit: Unit) -> str | None:
            return await unit.mark_get(CLIENT + client_id)

        text = await self.store.atomic(run)
        return None if text is None else Client.from_json(text)

    async def add_client(self, client: Client) -> bool:
        """Register ``client``; False when its id is taken (nothing changes)."""
        async def run(unit: Unit) -> bool:
            if await unit.mark_get(CLIENT + client.client_id) is not None:
                return False
            await unit.mark_put(CLIENT + client.client_id, client.to_json())
            return True

        return await self.store.atomic(run)

    async def remove_client(self, client_id: str) -> bool:
        async def run(unit: Unit) -> bool:
            return await unit.mark_delete(CLIENT + client_id)

        return await self.store.atomic(run)

    async def clients(self) -> list[Client]:
        async def run(unit: Unit) -> list[tuple[str, str]]:
            return await unit.mark_list(CLIENT, limit=100_000)

        return [Client.from_json(v) for _, v in await self.store.atomic(run)]

    async def signing_keys(self) -> KeySet:
        """The server's private signing keys, newest first, made on first use."""
        async def run(unit: Unit) -> str:
            text = await unit.mark_get(KEYS)
            if text is None:
                text = orjson.dumps({"keys": [k.as_dict(private=True) for k in new_keys()]}
                                    ).decode()
                await unit.mark_put(KEYS, text)
            return text

        return KeySet.import_key_set(orjson.loads(await self.store.atomic(run)))

    async def with_id_token_key(self) -> KeySet:
        """The keys, with an RS256 one for OpenID ``id_token`` (SMART requires RS256) added on
        first need: made outside the unit (RSA generation takes a tenth of a second) and kept
        only if no other process got there first."""
        keys = await self.signing_keys()
        if any(k.alg == "RS256" for k in keys):
            return keys
        rsa = RSAKey.generate_key(2048, parameters={
            "kid": f"rs256-{secrets.token_hex(6)}", "use": "sig", "alg": "RS256"}, private=True)

        async def run(unit: Unit) -> str:
            text = await unit.mark_get(KEYS)
            doc = orjson.loads(text) if text else {"keys": []}
            if not any(k.get("alg") == "RS256" for k in doc["keys"]):
                doc["keys"].append(rsa.as_dict(private=True))
                text = orjson.dumps(doc).decode()
                await unit.mark_put(KEYS, text)
            return str(text)

        return KeySet.import_key_set(orjson.loads(await self.store.atomic(run)))

    async def rotate_keys(self, keep: int = 1) -> list[str]:
        """New signing keys in front; the ``keep`` previous generations still verify tokens
        already issued. Returns the kids now published."""
        rsa = RSAKey.generate_key(2048, parameters={
            "kid": f"rs256-{secrets.token_hex(6)}", "use": "sig", "alg": "RS256"}, private=True)

        async def run(unit: Unit) -> list[dict[str, Any]]:
            text = await unit.mark_get(KEYS)
            old: list[dict[str, Any]] = orjson.loads(text)["keys"] if text else []
            algs = sorted({str(k.get("alg")) for k in old})
            fresh = [k.as_dict(private=True) for k in new_keys()]
            if "RS256" in algs:
                fresh.append(rsa.as_dict(private=True))
            kept = [k for alg in algs for k in [o for o in old if o.get("alg") == alg][:keep]]
            keys = fresh + kept
            await unit.mark_put(KEYS, orjson.dumps({"keys": keys}).decode())
            return keys

        return [str(k["kid"]) for k in await self.store.atomic(run)]

    # -- short-lived documents (flows, codes, refresh tokens, launches, users) -----------------
    async def put_doc(self, key: str, doc: dict[str, Any]) -> None:
        async def run(unit: Unit) -> None:
            await unit.mark_put(key, orjson.dumps(doc).decode())

        await self.store.atomic(run)

    async def get_doc(self, key: str) -> dict[str, Any] | None:
        async def run(unit: Unit) -> str | None:
            return await unit.mark_get(key)

        text = await self.store.atomic(run)
        return None if text is None else dict(orjson.loads(text))

    async def take_doc(self, key: str) -> dict[str, Any] | None:
        """Read and remove in one unit: of two concurrent takers only one gets the document
        (an authorization code or a refresh token is used once)."""
        async def run(unit: Unit) -> str | None:
            text = await unit.mark_get(key)
            if text is not None:
                await unit.mark_delete(key)
            return text

        text = await self.store.atomic(run)
        return None if text is None else dict(orjson.loads(text))

    async def add_doc(self, key: str, doc: dict[str, Any]) -> bool:
        async def run(unit: Unit) -> bool:
            if await unit.mark_get(key) is not None:
                return False
            await unit.mark_put(key, orjson.dumps(doc).decode())
            return True

        return await self.store.atomic(run)

    async def delete_doc(self, key: str) -> bool:
        async def run(unit: Unit) -> bool:
            return await unit.mark_delete(key)

        return await self.store.atomic(run)

    async def docs(self, prefix: str, limit: int = 100_000) -> list[tuple[str, dict[str, Any]]]:
        async def run(unit: Unit) -> list[tuple[str, str]]:
            return await unit.mark_list(prefix, limit=limit)

        return [(k, dict(orjson.loads(v))) for k, v in await self.store.atomic(run)]

    async def take_jti(self, issuer: str, jti: str, expires: int, now: int) -> bool:
        """Record a client assertion's ``jti``; False when it was seen before and has not yet
        expired (a replay). Expired records are pruned as they are met."""
        key = f"{JTI}{issuer}/{jti}"

        async def run(unit: Unit) -> bool:
            seen = await unit.mark_get(key)
            if seen is not None and int(seen) >= now:
                return False
            await unit.mark_put(key, str(expires))
            for old, value in await unit.mark_list(f"{JTI}{issuer}/", limit=50):
                if int(value) < now:
                    await unit.mark_delete(old)
            return True

        return await self.store.atomic(run)


def new_keys() -> list[ECKey | RSAKey]:
    """One generation of signing keys: ES256 for access tokens (an RS256 key for OpenID
    ``id_token`` joins when the authorization-code flow arrives)."""
    stamp = secrets.token_hex(6)
    return [ECKey.generate_key("P-256", parameters={"kid": f"es256-{stamp}", "use": "sig",
                                                    "alg": "ES256"}, private=True)]
