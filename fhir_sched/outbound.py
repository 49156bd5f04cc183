"""One bounded HTTP request to another server: a JWKS, an issuer's discovery document, a
token introspection, a payer's eligibility gateway.

Every caller waits on someone else's server from inside a request of ours, so each request is
bounded in time and in size (read no further than the limit) and never follows a redirect (a
redirect is the other server's to explain, and following one would let it point us anywhere).
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT_SECONDS = 5.0
MAX_BYTES = 256 * 1024


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Built once: an httpx client made without one loads the whole CA bundle (about 20 ms,
    blocking the event loop) each time, and a token check or a booking may fetch."""
    return httpx.create_ssl_context()


class TooLarge(Exception):
    pass


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: httpx.Headers
    body: bytes


async def fetch(method: str, url: str, *, timeout: float = TIMEOUT_SECONDS,
                max_bytes: int = MAX_BYTES, **kwargs: Any) -> Fetched:
    """``method url``, answered within ``timeout`` seconds per phase (connect, each read) and
    at most ``max_bytes`` long. Raises ``httpx.HTTPError`` or ``TooLarge``."""
    async with (httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                  verify=tls_context()) as http,
                http.stream(method, url, **kwargs) as response):
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise TooLarge(f"{url} answered more than {max_bytes} bytes")
        return Fetched(response.status_code, response.headers, bytes(body))
