"""FHIR search parameters (name/value pairs) to the neutral ``Query``.

Follows the R4 search page (https://hl7.org/fhir/R4/search.html):

* a repeated parameter ANDs, a comma inside one value ORs (``\\,`` is a literal comma, and
  ``\\|`` / ``\\$`` / ``\\\\`` are the other escapes);
* an empty value is ignored, as the spec says ("empty parameters are not an error");
* unknown parameters are dropped (or refused under ``Prefer: handling=strict``), but a malformed
  value, an unknown prefix or an unsupported modifier is always a 400 naming the parameter,
  because silently ignoring it would return wrong results that look right.

The parser knows nothing about storage: it produces ``query`` values that every adapter compiles.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from ..errors import FhirError
from ..numbers import plain_int
from ..query import AllOf, AnyOf, Chain, Cond, Entry, Expr, Has, Missing, Not, Query, SortKey
from ..resources import HOSTED_TYPES, is_hosted
from ..timeutil import date_range
from .extract import normalise
from .params import SearchParam, get_param, params_for

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# Result parameters: they shape the Bundle rather than select resources.
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
    "uri": {"missing", "below", "above"},
}


@dataclass(frozen=True, slots=True)
class SearchLimits:
    """How much one search may ask for, refused with a 400 before any work starts (issue 13);
    settings with these defaults, stated in the CapabilityStatement."""

    max_params: int = 50  # search and result parameters in one request
    max_or_values: int = 100  # comma-separated values of one parameter (``_id=a,b,...``)
    max_includes: int = 10  # distinct _include plus _revinclude
    max_sort_keys: int = 5


DEFAULT_LIMITS = SearchLimits()
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


class SearchError(FhirError):
    """A 400 whose OperationOutcome names the offending parameter in ``expression``."""

    def __init__(self, param: str, msg: str, code: str = "invalid") -> None:
        super().__init__(400, code, f"search parameter {param!r}: {msg}",
                         expression=[param])


def _too_costly(param: str, msg: str) -> SearchError:
    """A limit of bounded work (``SearchLimits``): the request is fine, just too much."""
    return SearchError(param, msg, "too-costly")


@dataclass(slots=True)
class Include:
    """One ``_include``/``_revinclude``: ``source`` resources' ``param`` references, optionally
    restricted to ``target`` type. ``param == "*"`` means every reference parameter."""

    source: str
    param: str
    target: str | None
    iterate: bool = False


@dataclass(slots=True)
class ParsedSearch:
    """Everything a search request asked for; ``applied`` is what the self link echoes."""

    query: Query
    applied: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    page_token: str | None = None
    # "none": leave Bundle.total out even when it is free; "accurate"/"estimate": count it.
    total_mode: str | None = None


# -- escaping ----------------------------------------------------------------------------------
def _split_unescaped(raw: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is not preceded by a backslash; escapes are kept for later."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            cur.append(raw[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ",|$\\":
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def split_values(raw: str) -> list[str]:
    """Comma-separated alternatives, unescaped (``\\,`` is a literal comma)."""
    return [_unescape(v) for v in _split_unescaped(raw, ",")]


def _pipe(value: str) -> tuple[str | None, str]:
    """``system|code`` (with escapes) -> (system or None when there is no ``|``, code)."""
    parts = _split_unescaped(value, "|")
    if len(parts) == 1:
        return None, _unescape(parts[0])
    return _unescape(parts[0]), _unescape("|".join(parts[1:]))


# -- prefixes and ranges --------------------------------------------------------------------------
def _prefixed(name: str, raw: str) -> tuple[str, str]:
    head = raw[:2]
    if head.isalpha() and len(raw) > 2:
        if head not in PREFIXES:
            raise SearchError(name, f"unknown prefix {head!r}; use one of {', '.join(PREFIXES)}")
        return head, raw[2:]
    return "eq", raw


def _entry(param: str, *conds: Cond) -> Entry:
    return Entry(param, conds)


def range_expr(param: str, prefix: str, lo: float, hi: float, ap: float = 0.0) -> Expr:
    """The R4 prefix table for ranges, with search value [lo, hi] and target [t.lo, t.hi]:

    eq: search contains target; ne: it does not; gt: target reaches above the search range
    (t.hi > hi); lt: below (t.lo < lo); ge: gt or eq; le: lt or eq; sa: target starts after
    (t.lo > hi); eb: target ends before (t.hi < lo); ap: target overlaps the search range
    widened by ``ap`` either side. "Some entry satisfies" throughout, like every other test.
    """
    contained = _entry(param, Cond("lo", ">=", lo), Cond("hi", "<=", hi))
    if prefix == "eq":
        return contained
    if prefix == "ne":
        # Has a value, and that value is not within the search range. (A resource without the
        # element has no value to compare, so it does not match, unlike token :not.)
        return AnyOf((_entry(param, Cond("lo", "<", lo)), _entry(param, Cond("hi", ">", hi))))
    if prefix == "gt":
        return _entry(param, Cond("hi", ">", hi))
    if prefix == "lt":
        return _entry(param, Cond("lo", "<", lo))
    if prefix == "ge":
        return AnyOf((_entry(param, Cond("hi", ">", hi)), contained))
    if prefix == "le":
        return AnyOf((_entry(param, Cond("lo", "<", lo)), contained))
    if prefix == "sa":
        return _entry(param, Cond("lo", ">", hi))
    if prefix == "eb":
        return _entry(param, Cond("hi", "<", lo))
    return _entry(param, Cond("lo", "<=", hi + ap), Cond("hi", ">=", lo - ap))


def _date(sp: SearchParam, name: str, raw: str) -> Expr:
    prefix, value = _prefixed(name, raw)
    try:
        lo, hi = date_range(value, require_offset=True)
    except ValueError as exc:
        raise SearchError(name, f"{exc}; use a FHIR date such as 2026-03-14 or "
                          "2026-03-14T10:00:00+01:00 (a time needs an offset)") from None
    ap = 0
    if prefix == "ap":
        # R4: "10% of the gap between now and the date", so ap2026 is tight and ap1990 loose.
        # "Now" is taken at the start of the UTC day, so that the pages of one search agree.
        now = int(time.time() // 86_400 * 86_400) * 1_000_000
        gap = max(abs(now - lo), abs(now - hi))
        ap = gap // 10
    return range_expr(sp.code, prefix, lo, hi, ap)


def _number(sp: SearchParam, name: str, raw: str) -> Expr:
    prefix, value = _prefixed(name, raw)
    num_text, _, unit = value.partition("|")
    try:
        num = float(num_text)
    except ValueError:
        raise SearchError(name, f"{num_text!r} is not a number") from None
    # The precision of the value written is its range: 100 means [99.5, 100.5).
    decimals = len(num_text.split(".")[1]) if "." in num_text else 0
    half = 0.5 * 10 ** (-decimals)
    expr = range_expr(sp.code, prefix, num - half, num + half - 1e-12, abs(num) * 0.1)
    if sp.type == "quantity" and unit:
        system, _, code = unit.partition("|")
        conds = [Cond("val", "=", code)] if code else []
        if system:
            conds.append(Cond("sys", "=", system))
        expr = AllOf((expr, Entry(sp.code, tuple(conds))))
    return expr


# -- token, reference, string, uri ---------------------------------------------------------------
def _text_expr(param: str, text: str) -> Expr:
    """``:text``: string matching on the display/text: any word of it starts with the value."""
    norm = normalise(text)
    return AnyOf((_entry(param, Cond("raw", "startswith", norm)),
                  _entry(param, Cond("raw", "contains", " " + norm))))


def _token(sp: SearchParam, name: str, raw: str, modifier: str | None) -> Expr:
    if modifier == "text":
        return _text_expr(sp.code, _unescape(raw))
    system, code = _pipe(raw)
    if system is None:
        return _entry(sp.code, Cond("val", "=", code))
    conds = [Cond("sys", "=", system) if system else Cond("sys", "isnull")]
    if code:
        conds.insert(0, Cond("val", "=", code))
    elif not system:
        raise SearchError(name, "'|' alone names neither a system nor a code")
    return Entry(sp.code, tuple(conds))


def _same_ref(param: str, value: str) -> Entry:
    """``param`` refers to ``value``: a resource has at most one such entry (``Entry.unique``)."""
    return Entry(param, (Cond("val", "=", value),), unique=True)


def _reference(sp: SearchParam, name: str, raw: str, modifier: str | None,
               base_url: str) -> Expr:
    if modifier == "identifier":
        system, value = _pipe(raw)
        if not value:
            raise SearchError(name, ":identifier needs a value (system|value or value)")
        conds = [Cond("val", "=", value)]
        if system is not None:
            conds.append(Cond("sys", "=", system) if system else Cond("sys", "isnull"))
        return Entry(f"{sp.code}:identifier", tuple(conds))
    value = _unescape(raw)
    base = base_url.rstrip("/")
    if base and value.startswith(base + "/"):
        value = value[len(base) + 1 :]  # our own absolute URL is a local reference
    if "://" not in value and "/_history/" in value:
        value = value.split("/_history/")[0]
    if "://" in value or value.startswith("urn:"):
        return _same_ref(sp.code, value)
    if modifier is not None:  # :Type
        if "/" in value:
            if value.split("/", 1)[0] != modifier:
                raise SearchError(name, f"{value!r} is not a {modifier} reference")
            return _same_ref(sp.code, value)
        return _same_ref(sp.code, f"{modifier}/{value}")
    if "/" in value:
        type_, _, id_ = value.partition("/")
        if sp.targets and type_ not in sp.targets:
            raise SearchError(name, f"{type_} is not a target type of {sp.code} "
                              f"({', '.join(sp.targets[:8])})")
        if not id_ or "/" in id_:
            raise SearchError(name, f"{value!r} is not a Type/id reference")
        return _same_ref(sp.code, value)
    targets = sp.targets or HOSTED_TYPES
    alts = tuple(_same_ref(sp.code, f"{t}/{value}") for t in targets)
    return alts[0] if len(alts) == 1 else AnyOf(alts)


def _string(sp: SearchParam, raw: str, modifier: str | None) -> Expr:
    value = _unescape(raw)
    if modifier == "exact":
        return _entry(sp.code, Cond("raw", "=", value))
    if modifier == "contains":
        return _entry(sp.code, Cond("val", "contains", normalise(value)))
    return _entry(sp.code, Cond("val", "startswith", normalise(value)))


def _uri(sp: SearchParam, raw: str, modifier: str | None) -> Expr:
    value = _unescape(raw)
    if modifier == "below":
        return _entry(sp.code, Cond("val", "startswith", value))
    if modifier == "above":
        # Targets that are the value or one of its path ancestors.
        prefixes = [value]
        cut = value
        while "/" in cut.rstrip("/") and not cut.endswith("://"):
            cut = cut.rstrip("/").rsplit("/", 1)[0]
            if cut.endswith(":/") or cut.endswith(":"):
                break
            prefixes.append(cut)
        alts = tuple(_entry(sp.code, Cond("val", "=", p)) for p in prefixes)
        return alts[0] if len(alts) == 1 else AnyOf(alts)
    return _entry(sp.code, Cond("val", "=", value))


# -- one parameter -------------------------------------------------------------------------------
def _split_name(name: str) -> tuple[str, str | None, str | None]:
    """``code[:modifier][.chained-rest]`` -> (code, modifier, rest); the rest keeps its own
    modifiers (``schedule.actor:Practitioner`` -> ("schedule", None, "actor:Practitioner"))."""
    head, dot, rest = name.partition(".")
    code, _, modifier = head.partition(":")
    return code, modifier or None, (rest if dot else None)


def parse_param(type_: str, name: str, raw: str, base_url: str = "") -> Expr | None:
    """One ``name=value`` pair as an expression; None when ``name`` is unknown for ``type_``.

    ``raw`` must not be empty (empty parameters are dropped before this is called).
    """
    if name.startswith("_has:"):
        return _has(type_, name, raw, base_url)
    code, modifier, chain_rest = _split_name(name)
    sp = get_param(type_, code)
    if sp is None:
        return None
    if chain_rest is not None:
        return _chain(sp, name, modifier, chain_rest, raw, base_url)
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise SearchError(name, "':missing' takes true or false")
        return Missing(sp.code, raw == "true")
    if modifier is not None and modifier not in MODIFIERS.get(sp.type, set()):
        is_type = sp.type == "reference" and (modifier in sp.targets or is_hosted(modifier))
        if not is_type:
            raise SearchError(name, f"modifier ':{modifier}' is not supported for {sp.type} "
                              f"parameters (supported: "
                              f"{', '.join(sorted(MODIFIERS.get(sp.type, ())))})")
        if sp.targets and modifier not in sp.targets:
            raise SearchError(name, f"{modifier} is not a target type of {sp.code}")
    values = _split_unescaped(raw, ",")
    if any(v == "" for v in values):
        raise SearchError(name, "empty value in a comma-separated list")
    if modifier == "not" and sp.type == "token":
        # :not includes resources with no value at all (R4), so it negates the whole match.
        alts = [_token(sp, name, v, None) for v in values]
        return Not(alts[0] if len(alts) == 1 else AnyOf(tuple(alts)))
    alts = []
    for value in values:
        if sp.type == "date":
            alts.append(_date(sp, name, _unescape(value)))
        elif sp.type in ("number", "quantity"):
            alts.append(_number(sp, name, _unescape(value)))
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


def _chain(sp: SearchParam, name: str, modifier: str | None, rest: str, raw: str,
           base_url: str) -> Expr | None:
    if sp.type != "reference":
        raise SearchError(name, f"{sp.code} is not a reference and cannot be chained")
    if "." in rest:
        raise SearchError(name, "only one level of chaining is supported")
    if modifier is not None and modifier not in sp.targets:
        raise SearchError(name, f"{modifier} is not a target type of {sp.code}")
    targets = [modifier] if modifier else [t for t in sp.targets if is_hosted(t)]
    alts: list[Expr] = []
    for target in targets:
        if not is_hosted(target):
            raise SearchError(name, f"{target} is not hosted on this server")
        sub = parse_param(target, rest, raw, base_url)
        if sub is not None:
            alts.append(Chain(sp.code, target, (sub,)))
    if not alts:
        return None  # no target type knows the chained parameter: an unknown parameter
    return alts[0] if len(alts) == 1 else AnyOf(tuple(alts))


def _has(type_: str, name: str, raw: str, base_url: str) -> Expr | None:
    parts = name.split(":", 3)
    if len(parts) != 4 or not all(parts[1:]):
        raise SearchError(name, "use _has:Type:reference-param:search-param=value")
    _, source, ref_param, rest = parts
    if rest.startswith("_has"):
        raise SearchError(name, "only one level of _has is supported")
    if not is_hosted(source):
        raise SearchError(name, f"{source} is not hosted on this server")
    ref = get_param(source, ref_param)
    if ref is None or ref.type != "reference":
        raise SearchError(name, f"{source} has no reference parameter {ref_param!r}")
    if ref.targets and type_ not in ref.targets:
        raise SearchError(name, f"{source}.{ref_param} never refers to a {type_}")
    sub = parse_param(source, rest, raw, base_url)
    if sub is None:
        return None
    return Has(source, ref_param, (sub,))


# -- result parameters ---------------------------------------------------------------------------
def _sort_keys(type_: str, raw: str) -> tuple[SortKey, ...]:
    keys = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        desc = part.startswith("-")
        code = part[1:] if desc else part
        sp = get_param(type_, code)
        if sp is None:
            raise SearchError("_sort", f"{type_} has no search parameter {code!r} to sort by")
        if sp.type in ("date", "number", "quantity"):
            # Ascending by where a value starts, descending by where it ends.
            keys.append(SortKey(code, desc, "hi" if desc else "lo"))
        else:
            keys.append(SortKey(code, desc, "val"))
    return tuple(keys)


def _include(type_: str, name: str, raw: str, reverse: bool) -> Include:
    iterate = name.endswith((":iterate", ":recurse"))
    if name.count(":") > 1 or (":" in name and not iterate):
        raise SearchError(name, "the only modifier of _include/_revinclude is :iterate")
    if raw == "*":
        # "*" follows every reference parameter; iterated, of whatever type was brought in.
        return Include("*" if iterate else type_, "*", None, iterate)
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
    if target is not None and sp is not None and sp.targets and target not in sp.targets:
        raise SearchError(name, f"{target} is not a target type of {source}.{param}")
    if not reverse and source != type_ and not iterate:
        raise SearchError(name, f"_include must start with the searched type {type_} "
                          "(or use _include:iterate)")
    return Include(source, param, target, iterate)


def parse_search(
    type_: str,
    pairs: list[tuple[str, str]],
    *,
    strict: bool = False,
    default_count: int = 50,
    max_count: int = 1000,
    base_url: str = "",
    extra_where: tuple[Expr, ...] = (),
    limits: SearchLimits = DEFAULT_LIMITS,
) -> ParsedSearch:
    """The request's pairs as a ParsedSearch; ``extra_where`` (a compartment) is ANDed in."""
    pairs = list(dict.fromkeys(pairs))  # a repeated name=value asks for nothing more
    if len(pairs) > limits.max_params:
        raise _too_costly(pairs[limits.max_params][0], f"a search takes at most "
                          f"{limits.max_params} parameters")
    where: list[Expr] = list(extra_where)
    out = ParsedSearch(Query(type_))
    count = default_count
    sort: tuple[SortKey, ...] = ()
    count_only = False
    for name, raw in pairs:
        if raw == "" and name != "_page":
            out.ignored.append(name)  # R4: empty parameters are not an error, just ignored
            continue
        base = name.split(":")[0]
        if base in RESULT_PARAMS:
            if base == "_count":
                asked = plain_int(raw)
                if asked is None:
                    raise SearchError(name, "_count must be a non-negative integer")
                count = min(asked, max_count)
                out.applied.append((name, str(count)))  # the self link shows what was used
                continue
            elif base == "_sort":
                sort = _sort_keys(type_, raw)
                if len(sort) > limits.max_sort_keys:
                    raise _too_costly(name, f"at most {limits.max_sort_keys} sort keys")
            elif base == "_total":
                if raw not in ("none", "estimate", "accurate"):
                    raise SearchError(name, "_total is none, estimate or accurate")
                out.total_mode = raw
            elif base == "_summary":
                if raw not in ("true", "false", "count", "data", "text"):
                    raise SearchError(name, "_summary is true, false, count, data or text")
                out.summary = None if raw == "false" else raw
                count_only = raw == "count"
            elif base == "_elements":
                out.elements = [e.strip() for e in raw.split(",") if e.strip()]
            elif base in ("_include", "_revinclude"):
                inc = _include(type_, name, raw, base == "_revinclude")
                listed = out.revincludes if base == "_revinclude" else out.includes
                if inc in listed:  # a repeat asks for nothing more: not run twice
                    continue
                listed.append(inc)
                if len(out.includes) + len(out.revincludes) > limits.max_includes:
                    raise _too_costly(name, f"at most {limits.max_includes} distinct _include "
                                      "and _revinclude")
            elif base == "_page":
                out.page_token = raw
                continue
            elif base in ("_contained", "_containedType"):
                if strict:
                    raise SearchError(name, "not supported by this server")
                out.ignored.append(name)
                continue
            out.applied.append((name, raw))
            continue
        if len(_UNESCAPED_COMMA.findall(raw)) >= limits.max_or_values:
            raise _too_costly(name, f"at most {limits.max_or_values} values in one parameter")
        expr = parse_param(type_, name, raw, base_url)
        if expr is None:
            if strict:
                known = ", ".join(sorted(params_for(type_)))
                raise SearchError(name, f"{type_} has no such search parameter (known: {known})")
            out.ignored.append(name)
            continue
        where.append(expr)
        out.applied.append((name, raw))
    if count == 0:
        count_only = True  # _count=0: how many, without any entries
    wants_total = out.total_mode in ("accurate", "estimate") or count_only
    out.query = Query(type_, tuple(where), sort, count, total=wants_total,
                      count_only=count_only)
    return out


def query_for(type_: str, query_string_pairs: list[tuple[str, str]], base_url: str = "") -> Query:
    """A condition from If-None-Exist or a conditional URL: strict, no result parameters."""
    parsed = parse_search(type_, query_string_pairs, strict=True, base_url=base_url)
    if not parsed.query.where:
        raise SearchError("criteria", "a conditional interaction needs at least one criterion")
    return parsed.query
