"""An httpx client for FHIR tests that checks every JSON body against the official R4 schema.

Validation is the independent oracle: nobody here wrote the schema, so a body our server
emits that the schema rejects fails the test that received it, whatever that test asserted.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.support import web

FHIR = "application/fhir+json"


class SchemaViolation(AssertionError):
    pass


def _check(schema: Any, response: httpx.Response) -> None:
    ctype = response.headers.get("content-type", "")
    if "json" not in ctype or not response.content:
        return
    body = orjson.loads(response.content)
    if not isinstance(body, dict) or "resourceType" not in body:
        raise SchemaViolation(f"{response.request.method} {response.request.url}: body is not "
                              f"a FHIR resource: {response.text[:200]}")
    errors = schema.errors(body)
    if errors:
        raise SchemaViolation(f"{response.request.method} {response.request.url} -> "
                              f"{response.status_code}: schema errors: {errors[:5]}")


def fhir_client(base: str, schema: Any, **kwargs: Any) -> httpx.AsyncClient:
    async def hook(response: httpx.Response) -> None:
        await response.aread()
        _check(schema, response)

    headers = {"accept": FHIR, **kwargs.pop("headers", {})}
    return web.async_client(base_url=base, headers=headers, timeout=30.0,
                            event_hooks={"response": [hook]}, **kwargs)


def sync_fhir_client(base: str, schema: Any, **kwargs: Any) -> httpx.Client:
    def hook(response: httpx.Response) -> None:
        response.read()
        _check(schema, response)

    headers = {"accept": FHIR, **kwargs.pop("headers", {})}
    return web.client(base_url=base, headers=headers, timeout=30.0,
                      event_hooks={"response": [hook]}, **kwargs)
