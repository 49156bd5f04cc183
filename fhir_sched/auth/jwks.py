"""Client key sets: inline, or fetched from the client's registered JWKS URL and cached.

The cache honours the response's ``Cache-Control`` (``max-age``, ``no-store``/``no-cache``), as
SMART Backend Services requires, and is at most ``MAX_SECONDS`` old otherwise, so a client that
rotates its keys is trusted with the new ones within minutes. When an assertion names a ``kid``
the cached set lacks, the set is fetched again once (a rotation the cache has not seen yet).
"""

from __future__ import annotations

import functools
import json
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx

MAX_SECONDS = 300
FETCH_TIMEOUT = 5.0
MAX_BYTES = 256 * 1024


@functools.cache
def _tls() -> ssl.SSLContext:
    """Built once: an httpx client made without one loads the whole CA bundle (about 20 ms,
    blocking the event loop) each time, and a token check may fetch."""
    return httpx.create_ssl_context()


class TooLarge(Exception):
    pass


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: httpx.Headers
    body: bytes


async def fetch(method: str, url: str, **kwargs: Any) -> Fetched:
    """One request to another server on the auth path (a JWKS, discovery, introspection):
    bounded in time (``FETCH_TIMEOUT``) and in size (``MAX_BYTES``, read no further), never
    following redirects. Raises ``httpx.HTTPError`` or ``TooLarge``."""
    async with (httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False,
                                  verify=_tls()) as http,
                http.stream(method, url, **kwargs) as response):
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_BYTES:
                raise TooLarge(f"{url} answered more than {MAX_BYTES} bytes")
        return Fetched(response.status_code, response.headers, bytes(body))
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)")


class JwksError(Exception):
    pass


def cache_seconds(cache_control: str | None) -> int:
    if not cache_control:
        return MAX_SECONDS
    text = cache_control.lower()
    if "no-store" in text or "no-cache" in text:
        return 0
    m = _MAX_AGE.search(text)
    return min(int(m[1]), MAX_SECONDS) if m else MAX_SECONDS


class JwksCache:
    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def get(self, url: str, *, refresh: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        hit = self._cache.get(url)
        if hit is not None and hit[0] > now and not refresh:
            return hit[1]
        try:
            response = await fetch("GET", url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise JwksError(f"cannot fetch the client's JWKS from {url}: {exc}") from None
        except TooLarge:
            raise JwksError(f"the client's JWKS at {url} is larger than {MAX_BYTES} bytes"
                            ) from None
        if response.status != 200:
            raise JwksError(f"the client's JWKS URL {url} answered {response.status}")
        try:
            jwks = json.loads(response.body)
        except ValueError:
            raise JwksError(f"the client's JWKS at {url} is not JSON") from None
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise JwksError(f"the document at {url} is not a JWKS (no keys array)")
        seconds = cache_seconds(response.headers.get("cache-control"))
        if seconds:
            self._cache[url] = (now + seconds, jwks)
        else:
            self._cache.pop(url, None)
        return jwks
