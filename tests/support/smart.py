"""SMART test helpers: client key pairs, client assertions as a backend client makes them, and a
server started with auth on, its clients registered through the real ``fhir-sched client`` CLI.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.support import web

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class BackendClient:
    client_id: str
    alg: str  # RS384 | ES384
    key: Any

    @classmethod
    def new(cls, client_id: str, alg: str = "ES384", kid: str | None = None) -> BackendClient:
        kid = kid or f"{client_id}-{alg.lower()}"
        if alg.startswith("ES"):
            key: Any = ECKey.generate_key("P-384", parameters={"kid": kid}, private=True)
        else:
            key = RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)
        return cls(client_id, alg, key)

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [{**self.key.as_dict(private=False), "alg": self.alg}]}

    def assertion(self, audience: str, **changes: Any) -> str:
        """A client assertion; ``changes`` override claims (None removes one), and the
        pseudo-claims ``_header``/``_key``/``_alg`` change how it is signed."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.client_id, "sub": self.client_id, "aud": audience,
                                  "exp": now + 240, "iat": now, "jti": secrets.token_hex(32)}
        header = {"alg": self.alg, "kid": self.key.kid, "typ": "JWT", **changes.pop("_header",
                                                                                  {})}
        key = changes.pop("_key", self.key)
        for name, value in changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return jwt.encode(header, claims, key, algorithms=[header["alg"]])


def register(store: str, client_id: str, scope: str, *extra: str) -> subprocess.CompletedProcess[
        str]:
    return subprocess.run([sys.executable, "-m", "fhir_sched.cli", "client", "add",
                           "--client-id", client_id, "--scope", scope, "--store", store, *extra],
                          capture_output=True, text=True, timeout=60)


def register_backend(store: str, client: BackendClient, scope: str, directory: Path) -> None:
    """Register ``client`` through the real CLI, its public keys in a JWKS file."""
    path = directory / f"{client.client_id}.json"
    path.write_text(json.dumps(client.public_jwks()))
    done = register(store, client.client_id, scope, "--jwks-file", str(path))
    assert done.returncode == 0, done.stderr


def token_form(client: BackendClient, token_url: str, scope: str, **changes: Any
               ) -> dict[str, str]:
    return {"grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client.assertion(token_url, **changes)}


def get_token(base: str, client: BackendClient, scope: str) -> str:
    config = web.get(f"{base}/.well-known/smart-configuration").json()
    response = web.post(config["token_endpoint"],
                        data=token_form(client, config["token_endpoint"], scope))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
