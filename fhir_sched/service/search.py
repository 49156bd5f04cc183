"""Running a parsed search: the page, its includes, and the paging cursor.

Paging is keyset-based (the sort values and insertion position of the last row), so a client
paging through results while others insert sees no duplicate and skips nothing that existed when
its search began. The cursor travels in an opaque ``_page`` token together with the cursors of
earlier pages, which is what makes a ``previous`` link possible without offsets.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import orjson

from ..context import RequestContext
from ..errors import FhirError, bad_request
from ..query import AllOf, AnyOf, Chain, Cond, Entry, Expr, Has, Not, Query
from ..resources import HOSTED_TYPES, get_type, is_hosted
from ..search.compartment import PATIENT_COMPARTMENT, compartment_filter, outside_compartments
from ..search.extract import reference_targets
from ..search.params import params_for
from ..search.parse import ParsedSearch, SearchLimits, parse_search
from ..storage.base import DocumentStore
from .audit import AuditLog
from .authorization import Authorizer, Interaction

MAX_INCLUDED = 1000
_MAX_REMEMBERED_PAGES = 64


@dataclass(slots=True)
class SearchResult:
    rows: list[tuple[str, bytes]]
    included: list[tuple[str, str, bytes]] = field(default_factory=list)
    total: int | None = None
    next_token: str | None = None
    prev_token: str | None = None
    self_token: str | None = None


def _fingerprint(query: Query) -> str:
    """What a ``_page`` token is valid for: the same type, criteria and order. A token replayed
    with other parameters would position a different result set, so it is refused instead."""
    return hashlib.sha256(repr((query.type, query.where, query.sort)).encode()).hexdigest()[:12]


def _encode(query: Query, cursors: list[Any]) -> str:
    token = {"q": _fingerprint(query), "c": cursors}
    return base64.urlsafe_b64encode(orjson.dumps(token)).decode().rstrip("=")


def _decode(query: Query, token: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = orjson.loads(raw)
        cursors = decoded["c"] if isinstance(decoded, dict) else None
        if (not isinstance(cursors, list) or not cursors
                or not all(c is None or isinstance(c, list) for c in cursors)):
            raise ValueError
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        raise bad_request("_page token is malformed; start the search again",
                          ["_page"]) from None
    if decoded.get("q") != _fingerprint(query):
        raise bad_request("_page token belongs to a search with other parameters; follow the "
                          "Bundle's links unchanged, or start the search again", ["_page"])
    return cursors


@cache
def _reference_params(type_: str) -> tuple[str, ...]:
    return tuple(c for c, sp in params_for(type_).items() if sp.type == "reference")


@cache
def _referring_params(target: str) -> tuple[tuple[str, str], ...]:
    """(source type, parameter) pairs whose references can point at a ``target``: what
    ``_revinclude=*`` follows."""
    return tuple((t, c) for t in HOSTED_TYPES for c, sp in params_for(t).items()
                 if sp.type == "reference" and (not sp.targets or target in sp.targets))


def reached_types(exprs: tuple[Expr, ...]) -> set[str]:
    """The other types a query's criteria read (chain targets, ``_has`` sources): searching
    through them reveals their content, so the caller must be allowed to search them too."""
    out: set[str] = set()
    for e in exprs:
        if isinstance(e, Chain):
            out.add(e.target)
            out |= reached_types(e.where)
        elif isinstance(e, Has):
            out.add(e.source)
            out |= reached_types(e.where)
        elif isinstance(e, AnyOf | AllOf):
            out |= reached_types(e.items)
        elif isinstance(e, Not):
            out |= reached_types((e.inner,))
    return out


class SearchService:
    """Every search, from every door (GET, POST _search, compartments, batch entries), with
    its authorization: the type and every type the criteria reach are checked, a patient-bound
    caller's search is confined to the compartment, and matches and includes the caller may not
    see are left out."""

    def __init__(self, store: DocumentStore, authorizer: Authorizer, default_count: int,
                 max_count: int, limits: SearchLimits | None = None) -> None:
        self.store = store
        self.authorizer = authorizer
        self.default_count = default_count
        self.max_count = max_count
        self.limits = limits or SearchLimits()
        self.audit: AuditLog | None = None  # set by compose

    async def search(self, ctx: RequestContext, type_: str, pairs: list[tuple[str, str]], *,
                     strict: bool = False, base_url: str = "",
                     where: tuple[Expr, ...] = ()) -> tuple[ParsedSearch, SearchResult]:
        auth = self.authorizer
        auth.check(ctx, Interaction.SEARCH, type_)
        if ctx.patient is not None and type_ in PATIENT_COMPARTMENT:
            where = (*where, *compartment_filter(type_, ctx.patient))
        elif ctx.public:  # a patient's Schedules: left out of the count, not just the page
            where = (*where, *outside_compartments(type_))
        parsed = parse_search(type_, pairs, strict=strict, default_count=self.default_count,
                              max_count=self.max_count, base_url=base_url, extra_where=where,
                              limits=self.limits)
        for reached in sorted(reached_types(parsed.query.where)):
            auth.check(ctx, Interaction.SEARCH, reached)
        result = await run_search(self.store, parsed, self.max_count)
        if auth.needs_content(ctx, type_):
            result.rows = [(i, b) for i, b in result.rows
                           if auth.visible(ctx, type_, orjson.loads(b))]
        if result.included:
            result.included = [inc for inc in result.included if self._may_see(ctx, *inc)]
        if self.audit is not None:
            self.audit.search(ctx, type_, (k for k, _ in pairs))
        return parsed, result

    def _may_see(self, ctx: RequestContext, type_: str, id_: str, body: bytes) -> bool:
        try:
            self.authorizer.check(ctx, Interaction.READ, type_, id_)
        except FhirError as exc:
            if exc.status == 403:
                return False
            raise
        return (not self.authorizer.needs_content(ctx, type_)
                or self.authorizer.visible(ctx, type_, orjson.loads(body)))


async def run_search(store: DocumentStore, parsed: ParsedSearch,
                     max_count: int) -> SearchResult:
    """One page of ``parsed``: the matches, their includes, the paging tokens and the total."""
    query = parsed.query
    cursors: list[Any] = [None]
    if parsed.page_token:
        cursors = _decode(query, parsed.page_token)
        after = cursors[-1]
        query = replace(query, after=tuple(after) if after is not None else None)
    page = await store.search(query)
    result = SearchResult(page.rows, total=page.total)
    if page.next_after is not None:
        nxt = [*cursors, list(page.next_after)]
        if len(nxt) > _MAX_REMEMBERED_PAGES:
            # Keep the token bounded: the oldest cursors go (previous still works for the last
            # _MAX_REMEMBERED_PAGES pages, and from further back it restarts at page one).
            nxt = [None, *nxt[-_MAX_REMEMBERED_PAGES:]]
        result.next_token = _encode(query, nxt)
    if len(cursors) > 1:
        result.self_token = _encode(query, cursors)
        result.prev_token = _encode(query, cursors[:-1])
    free = page.next_after is None and query.after is None and not query.count_only
    if result.total is None and free and parsed.total_mode != "none":
        result.total = len(page.rows)  # the whole result fits on this page: the count is free
    if parsed.total_mode == "none" and not query.count_only:
        result.total = None
    if parsed.includes or parsed.revincludes:
        result.included = await _includes(store, parsed, page.rows, max_count)
    return result


async def _fetch(store: DocumentStore, refs: list[str]) -> list[tuple[str, str, bytes]]:
    """Resolve ``Type/id`` references in one search per type (deleted ones are left out)."""
    by_type: dict[str, list[str]] = {}
    for ref in refs:
        t, _, i = ref.partition("/")
        by_type.setdefault(t, []).append(i)
    out: list[tuple[str, str, bytes]] = []
    for t, ids in by_type.items():
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            q = Query(t, (AnyOf(tuple(Entry("_id", (Cond("val", "=", i),)) for i in chunk)),),
                      count=len(chunk))
            page = await store.search(q)
            out.extend((t, i, body) for i, body in page.rows)
    return out


async def _includes(store: DocumentStore, parsed: ParsedSearch, rows: list[tuple[str, bytes]],
                    max_count: int) -> list[tuple[str, str, bytes]]:
    """``_include`` and ``_revinclude`` over the page's matches, then one more round for the
    ``:iterate`` ones over what the first round brought in (the one level the spec requires
    servers to support at least)."""
    seen = {(parsed.query.type, id_) for id_, _ in rows}
    frontier = [(parsed.query.type, id_, orjson.loads(body)) for id_, body in rows]
    included: list[tuple[str, str, bytes]] = []
    for round_ in range(2):
        iterate_only = round_ > 0
        wanted: list[str] = []
        for inc in parsed.includes:
            if iterate_only and not inc.iterate:
                continue
            for type_, _id, res in frontier:
                if inc.source not in ("*", type_):
                    continue
                params = _reference_params(type_) if inc.param == "*" else (inc.param,)
                for p in params:
                    for ref in reference_targets(type_, p, res):
                        if inc.target is None or ref.startswith(inc.target + "/"):
                            wanted.append(ref)
        # A resource may name thousands of others (an Appointment's participants): what is
        # fetched is bounded by what the page can still carry, not by what was named.
        room = MAX_INCLUDED - len(included)
        fresh = []
        for ref in dict.fromkeys(wanted):
            t, _, i = ref.partition("/")
            if (t, i) not in seen and is_hosted(t):
                fresh.append(ref)
                if len(fresh) >= room:
                    break
        new: list[tuple[str, str, dict[str, Any]]] = []
        for t, i, body in await _fetch(store, fresh):
            seen.add((t, i))
            included.append((t, i, body))
            new.append((t, i, orjson.loads(body)))
        for inc in parsed.revincludes:
            if iterate_only and not inc.iterate:
                continue
            targets = [(t, f"{t}/{i}") for t, i, _ in frontier]
            if not targets:
                continue
            pairs: list[tuple[str, str]] = []
            if inc.param == "*":
                for ftype in dict.fromkeys(t for t, _ in targets):
                    pairs.extend(_referring_params(ftype))
            else:
                pairs.append((inc.source, inc.param))
            for source, p in dict.fromkeys(pairs):
                refs = [ref for t, ref in targets if inc.target in (None, t)]
                if not refs:
                    continue
                q = Query(source, (AnyOf(tuple(Entry(p, (Cond("val", "=", ref),))
                                               for ref in refs)),), count=max_count)
                page = await store.search(q)
                for i, body in page.rows:
                    if (source, i) not in seen:
                        seen.add((source, i))
                        included.append((source, i, body))
                        new.append((source, i, orjson.loads(body)))
        if len(included) >= MAX_INCLUDED:
            break
        frontier = new
        if not frontier:
            break
    return included[:MAX_INCLUDED]


_SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
              "code": "SUBSETTED", "display": "Resource encoded in summary mode"}


@cache
def _summary_elements(type_: str) -> frozenset[str]:
    model = get_type(type_).model
    names = set(model.summary_elements_sequence())  # type: ignore[attr-defined]
    required = {f.alias or k for k, f in model.model_fields.items() if f.is_required()}
    return frozenset(names | required | {"resourceType", "id", "meta"})


def _keep(resource: dict[str, Any], keep: set[str] | frozenset[str]) -> dict[str, Any]:
    out = {}
    for key, value in resource.items():
        base = key[1:] if key.startswith("_") else key
        # choice types: deceasedBoolean is kept when deceased is listed
        if base in keep or any(base.startswith(k) and base[len(k):][:1].isupper() for k in keep):
            out[key] = value
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*(meta.get("tag") or []), _SUBSETTED]
    out["meta"] = meta
    return out


def shape(type_: str, body: bytes, summary: str | None, elements: list[str] | None) -> bytes:
    """Apply ``_summary``/``_elements``; without them the stored bytes go out untouched."""
    if summary in (None, "false", "count") and not elements:
        return body
    res = orjson.loads(body)
    if summary == "true":
        res = _keep(res, _summary_elements(type_))
    elif summary == "text":
        res = _keep(res, {"resourceType", "id", "meta", "text"} | _mandatory(type_))
    elif summary == "data":
        res = {k: v for k, v in res.items() if k != "text"}
        res = _keep(res, set(res))
    if elements:
        res = _keep(res, set(elements) | {"resourceType", "id", "meta"} | _mandatory(type_))
    return orjson.dumps(res)


@cache
def _mandatory(type_: str) -> frozenset[str]:
    model = get_type(type_).model
    return frozenset(f.alias or k for k, f in model.model_fields.items() if f.is_required())
