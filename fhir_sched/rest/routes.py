"""Route handlers for the FHIR interactions. Each is thin: parse HTTP, call the service, render.

Routes are registered explicitly (not by decorators) so that the CapabilityStatement can be
checked against the routing table, and so operation routes (``/Appointment/$find``) are
registered before the generic ``/{type}/{id}`` routes that would otherwise swallow them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..context import RequestContext
from ..errors import FhirError, bad_request, outcome
from ..numbers import MAX_INT64, plain_int
from ..query import Expr
from ..resources import is_hosted
from ..search.parse import ParsedSearch, query_for
from ..service.proposals import is_proposal_id
from ..service.resources import Saved
from ..service.search import SearchResult, shape
from ..service.services import Services
from ..timeutil import date_range, format_instant, from_us
from .bundles import bundle, entry, history_entry, link
from .http import (
    FORM,
    JSON_TYPES,
    PATCH_JSON,
    FhirResponse,
    check_accept,
    check_content_type,
    context_for,
    parse_body,
    parse_etag,
    prefer_return,
    prefer_strict,
    read_body,
    version_headers,
)


class FhirRoutes:
    """The interaction handlers, bound to the services of one process."""

    def __init__(self, services: Services) -> None:
        self.service = services.resources
        self.search = services.search
        self.settings = services.settings
        self.bundles = services.bundles

    # -- helpers ---------------------------------------------------------------------------
    def ctx(self, request: Request) -> RequestContext:
        return context_for(request, self.settings.public_base, self.settings.base_path)

    def _type(self, request: Request) -> str:
        type_ = request.path_params["type"]
        if type_ in ("metadata", "_history") and "id" not in request.path_params:
            # system endpoints that only take GET; "/{type}" routes catch their other methods
            raise FhirError(405, "not-supported", f"{request.method} is not allowed on "
                            f"{request.url.path}", headers={"Allow": "GET"})
        if not is_hosted(type_):
            raise FhirError(404, "not-supported", f"resource type {type_!r} is not supported by "
                            "this server (see /metadata)")
        return str(type_)

    async def _json_body(self, request: Request, allowed: tuple[str, ...] = JSON_TYPES) -> Any:
        kind = check_content_type(request, allowed)
        return parse_body(await read_body(request, self.settings.max_body_bytes), kind)

    def _saved(self, request: Request, saved: Saved, status: int | None = None) -> Response:
        ctx = self.ctx(request)
        rec = saved.record
        headers = version_headers(rec, ctx.base_url)
        if status is None:
            status = 201 if saved.created else 200
        if saved.created:
            headers["Location"] = headers["Content-Location"]
        prefer = prefer_return(request)
        if prefer == "minimal":
            return Response(status_code=status, headers=headers)
        if prefer == "OperationOutcome":
            verb = "created" if saved.created else "updated" if saved.changed else "unchanged"
            oo = outcome("information", "informational", f"{rec.type}/{rec.id} {verb}, version "
                         f"{rec.version}")
            return FhirResponse(oo, status_code=status, headers=headers)
        return FhirResponse(rec.body, status_code=status, headers=headers)

    def _search_pairs(self, request: Request, form: list[tuple[str, str]] | None = None
                      ) -> list[tuple[str, str]]:
        pairs = [(k, v) for k, v in request.query_params.multi_items()]
        if form:
            pairs.extend(form)
        return pairs

    # -- instance level --------------------------------------------------------------------
    async def read(self, request: Request) -> Response:
        check_accept(request)
        type_ = self._type(request)
        if type_ == "Appointment" and is_proposal_id(request.path_params["id"]):
            return FhirResponse(await self.service.read_proposal(
                self.ctx(request), request.path_params["id"]))
        rec = await self.service.read(self.ctx(request), type_, request.path_params["id"])
        headers = version_headers(rec, self.ctx(request).base_url)
        del headers["Content-Location"]
        inm = request.headers.get("if-none-match")
        if inm and parse_etag(inm, "If-None-Match") == rec.version:
            return Response(status_code=304, headers=headers)
        assert rec.body is not None
        body = rec.body
        summary = request.query_params.get("_summary")
        elements = request.query_params.get("_elements")
        if summary or elements:
            body = shape(type_, body, summary, elements.split(",") if elements else None)
        return FhirResponse(body, headers=headers)

    async def vread(self, request: Request) -> Response:
        check_accept(request)
        type_ = self._type(request)
        p = request.path_params
        rec = await self.service.vread(self.ctx(request), type_, p["id"], p["vid"])
        headers = version_headers(rec, self.ctx(request).base_url)
        return FhirResponse(rec.body, headers=headers)

    async def update(self, request: Request) -> Response:
        return await self._instance_write(request, JSON_TYPES, self.service.update)

    async def patch(self, request: Request) -> Response:
        return await self._instance_write(request, (PATCH_JSON,), self.service.patch)

    async def _instance_write(
        self, request: Request, types: tuple[str, ...],
        write: Callable[[RequestContext, str, str, Any, int | None], Awaitable[Saved]],
    ) -> Response:
        """PUT and PATCH on ``[type]/[id]``: a JSON body, If-Match, the saved answer."""
        check_accept(request)
        type_ = self._type(request)
        body = await self._json_body(request, types)
        if_match = parse_etag(request.headers.get("if-match"), "If-Match")
        saved = await write(self.ctx(request), type_, request.path_params["id"], body, if_match)
        return self._saved(request, saved)

    async def delete(self, request: Request) -> Response:
        check_accept(request)
        type_ = self._type(request)
        if_match = parse_etag(request.headers.get("if-match"), "If-Match")
        saved = await self.service.delete(self.ctx(request), type_, request.path_params["id"],
                                          if_match)
        headers = {"ETag": f'W/"{saved.record.version}"'} if saved.changed else {}
        return Response(status_code=204, headers=headers)

    async def instance_history(self, request: Request) -> Response:
        return await self._history(request, self._type(request), request.path_params["id"])

    # -- type level ------------------------------------------------------------------------
    async def create(self, request: Request) -> Response:
        check_accept(request)
        type_ = self._type(request)
        ctype = check_content_type(request, (*JSON_TYPES, FORM))
        if ctype == FORM:
            raise bad_request("form bodies are only accepted at [type]/_search")
        body = parse_body(await read_body(request, self.settings.max_body_bytes), ctype)
        inx = request.headers.get("if-none-exist")
        q = None
        if inx:
            q = query_for(type_, parse_qsl(inx.lstrip("?"), keep_blank_values=True),
                          self.ctx(request).base_url)
        saved = await self.service.create(self.ctx(request), type_, body, q)
        return self._saved(request, saved)

    async def conditional_update(self, request: Request) -> Response:
        check_accept(request)
        type_ = self._type(request)
        body = await self._json_body(request)
        q = query_for(type_, list(request.query_params.multi_items()), self.ctx(request).base_url)
        if_match = parse_etag(request.headers.get("if-match"), "If-Match")
        saved = await self.service.conditional_update(self.ctx(request), type_, q, body,
                                                      if_match)
        return self._saved(request, saved)

    async def conditional_delete(self, request: Request) -> Response:
        check_accept(request)
        type_ = self._type(request)
        q = query_for(type_, list(request.query_params.multi_items()), self.ctx(request).base_url)
        await self.service.conditional_delete(self.ctx(request), type_, q)
        return Response(status_code=204)

    async def search_get(self, request: Request) -> Response:
        """``GET [type]?params``."""
        check_accept(request)
        return await self._search(request, self._type(request), self._search_pairs(request))

    async def search_post(self, request: Request) -> Response:
        """``POST [type]/_search`` with a form body (for parameters too long or too private for
        a URL); URL parameters, if any, count too, as the spec allows both."""
        check_accept(request)
        type_ = self._type(request)
        check_content_type(request, (FORM,))
        raw = await read_body(request, self.settings.max_body_bytes)
        try:
            form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise bad_request("the _search form body is not UTF-8") from None
        return await self._search(request, type_, self._search_pairs(request, form))

    async def compartment_search(self, request: Request) -> Response:
        """``Patient/[id]/[type]``: the same code path the SMART patient scopes will use."""
        from ..search.compartment import compartment_filter

        check_accept(request)
        # routed per compartment type (/Patient/{id}/Appointment, ...): the type is the last
        # path segment, so /Patient/{id}/_history can never be mistaken for a compartment
        type_ = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        pid = request.path_params["id"]
        where = compartment_filter(type_, f"Patient/{pid}")
        return await self._search(request, type_, self._search_pairs(request), where,
                                  path=f"Patient/{pid}/{type_}")

    async def type_history(self, request: Request) -> Response:
        return await self._history(request, self._type(request), None)

    async def system_history(self, request: Request) -> Response:
        return await self._history(request, None, None)

    async def _search(self, request: Request, type_: str, pairs: list[tuple[str, str]],
                      where: tuple[Expr, ...] = (), path: str | None = None) -> Response:
        """Every search door (GET, POST _search, compartments) ends here, so they answer alike:
        ``where`` is ANDed in (a compartment) and ``path`` is what the links point back to."""
        ctx = self.ctx(request)
        base = ctx.base_url
        parsed, result = await self.search.search(ctx, type_, pairs, strict=prefer_strict(request),
                                                  base_url=base, where=where)
        path = path or type_
        links = [("self", link(base, path, self._link_params(parsed, result.self_token)))]
        if result.next_token:
            links.append(("next", link(base, path, self._link_params(parsed, result.next_token))))
        if result.prev_token:
            links.append(("previous", link(base, path,
                                           self._link_params(parsed, result.prev_token))))
        return FhirResponse(searchset(base, type_, parsed, result, links))

    @staticmethod
    def _link_params(parsed: ParsedSearch, token: str | None) -> list[tuple[str, str]]:
        """The parameters actually applied (unknown and empty ones dropped, ``_count`` as
        capped), plus the page token: a link the client can follow and the server will read
        exactly as it meant."""
        params = list(parsed.applied)
        if token:
            params.append(("_page", token))
        return params

    async def _history(self, request: Request, type_: str | None, id_: str | None) -> Response:
        check_accept(request)
        ctx = self.ctx(request)
        qp = request.query_params
        count = self.settings.default_count
        if "_count" in qp:
            asked = plain_int(qp["_count"])
            if asked is None:
                raise FhirError(400, "invalid", "_count must be a non-negative integer",
                                expression=["_count"])
            count = min(asked, self.settings.max_count)
        since = None
        if "_since" in qp:
            try:
                since = format_instant(from_us(date_range(qp["_since"], require_offset=True)[0]))
            except ValueError as exc:
                raise FhirError(400, "invalid", f"_since: {exc}", expression=["_since"]) from None
        before = None
        if "_page" in qp:
            before = plain_int(qp["_page"])
            if before is None or before > MAX_INT64:
                raise FhirError(400, "invalid", "_page token is malformed", expression=["_page"])
        records = await self.service.history(ctx, type_, id_, since, count + 1, before)
        more = len(records) > count
        records = records[:count]
        path = "/".join(p for p in (type_, id_) if p) + ("/" if type_ else "") + "_history"
        params = [(k, v) for k, v in qp.multi_items() if k != "_page"]
        links = [("self", link(ctx.base_url, path, list(qp.multi_items())))]
        if more and records:
            links.append(("next", link(ctx.base_url, path,
                                       [*params, ("_page", str(records[-1].seq))])))
        entries = [history_entry(ctx.base_url, r) for r in records]
        return FhirResponse(bundle("history", entries, total=None, links=links))

    # -- system level ----------------------------------------------------------------------
    async def batch_or_transaction(self, request: Request) -> Response:
        check_accept(request)
        ctx = self.ctx(request)
        body = await self._json_body(request)
        kind = body.get("type") if isinstance(body, dict) else None
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise bad_request("POST to the base takes a Bundle (type batch or transaction)")
        minimal = prefer_return(request) == "minimal"
        if kind == "transaction":
            results = await self.bundles.transaction(ctx, body, ctx.base_url, minimal)
        elif kind == "batch":
            results = await self.bundles.batch(ctx, body, ctx.base_url, minimal)
        else:
            raise bad_request(f"Bundle.type {kind!r} cannot be processed; use batch or "
                              "transaction", expression=["Bundle.type"])
        entries: list[dict[str, Any]] = []
        for r in results:
            resp: dict[str, Any] = {"status": r.status}
            if r.location:
                resp["location"] = r.location
            if r.etag:
                resp["etag"] = r.etag
            if r.last_modified:
                resp["lastModified"] = r.last_modified
            if r.outcome:
                resp["outcome"] = r.outcome
            e: dict[str, Any] = {"response": resp}
            if r.search is not None:
                e["resource"] = orjson.Fragment(searchset(ctx.base_url, r.search_type or "",
                                                          None, r.search, []))
            elif r.resource is not None:
                e["resource"] = orjson.Fragment(r.resource)
            entries.append(e)
        return FhirResponse(bundle(f"{kind}-response", entries))


def searchset(base: str, type_: str, parsed: ParsedSearch | None, result: SearchResult,
              links: list[tuple[str, str]]) -> bytes:
    """A searchset Bundle of one page: matches (shaped by _summary/_elements), then includes."""
    summary, elements = (parsed.summary, parsed.elements) if parsed else (None, None)
    entries = [entry(base, type_, i, shape(type_, b, summary, elements), search={"mode": "match"})
               for i, b in result.rows]
    entries += [entry(base, t, i, b, search={"mode": "include"}) for t, i, b in result.included]
    return bundle("searchset", entries, total=result.total, links=links)
