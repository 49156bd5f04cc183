"""Client key sets: inline, or fetched from the client's registered JWKS URL and cached.

The cache honours the response's ``Cache-Control`` (``max-age``, ``no-store``/``no-cache``), as
SMART Backend Services requires, and is at most ``MAX_SECONDS`` old otherwise, so a client that
rotates its keys is trusted with the new ones within minutes. When an assertion names a ``kid``
the cached set lacks, the set is fetched again once (a rotation the cache has not seen yet).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx

from ..outbound import MAX_BYTES, TooLarge, fetch

MAX_SECONDS = 300
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
