"""Plain HTTP calls for tests, all sharing one TLS context.

httpx builds a fresh ``ssl.SSLContext`` (loading the whole CA bundle, about 20 ms) for every
client, and ``httpx.get`` and friends make a client per call: across the suite's thousands of
calls that was minutes of CI spent on certificates for plain-HTTP loopback servers. These
helpers behave exactly like httpx's own, with the context built once.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

TLS = ssl.create_default_context()


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("verify", TLS)
    return httpx.request(method, url, **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return request("POST", url, **kwargs)


def put(url: str, **kwargs: Any) -> httpx.Response:
    return request("PUT", url, **kwargs)


def patch(url: str, **kwargs: Any) -> httpx.Response:
    return request("PATCH", url, **kwargs)


def delete(url: str, **kwargs: Any) -> httpx.Response:
    return request("DELETE", url, **kwargs)


def client(**kwargs: Any) -> httpx.Client:
    kwargs.setdefault("verify", TLS)
    return httpx.Client(**kwargs)


def async_client(**kwargs: Any) -> httpx.AsyncClient:
    kwargs.setdefault("verify", TLS)
    return httpx.AsyncClient(**kwargs)
