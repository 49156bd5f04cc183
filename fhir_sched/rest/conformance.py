"""The definitions the server runs on, readable where clients look for them.

Every OperationDefinition, StructureDefinition and SearchParameter in ``conformance/`` (the
operations' parameters, our extensions, the search parameters core R4 lacks) is served at
``GET [base]/[type]/[id]`` and found by ``GET [base]/[type]?url=`` (also ``_id``, ``name``,
``version``), so a client that meets a canonical URL in the CapabilityStatement or an extension
can resolve it on the same server. They are the server's code, not data: read-only, so every
write is answered 405 by the router (only GET is routed for these types).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from functools import cache
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..conformance_files import load_all
from ..errors import FhirError
from .bundles import bundle, entry, link
from .capability import RouteSpec
from .http import FhirResponse, check_accept, context_for, prefer_strict

Handler = Callable[[Request], Awaitable[Response]]
# Measure: the scheduling KPIs, definitions of what $evaluate-measure computes (read-only for
# that reason; see service/measures.py).
CONFORMANCE_TYPES = ("CodeSystem", "Measure", "OperationDefinition", "SearchParameter",
                     "StructureDefinition")
# search parameter -> the element it matches exactly (token/uri semantics)
SEARCH_PARAMS = {"url": "url", "_id": "id", "name": "name", "version": "version"}
_RESULT_PARAMS = frozenset({"_format", "_count", "_summary", "_elements"})


@cache
def catalog() -> dict[str, dict[str, bytes]]:
    """type -> id -> serialized resource, for every definition file in ``conformance/``."""
    out: dict[str, dict[str, bytes]] = {t: {} for t in CONFORMANCE_TYPES}
    for res in load_all("*.json"):
        if isinstance(res, dict) and res.get("resourceType") in out:
            out[res["resourceType"]][res["id"]] = orjson.dumps(res)
    return out


def _matches(body: bytes, criteria: list[tuple[str, str]]) -> bool:
    res = orjson.loads(body)
    # a canonical may carry |version: url=http://...|0.1.0
    for name, value in criteria:
        wanted = value.split(",")
        element = SEARCH_PARAMS[name]
        got = res.get(element)
        if name == "url":
            got_v = f"{got}|{res.get('version')}"
            if not any(w in (got, got_v) for w in wanted):
                return False
        elif got not in wanted:
            return False
    return True


def conformance_routes(public_base: str, base_path: str) -> Iterator[tuple[RouteSpec, Handler]]:
    """Read and search routes for the conformance types (declared in the statement as such)."""

    async def read(request: Request) -> Response:
        check_accept(request)
        type_ = request.url.path.rstrip("/").rsplit("/", 2)[-2]
        body = catalog()[type_].get(request.path_params["id"])
        if body is None:
            raise FhirError(404, "not-found", f"{type_}/{request.path_params['id']} is not "
                            f"known; GET {type_} lists the ones this server uses")
        return FhirResponse(body)

    async def search(request: Request) -> Response:
        check_accept(request)
        ctx = context_for(request, public_base, base_path)
        type_ = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        criteria: list[tuple[str, str]] = []
        for name, value in request.query_params.multi_items():
            if name in SEARCH_PARAMS:
                criteria.append((name, value))
            elif name not in _RESULT_PARAMS and prefer_strict(request):
                raise FhirError(400, "not-supported", f"unknown search parameter {name!r} for "
                                f"{type_} (known: {', '.join(SEARCH_PARAMS)})",
                                expression=[name])
        rows = [(i, b) for i, b in sorted(catalog()[type_].items()) if _matches(b, criteria)]
        entries = [entry(ctx.base_url, type_, i, b, search={"mode": "match"}) for i, b in rows]
        return FhirResponse(bundle("searchset", entries, total=len(entries),
                                   links=[("self", link(ctx.base_url, type_, criteria))]))

    for type_ in CONFORMANCE_TYPES:
        yield RouteSpec(f"/{type_}/{{id}}", ("GET",), "read", "instance", (type_,)), read
        yield RouteSpec(f"/{type_}", ("GET",), "search-type", "type", (type_,)), search


def capability_entry(type_: str) -> dict[str, Any]:
    """The CapabilityStatement entry of a conformance type: read-only, searchable by url."""
    return {
        "type": type_,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{type_}",
        "documentation": "The definitions this server runs on (conformance/); read-only.",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": False,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": [
            {"name": "url", "type": "uri",
             "definition": "http://hl7.org/fhir/SearchParameter/conformance-url"},
            {"name": "name", "type": "string",
             "definition": "http://hl7.org/fhir/SearchParameter/conformance-name",
             "documentation": "exact match"},
            {"name": "version", "type": "token",
             "definition": "http://hl7.org/fhir/SearchParameter/conformance-version"},
            {"name": "_id", "type": "token",
             "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
        ],
    }
