"""HTTP plumbing shared by the operation modules: reading inputs and answering with a Bundle."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request

from ..errors import bad_request
from ..rest.bundles import bundle, entry
from ..rest.http import (
    FORM,
    JSON_TYPES,
    FhirResponse,
    check_accept,
    check_content_type,
    parse_json,
    read_body,
)
from .definition import OperationDef, from_parameters, from_query


async def inputs(request: Request, op: OperationDef, limit: int) -> dict[str, list[Any]]:
    """A GET's query string, or a POST's Parameters resource (or form, for GET-able ops)."""
    check_accept(request)
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("_format",)]
    if request.method == "GET":
        return from_query(op, query)
    ctype = check_content_type(request, (*JSON_TYPES, FORM))
    raw = await read_body(request, limit)
    if ctype == FORM:
        try:
            form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise bad_request("the form body is not UTF-8") from None
        return from_query(op, query + form)
    if query:
        raise bad_request(f"POST ${op.code} takes its inputs in the Parameters body, not the "
                          "query string", [query[0][0]])
    return from_parameters(op, parse_json(raw))


def one(values: dict[str, list[Any]], name: str) -> Any:
    got = values.get(name)
    return got[0] if got else None


def result_bundle(base: str, resources: list[dict[str, Any]] | list[bytes],
                  total: int | None = None, headers: dict[str, str] | None = None
                  ) -> FhirResponse:
    entries = []
    for res in resources:
        body = res if isinstance(res, bytes) else orjson.dumps(res)
        parsed = orjson.loads(body) if isinstance(res, bytes) else res
        rid = parsed.get("id")
        e = entry(base, "Appointment", rid, body, search={"mode": "match"}) if rid else {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": orjson.Fragment(body),
            "search": {"mode": "match"}}
        entries.append(e)
    return FhirResponse(bundle("searchset", entries,
                               total=len(entries) if total is None else total),
                        headers=headers or {})

