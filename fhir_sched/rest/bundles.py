"""Bundle assembly from stored bytes: resources are spliced in with ``orjson.Fragment``, never
parsed and re-serialised, so a page of search results costs what its bytes cost."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson

from ..storage.base import Record
from ..timeutil import now_instant


def entry(base: str, type_: str, id_: str, body: bytes | None, **extra: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"fullUrl": f"{base}/{type_}/{id_}"}
    if body is not None:
        e["resource"] = orjson.Fragment(body)
    e.update(extra)
    return e


def bundle(kind: str, entries: list[dict[str, Any]], *, total: int | None = None,
           links: list[tuple[str, str]] | None = None) -> bytes:
    b: dict[str, Any] = {"resourceType": "Bundle", "type": kind, "timestamp": now_instant()}
    if total is not None:
        b["total"] = total
    if links:
        b["link"] = [{"relation": r, "url": u} for r, u in links]
    b["entry"] = entries
    if not entries:
        del b["entry"]
    return orjson.dumps(b)


def history_entry(base: str, rec: Record) -> dict[str, Any]:
    url = f"{rec.type}/{rec.id}"
    status = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[rec.method]
    e = entry(base, rec.type, rec.id, None if rec.deleted else rec.body)
    e["request"] = {"method": rec.method, "url": url if rec.method != "POST" else rec.type}
    e["response"] = {"status": status, "etag": f'W/"{rec.version}"', "lastModified": rec.updated}
    return e


def link(base: str, path: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params, safe=":|,/$")
    return f"{base}/{path}" + (f"?{query}" if query else "")
