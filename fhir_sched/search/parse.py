"""FHIR search parameters (name/value pairs) to the neutral ``Query``.

Repeated parameters AND, commas OR, modifiers and prefixes follow the R4 search page. Unknown
parameters are dropped (or refused under ``Prefer: handling=strict``); malformed values are always
refused, naming the parameter, because silently ignoring a bad date would return wrong results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import FhirError
from ..resources import is_hosted
from ..timeutil import date_range
from .extract import normalise
from .params import SearchParam, get_param, params_for
from .query import AllOf, AnyOf, Chain, Cond, Entry, Expr, Has, Missing, Not, Query, SortKey

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
RESULT_PARAMS = {
    "_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude",
    "_format", "_pretty", "_page", "_contained", "_containedType",
}
MODIFIERS = {
    "token": {"missing", "not", "text"},
    "reference": {"missing", "identifier"},
    "string": {"missing", "exact", "contains"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"missing", "below"},
}
_ESCAPED_COMMA = "\x00"


class SearchError(FhirError):
    def __init__(self, param: str, msg: str) -> None:
        super().__init__(400, "invalid", f"search parameter {param!r}: {msg}",
                         expression=[param])


@dataclass(slots=True)
class Include:
    source: str
    param: str
    target: str | None
    iterate: bool = False


@dataclass(slots=True)
class ParsedSearch:
    query: Query
    applied: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    page_token: str | None = None


def split_values(raw: str) -> list[str]:
    """Comma-separated alternatives; ``\\,`` is a literal comma."""
    return [v.replace(_ESCAPED_COMMA, ",") for v in raw.replace("\\,", _ESCAPED_COMMA).split(",")]


def _prefixed(raw: str) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in PREFIXES and (raw[2].isdigit() or raw[2] == "-"):
        return raw[:2], raw[2:]
    return "eq", raw


def _range_expr(param: str, prefix: str, lo: float, hi: float, ap: float = 0.0) -> Expr:
    def e(*conds: Cond) -> Entry:
        return Entry(param, conds)

    contained = e(Cond("lo", ">=", lo), Cond("hi", "<=", hi))
    if prefix == "eq":
        return contained
    if prefix == "ne":
        return Not(contained)
    if prefix == "gt":
        return e(Cond("hi", ">", hi))
    if prefix == "lt":
        return e(Cond("lo", "<", lo))
    if prefix == "ge":
        return AnyOf((e(Cond("hi", ">", hi)), contained))
    if prefix == "le":
        return AnyOf((e(Cond("lo", "<", lo)), contained))
    if prefix == "sa":
        return e(Cond("lo", ">", hi))
    if prefix == "eb":
        return e(Cond("hi", "<", lo))
    # ap: overlap with the value widened by ``ap`` either side
    return e(Cond("lo", "<=", hi + ap), Cond("hi", ">=", lo - ap))


def _date(sp: SearchParam, name: str, raw: str) -> Expr:
    prefix, value = _prefixed(raw)
    try:
        lo, hi = date_range(value, require_offset=True)
    except ValueError as exc:
        raise SearchError(name, f"{exc}; use a FHIR date such as 2026-03-14 or "
                          "2026-03-14T10:00:00+01:00 (a time needs an offset)") from None
    ap = (hi - lo + 1) * 0.1 + 86_400_000_000 if prefix == "ap" else 0.0
    return _range_expr(sp.code, prefix, lo, hi, ap)


def _number(sp: SearchParam, name: str, raw: str) -> Expr:
    prefix, value = _prefixed(raw)
    num_text, _, unit = value.partition("|")
    try:
        num = float(num_text)
    except ValueError:
        raise SearchError(name, f"{num_text!r} is not a number") from None
    decimals = len(num_text.split(".")[1]) if "." in num_text else 0
    half = 0.5 * 10 ** (-decimals)
    expr = _range_expr(sp.code, prefix, num - half, num + half - 1e-12, abs(num) * 0.1)
    if sp.type == "quantity" and unit:
        system, _, code = unit.partition("|")
        conds = [Cond("val", "=", code)] if code else []
        if system:
            conds.append(Cond("sys", "=", system))
        expr = AllOf((expr, Entry(sp.code, tuple(conds))))
    return expr


def _token(sp: SearchParam, name: str, raw: str, modifier: str | None) -> Expr:
    if modifier == "text":
        return Entry(sp.code, (Cond("raw", "contains", normalise(raw)),))
    if "|" in raw:
        system, code = raw.split("|", 1)
        conds = [Cond("sys", "=", system) if system else Cond("sys", "isnull")]
        if code:
            conds.append(Cond("val", "=", code))
        return Entry(sp.code, tuple(conds))
    return Entry(sp.code, (Cond("val", "=", raw),))


def _reference(sp: SearchParam, name: str, raw: str, modifier: str | None,
               base_url: str) -> Expr:
    if modifier == "identifier":
        system, _, value = raw.rpartition("|") if "|" in raw else ("", "", raw)
        conds = [Cond("val", "=", value)]
        if "|" in raw:
            conds.append(Cond("sys", "=", system) if system else Cond("sys", "isnull"))
        return Entry(f"{sp.code}:identifier", tuple(conds))
    if base_url and raw.startswith(base_url.rstrip("/") + "/"):
        raw = raw[len(base_url.rstrip("/")) + 1 :]
    if modifier is not None:  # :Type
        if sp.targets and modifier not in sp.targets:
            raise SearchError(name, f"{modifier} is not a target type of {sp.code}")
        return Entry(sp.code, (Cond("val", "=", f"{modifier}/{raw}"),))
    if "/" in raw:
        if "/_history/" in raw:
            raw = raw.split("/_history/")[0]
        return Entry(sp.code, (Cond("val", "=", raw),))
    targets = sp.targets or ()
    if len(targets) == 1:
        return Entry(sp.code, (Cond("val", "=", f"{targets[0]}/{raw}"),))
    return AnyOf(tuple(Entry(sp.code, (Cond("val", "=", f"{t}/{raw}"),)) for t in targets))


def _string(sp: SearchParam, raw: str, modifier: str | None) -> Expr:
    if modifier == "exact":
        return Entry(sp.code, (Cond("raw", "=", raw),))
    if modifier == "contains":
        return Entry(sp.code, (Cond("val", "contains", normalise(raw)),))
    return Entry(sp.code, (Cond("val", "startswith", normalise(raw)),))


def _uri(sp: SearchParam, raw: str, modifier: str | None) -> Expr:
    if modifier == "below":
        return Entry(sp.code, (Cond("val", "startswith", raw),))
    return Entry(sp.code, (Cond("val", "=", raw),))


def parse_param(type_: str, name: str, raw: str, base_url: str = "") -> Expr | None:
    """One ``name=value`` pair as an expression; None when ``name`` is unknown for ``type_``."""
    if name.startswith("_has:"):
        return _has(type_, name, raw, base_url)
    code, _, modifier_text = name.partition(":")
    chain_rest = None
    if "." in code:
        code, chain_rest = code.split(".", 1)
    if "." in modifier_text:
        modifier_text, chain_rest = modifier_text.split(".", 1)
    modifier = modifier_text or None
    sp = get_param(type_, code)
    if sp is None:
        return None
    if chain_rest is not None:
        return _chain(type_, sp, name, modifier, chain_rest, raw, base_url)
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise SearchError(name, "':missing' takes true or false")
        return Missing(sp.code, raw == "true")
    if (modifier is not None and modifier not in MODIFIERS.get(sp.type, set())
            and not (sp.type == "reference" and is_hosted(modifier))):
            raise SearchError(name, f"modifier ':{modifier}' is not supported for "
                              f"{sp.type} parameters")
    if raw == "":
        raise SearchError(name, "empty value")
    if modifier == "not" and sp.type == "token":
        alts = [_token(sp, name, v, None) for v in split_values(raw)]
        return Not(alts[0] if len(alts) == 1 else AnyOf(tuple(alts)))
    alts = []
    for value in split_values(raw):
        if value == "":
            raise SearchError(name, "empty value in a comma-separated list")
        if sp.type == "date":
            alts.append(_date(sp, name, value))
        elif sp.type in ("number", "quantity"):
            alts.append(_number(sp, name, value))
        elif sp.type == "token":
            alts.append(_token(sp, name, value, modifier))
        elif sp.type == "reference":
            alts.append(_reference(sp, name, value, modifier, base_url))
        elif sp.type == "string":
            alts.append(_string(sp, value, modifier))
        elif sp.type == "uri":
            alts.append(_uri(sp, value, modifier))
        else:
            raise SearchError(name, f"{sp.type} parameters are not supported")
    return alts[0] if len(alts) == 1 else AnyOf(tuple(alts))


def _chain(type_: str, sp: SearchParam, name: str, modifier: str | None, rest: str, raw: str,
           base_url: str) -> Expr:
    if sp.type != "reference":
        raise SearchError(name, f"{sp.code} is not a reference and cannot be chained")
    if "." in rest.split(":")[0]:
        raise SearchError(name, "only one level of chaining is supported")
    targets = [modifier] if modifier else [t for t in sp.targets if is_hosted(t)]
    alts: list[Expr] = []
    for target in targets:
        if not is_hosted(target):
            raise SearchError(name, f"{target} is not hosted on this server")
        sub = parse_param(target, rest, raw, base_url)
        if sub is not None:
            alts.append(Chain(sp.code, target, (sub,)))
    if not alts:
        raise SearchError(name, f"no target type of {sp.code} has a parameter {rest!r}")
    return alts[0] if len(alts) == 1 else AnyOf(tuple(alts))


def _has(type_: str, name: str, raw: str, base_url: str) -> Expr:
    parts = name.split(":", 3)
    if len(parts) != 4:
        raise SearchError(name, "use _has:Type:reference-param:search-param=value")
    _, source, ref_param, rest = parts
    if rest.startswith("_has:"):
        raise SearchError(name, "only one level of _has is supported")
    if not is_hosted(source):
        raise SearchError(name, f"{source} is not hosted on this server")
    ref = get_param(source, ref_param)
    if ref is None or ref.type != "reference":
        raise SearchError(name, f"{source} has no reference parameter {ref_param!r}")
    sub = parse_param(source, rest, raw, base_url)
    if sub is None:
        raise SearchError(name, f"{source} has no search parameter {rest!r}")
    return Has(source, ref_param, (sub,))


def _sort_keys(type_: str, raw: str) -> tuple[SortKey, ...]:
    keys = []
    for part in raw.split(","):
        desc = part.startswith("-")
        code = part[1:] if desc else part
        sp = get_param(type_, code)
        if sp is None:
            raise SearchError("_sort", f"{type_} has no search parameter {code!r}")
        fld = "lo" if sp.type in ("date", "number", "quantity") else "val"
        keys.append(SortKey(code, desc, fld))  # type: ignore[arg-type]
    return tuple(keys)


def _include(type_: str, name: str, raw: str, reverse: bool) -> Include:
    if raw == "*":
        return Include(type_, "*", None, name.endswith(":iterate"))
    parts = raw.split(":")
    if len(parts) not in (2, 3):
        raise SearchError(name, "use Type:param or Type:param:TargetType")
    source, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if not is_hosted(source):
        raise SearchError(name, f"{source} is not hosted on this server")
    sp = get_param(source, param)
    if param != "*" and (sp is None or sp.type != "reference"):
        raise SearchError(name, f"{source} has no reference parameter {param!r}")
    if not reverse and source != type_ and not name.endswith(":iterate"):
        raise SearchError(name, f"_include must start with the searched type {type_}")
    return Include(source, param, target, name.endswith(":iterate"))


def parse_search(
    type_: str,
    pairs: list[tuple[str, str]],
    *,
    strict: bool = False,
    default_count: int = 50,
    max_count: int = 1000,
    base_url: str = "",
    extra_where: tuple[Expr, ...] = (),
) -> ParsedSearch:
    where: list[Expr] = list(extra_where)
    out = ParsedSearch(Query(type_))
    count = default_count
    sort: tuple[SortKey, ...] = ()
    total = False
    count_only = False
    for name, raw in pairs:
        base = name.split(":")[0]
        if base in RESULT_PARAMS:
            if base == "_count":
                if not raw.isdigit():
                    raise SearchError(name, "_count must be a non-negative integer")
                count = min(int(raw), max_count)
            elif base == "_sort":
                sort = _sort_keys(type_, raw)
            elif base == "_total":
                if raw not in ("none", "estimate", "accurate"):
                    raise SearchError(name, "_total is none, estimate or accurate")
                total = raw != "none"
            elif base == "_summary":
                if raw not in ("true", "false", "count", "data", "text"):
                    raise SearchError(name, "_summary is true, false, count, data or text")
                out.summary = None if raw == "false" else raw
                count_only = raw == "count"
            elif base == "_elements":
                out.elements = [e.strip() for e in raw.split(",") if e.strip()]
            elif base in ("_include", "_revinclude"):
                inc = _include(type_, name, raw, base == "_revinclude")
                (out.revincludes if base == "_revinclude" else out.includes).append(inc)
            elif base == "_page":
                out.page_token = raw
                continue
            elif base in ("_contained", "_containedType"):
                if strict:
                    raise SearchError(name, "not supported")
                out.ignored.append(name)
                continue
            out.applied.append((name, raw))
            continue
        expr = parse_param(type_, name, raw, base_url)
        if expr is None:
            if strict:
                known = ", ".join(sorted(params_for(type_))[:12])
                raise SearchError(name, f"{type_} has no such search parameter (known: {known}"
                                  ", ...)")
            out.ignored.append(name)
            continue
        where.append(expr)
        out.applied.append((name, raw))
    out.query = Query(type_, tuple(where), sort, count, total=total or count_only,
                      count_only=count_only)
    return out


def query_for(type_: str, query_string_pairs: list[tuple[str, str]], base_url: str = "") -> Query:
    """A condition from If-None-Exist or a conditional URL: strict, no result parameters."""
    parsed = parse_search(type_, query_string_pairs, strict=True, base_url=base_url)
    if not parsed.query.where:
        raise SearchError("criteria", "a conditional interaction needs at least one criterion")
    return parsed.query


def describe(expr: Any) -> str:  # pragma: no cover - debugging aid
    return re.sub(r"\s+", " ", repr(expr))
