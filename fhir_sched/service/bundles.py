"""``batch`` and ``transaction`` Bundles posted to the base.

A transaction runs every entry in one atomic unit in the R4 order (DELETE, POST, PUT/PATCH, then
GET), rewrites ``urn:uuid:`` and conditional references to the ids it assigns or finds, and
either commits everything or nothing; the first failing entry's OperationOutcome names it. A batch
runs each entry on its own and reports each outcome in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from ..context import RequestContext
from ..errors import FhirError, bad_request, not_found, precondition_failed, unprocessable
from ..numbers import MAX_INT64, plain_int
from ..resources import is_hosted
from ..search.parse import query_for
from ..storage.base import Unit
from ..storage.errors import StoreError, StoreUnavailable
from .authorization import Interaction
from .resources import ResourceService, Saved, check_id
from .resources import new_id as make_id
from .search import SearchResult, SearchService
from .store_errors import as_fhir_error

Json = dict[str, Any]
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass(slots=True)
class EntryResult:
    status: str
    location: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    resource: bytes | None = None
    outcome: Json | None = None
    # A search entry of a batch: the door renders it as a searchset Bundle.
    search: SearchResult | None = None
    search_type: str | None = None


@dataclass(slots=True)
class Target:
    type: str
    id: str | None = None
    version: str | None = None
    query: list[tuple[str, str]] | None = None


def parse_url(url: str, where: str) -> Target:
    parts = urlsplit(url)
    path = parts.path.strip("/")
    segs = [unquote(s) for s in path.split("/") if s]
    if not segs:
        raise bad_request(f"{where}: request.url {url!r} names no resource type")
    type_ = segs[0]
    if not is_hosted(type_):
        raise FhirError(404, "not-supported", f"{where}: {type_!r} is not a type this server "
                        "hosts")
    query = parse_qsl(parts.query, keep_blank_values=True) if parts.query else None
    if len(segs) == 1:
        return Target(type_, query=query)
    if len(segs) == 2:
        check_id(segs[1])
        return Target(type_, segs[1], query=query)
    if len(segs) == 4 and segs[2] == "_history":
        return Target(type_, segs[1], segs[3])
    raise bad_request(f"{where}: request.url {url!r} is not understood")


def _replace_refs(node: Any, mapping: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and v in mapping:
                out[k] = mapping[v]
            else:
                out[k] = _replace_refs(v, mapping)
        return out
    if isinstance(node, list):
        return [_replace_refs(v, mapping) for v in node]
    return node


def _iter_ref_values(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                found.append(v)
            else:
                found.extend(_iter_ref_values(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(_iter_ref_values(v))
    return found


def _saved_result(saved: Saved, base: str, minimal: bool) -> EntryResult:
    rec = saved.record
    status = "201 Created" if saved.created else "200 OK"
    return EntryResult(
        status=status,
        location=f"{base}/{rec.type}/{rec.id}/_history/{rec.version}",
        etag=f'W/"{rec.version}"',
        last_modified=rec.updated,
        resource=None if minimal else rec.body,
    )


def _in_entry(exc: FhirError, n: int) -> FhirError:
    """The same error, naming the transaction entry it came from."""
    where = f"Bundle.entry[{n}]"
    exc.diagnostics = f"{where}: {exc.diagnostics}"
    exc.expression = [where, *(exc.expression or [])]
    exc.args = (exc.diagnostics,)
    return exc


def _if_match(raw: Any, where: str) -> int | None:
    if raw is None:
        return None
    version = plain_int(str(raw).removeprefix("W/").strip('"'))
    if version is None:
        raise bad_request(f"{where}: ifMatch must be a version ETag like W/\"1\"")
    return min(version, MAX_INT64)


def _request_of(e: Json, n: int) -> tuple[Json, str, str, Target, int | None]:
    """An entry's request, method, location for messages, target and If-Match."""
    req = e["request"]
    where = f"Bundle.entry[{n}]"
    return req, req["method"], where, parse_url(req["url"], where), _if_match(
        req.get("ifMatch"), where)


class BundleProcessor:
    def __init__(self, service: ResourceService, search: SearchService,
                 max_entries: int = 1000) -> None:
        self.service = service
        self.search = search
        # Entries one batch or transaction may hold: each is a request's worth of work, and
        # a transaction holds the writer for all of them at once.
        self.max_entries = max_entries

    def _entries(self, bundle: Any) -> list[Json]:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise bad_request("POST to the base takes a Bundle of type batch or transaction")
        # Only an absent entry means "empty": `"entry": {}` is a client mistake, not a no-op.
        entries = bundle.get("entry", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise bad_request("Bundle.entry must be an array of objects",
                              expression=["Bundle.entry"])
        if len(entries) > self.max_entries:
            raise FhirError(400, "too-costly", f"a batch or transaction may hold at most "
                            f"{self.max_entries} entries; this one has {len(entries)} "
                            "(FHIR_SCHED_MAX_BUNDLE_ENTRIES): send it in parts",
                            expression=["Bundle.entry"])
        for n, e in enumerate(entries):
            req = e.get("request")
            if not isinstance(req, dict) or req.get("method") not in _ORDER or not isinstance(
                    req.get("url"), str):
                raise bad_request(f"Bundle.entry[{n}].request needs a method "
                                  f"({', '.join(_ORDER)}) and a url",
                                  expression=[f"Bundle.entry[{n}].request"])
            # Checked up front because later steps hash and parse these as strings.
            if not isinstance(e.get("fullUrl", ""), str):
                raise bad_request(f"Bundle.entry[{n}].fullUrl must be a string",
                                  expression=[f"Bundle.entry[{n}].fullUrl"])
            for key in ("ifNoneExist", "ifMatch"):
                if not isinstance(req.get(key, ""), str):
                    raise bad_request(f"Bundle.entry[{n}].request.{key} must be a string",
                                      expression=[f"Bundle.entry[{n}].request.{key}"])
        return entries

    # -- transaction ---------------------------------------------------------------------------
    async def transaction(self, ctx: RequestContext, bundle: Any, base: str,
                          minimal: bool) -> list[EntryResult]:
        self.service.authorizer.check(ctx, Interaction.TRANSACTION, None)
        entries = self._entries(bundle)
        order = sorted(range(len(entries)), key=lambda n: _ORDER[entries[n]["request"]["method"]])
        full_urls = [e.get("fullUrl") for e in entries]
        dupes = {u for u in full_urls if u and full_urls.count(u) > 1}
        if dupes:
            raise bad_request(f"duplicate fullUrl in transaction: {sorted(dupes)[0]}")
        # Assign ids to creates up front so urn:uuid references can be rewritten everywhere.
        mapping: dict[str, str] = {}
        new_ids: dict[int, str] = {}
        for n, e in enumerate(entries):
            if e["request"]["method"] == "POST":
                target = parse_url(e["request"]["url"], f"Bundle.entry[{n}]")
                new_ids[n] = make_id()
                if isinstance(e.get("fullUrl"), str):
                    mapping[e["fullUrl"]] = f"{target.type}/{new_ids[n]}"
        svc = self.service

        async def run(unit: Unit) -> list[EntryResult]:
            results: list[EntryResult | None] = [None] * len(entries)
            written: list[tuple[int, Json]] = []
            local_map = dict(mapping)
            # conditional creates that match: point their fullUrl at the existing resource
            for n, e in enumerate(entries):
                inx = e["request"].get("ifNoneExist")
                if e["request"]["method"] == "POST" and inx:
                    t = parse_url(e["request"]["url"], f"Bundle.entry[{n}]")
                    q = query_for(t.type, parse_qsl(inx.lstrip("?"), keep_blank_values=True),
                                  base)
                    found = await unit.find_ids(q, limit=2)
                    if len(found) > 1:
                        raise precondition_failed(f"Bundle.entry[{n}]: ifNoneExist matched "
                                                  "more than one resource")
                    if found:
                        if isinstance(e.get("fullUrl"), str):
                            local_map[e["fullUrl"]] = f"{t.type}/{found[0]}"
                        rec = await unit.get(t.type, found[0])
                        assert rec is not None
                        results[n] = _saved_result(Saved(rec, False, False), base, minimal)
            # conditional references (Type?criteria) resolve to exactly one match
            for n, e in enumerate(entries):
                for ref in _iter_ref_values(e.get("resource")):
                    if "?" in ref and ref not in local_map and "://" not in ref:
                        t = parse_url(ref, f"Bundle.entry[{n}].resource")
                        q = query_for(t.type, t.query or [], base)
                        found = await unit.find_ids(q, limit=2)
                        if len(found) != 1:
                            raise FhirError(412 if found else 404,
                                            "multiple-matches" if found else "not-found",
                                            f"Bundle.entry[{n}]: conditional reference {ref!r}"
                                            f" matched {len(found)} resources; it must match "
                                            "exactly one")
                        local_map[ref] = f"{t.type}/{found[0]}"
            for n in order:
                if results[n] is not None:
                    continue
                try:
                    results[n] = await self._tx_entry(unit, ctx, entries[n], n, new_ids.get(n),
                                                      local_map, base, minimal, written)
                except FhirError as exc:
                    raise _in_entry(exc, n) from None
            for n, res in written:
                try:
                    await svc.check_references(unit, res)
                except FhirError as exc:
                    raise _in_entry(exc, n) from None
            return [r for r in results if r is not None]

        return await svc.atomic(run)

    async def _tx_entry(self, unit: Unit, ctx: RequestContext, e: Json, n: int,
                        new_id: str | None, mapping: dict[str, str], base: str, minimal: bool,
                        written: list[tuple[int, Json]]) -> EntryResult:
        svc = self.service
        _req, method, _where, target, if_match = _request_of(e, n)
        body = _replace_refs(e.get("resource"), mapping) if e.get("resource") is not None else None
        if method == "DELETE":
            if target.id is None:
                q = query_for(target.type, target.query or [], base)
                found = await unit.find_ids(q, limit=2)
                if len(found) > 1:
                    raise precondition_failed("conditional delete matched several resources")
                ids = found
            else:
                ids = [target.id]
            for gone_id in ids:
                await svc.put_in_unit(unit, ctx, target.type, gone_id, None, if_match=if_match)
            return EntryResult("204 No Content")
        if method == "POST":
            svc.authorizer.check(ctx, Interaction.CREATE, target.type)
            assert new_id is not None
            body = svc.prepare(target.type, body, None)
            saved = await svc.put_in_unit(unit, ctx, target.type, new_id, body,
                                          check_refs=False)
            written.append((n, orjson.loads(saved.record.body or b"{}")))
            return _saved_result(saved, base, minimal)
        if method in ("PUT", "PATCH"):
            svc.authorizer.check(ctx, Interaction.UPDATE, target.type, target.id)
            id_: str
            if target.id is not None:
                id_ = target.id
            else:
                q = query_for(target.type, target.query or [], base)
                found = await unit.find_ids(q, limit=2)
                if len(found) > 1:
                    raise precondition_failed("conditional update matched several resources")
                given = (body or {}).get("id") if isinstance(body, dict | type(None)) else None
                id_ = found[0] if found else given if isinstance(given, str) else make_id()
                if isinstance(body, dict):
                    body = {**body, "id": id_}
            if method == "PATCH":
                body = await self._patched(unit, target.type, id_, e)
            body = svc.prepare(target.type, body, id_)
            saved = await svc.put_in_unit(unit, ctx, target.type, id_, body, if_match=if_match,
                                          check_refs=False)
            written.append((n, orjson.loads(saved.record.body or b"{}")))
            return _saved_result(saved, base, minimal)
        # GET/HEAD inside a transaction reads the state as it is at this point of the unit
        if target.id is None:
            raise unprocessable("searches are not supported inside a transaction; use a batch")
        rec = await unit.get(target.type, target.id)
        if rec is None or rec.deleted:
            raise not_found(f"{target.type}/{target.id} is not known")
        svc.authorizer.check(ctx, Interaction.READ, target.type, target.id,
                             resource=orjson.loads(rec.body) if rec.body else None)
        return EntryResult("200 OK", etag=f'W/"{rec.version}"', last_modified=rec.updated,
                           resource=rec.body)

    async def _patched(self, unit: Unit, type_: str, id_: str, e: Json) -> Json:
        import jsonpatch

        res = e.get("resource")
        if not (isinstance(res, dict) and res.get("resourceType") == "Binary"):
            raise bad_request("a PATCH entry carries its JSON Patch as a Binary resource")
        import base64

        try:
            ops = orjson.loads(base64.b64decode(res.get("data", "")))
            rec = await unit.get(type_, id_)
            if rec is None or rec.deleted or rec.body is None:
                raise not_found(f"{type_}/{id_} is not known")
            patched: Json = jsonpatch.JsonPatch(ops).apply(orjson.loads(rec.body))
            return patched
        except (ValueError, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException,
                TypeError, KeyError) as exc:
            raise unprocessable(f"JSON Patch could not be applied: {exc}") from exc

    # -- batch -----------------------------------------------------------------------------------
    async def batch(self, ctx: RequestContext, bundle: Any, base: str,
                    minimal: bool) -> list[EntryResult]:
        self.service.authorizer.check(ctx, Interaction.BATCH, None)
        entries = self._entries(bundle)
        results = []
        for n, e in enumerate(entries):
            try:
                results.append(await self._batch_entry(ctx, e, n, base, minimal))
            except FhirError as exc:
                results.append(_failed(exc))
            except StoreUnavailable:
                raise  # the database is down: the whole batch is a 503 to retry
            except StoreError as exc:  # one entry the database refused (too costly, ...)
                results.append(_failed(as_fhir_error(exc)))
        return results

    async def _batch_entry(self, ctx: RequestContext, e: Json, n: int, base: str,
                           minimal: bool) -> EntryResult:
        svc = self.service
        req, method, where, target, if_match = _request_of(e, n)
        body = e.get("resource")
        if method == "GET" or method == "HEAD":
            if target.id is None:
                _parsed, result = await self.search.search(ctx, target.type, target.query or [],
                                                           base_url=base)
                return EntryResult("200 OK", search=result, search_type=target.type)
            if target.version is not None:
                rec = await svc.vread(ctx, target.type, target.id, target.version)
            else:
                rec = await svc.read(ctx, target.type, target.id)
            return EntryResult("200 OK", etag=f'W/"{rec.version}"', last_modified=rec.updated,
                               resource=rec.body)
        if method == "DELETE":
            if target.id is None:
                q = query_for(target.type, target.query or [], base)
                await svc.conditional_delete(ctx, target.type, q)
            else:
                await svc.delete(ctx, target.type, target.id, if_match)
            return EntryResult("204 No Content")
        if method == "POST":
            inx = req.get("ifNoneExist")
            cond = query_for(target.type, parse_qsl(inx.lstrip("?"), keep_blank_values=True),
                             base) if inx else None
            saved = await svc.create(ctx, target.type, body, cond)
            return _saved_result(saved, base, minimal)
        if method == "PUT":
            if target.id is None:
                q = query_for(target.type, target.query or [], base)
                saved = await svc.conditional_update(ctx, target.type, q, body, if_match)
            else:
                saved = await svc.update(ctx, target.type, target.id, body, if_match)
            return _saved_result(saved, base, minimal)
        # PATCH with a Binary-wrapped JSON Patch
        if target.id is None:
            raise bad_request(f"{where}: conditional PATCH is not supported in a batch")
        import base64

        res = body if isinstance(body, dict) else {}
        if res.get("resourceType") != "Binary":
            raise bad_request(f"{where}: a PATCH entry carries its JSON Patch as a Binary")
        try:
            ops = orjson.loads(base64.b64decode(res.get("data", "")))
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise bad_request(f"{where}: the Binary does not hold a JSON Patch: {exc}") from None
        saved = await svc.patch(ctx, target.type, target.id, ops, if_match)
        return _saved_result(saved, base, minimal)


def _failed(exc: FhirError) -> EntryResult:
    return EntryResult(f"{exc.status} {_REASON.get(exc.status, '')}".strip(),
                       outcome=exc.outcome())


_REASON = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 410: "Gone", 412: "Precondition Failed", 415: "Unsupported Media Type",
           422: "Unprocessable Entity", 500: "Internal Server Error"}
