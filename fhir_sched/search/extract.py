"""Index extraction: the searchable values of a resource, as ``IndexEntry`` rows.

Nearly every R4 search expression for the hosted types is a plain path, sometimes with a
``where(resolve() is T)`` target filter, a ``where(system='x')`` filter or an
``extension('url')`` step. Those are compiled here
into small path walkers (fast, and they understand choice types such as ``occurrence[x]``, which
a model-less FHIRPath engine does not). Anything else falls back to fhirpathpy with its R4 model.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from functools import cache
from typing import Any

from ..query import PRIMARY_DATE, IndexEntry
from ..timeutil import date_range
from .params import SearchParam, params_for

Value = tuple[Any, str | None]  # (value, FHIR type when known from a choice suffix)
Walker = Callable[[dict[str, Any]], list[Value]]

MIN_US = -(2**62)
MAX_US = 2**62
_REF_RE = re.compile(r"^(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_STEP_WHERE_RESOLVE = re.compile(r"^where\(resolve\(\) is ([A-Za-z]+)\)$")
_STEP_WHERE_EQ = re.compile(r"^where\(([a-z]+)\s*=\s*'([^']*)'\)$")
_STEP_AS = re.compile(r"^([a-zA-Z]+) as ([a-zA-Z]+)$")
# The R4 data types a choice element ``x[x]`` may take, as JSON name suffixes (``valueString``).
_CHOICE_SUFFIXES = frozenset({
    "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id",
    "Instant", "Integer", "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt",
    "Uri", "Url", "Uuid", "Address", "Age", "Annotation", "Attachment", "CodeableConcept",
    "Coding", "ContactPoint", "Count", "Distance", "Duration", "HumanName", "Identifier", "Money",
    "Period", "Quantity", "Range", "Ratio", "Reference", "SampledData", "Signature", "Timing",
    "ContactDetail", "Contributor", "DataRequirement", "Expression", "ParameterDefinition",
    "RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage", "Meta",
})
_STEP_EXTENSION = re.compile(r"^extension\('([^']+)'\)$")


# Letters that Unicode does not decompose into a base letter plus accent, folded by hand so that
# "Ødegård" is found by "odegard" as "Müller" is by "muller" (casefold already maps ß to ss).
_FOLD = str.maketrans({"ø": "o", "đ": "d", "ð": "d", "ł": "l", "ħ": "h", "\u0131": "i", "ŧ": "t",
                       "æ": "ae", "œ": "oe", "þ": "th"})


def normalise(text: str) -> str:
    """Case- and accent-insensitive form used by string search (``Müller`` -> ``muller``).

    Applied identically to indexed values and to search values, so matching is a plain
    comparison in every store."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().translate(_FOLD).split())


def _split_top(expr: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if depth == 0 and expr.startswith(sep, i):
            parts.append("".join(cur).strip())
            cur = []
            i += len(sep)
            continue
        cur.append(ch)
        i += 1
    parts.append("".join(cur).strip())
    return parts


def _children(node: Any, name: str, as_type: str | None) -> Iterator[Value]:
    if not isinstance(node, dict):
        return
    if as_type is None and name in node:
        value = node[name]
        for v in value if isinstance(value, list) else [value]:
            yield v, None
        return
    # choice type: occurrence -> occurrenceDateTime / occurrencePeriod / ...; the suffix must
    # name a data type, so ServiceRequest.performer never picks up performerType
    for key, value in node.items():
        if key.startswith(name) and key[len(name):] in _CHOICE_SUFFIXES:
            suffix = key[len(name) :]
            if as_type is not None and suffix.lower() != as_type.lower():
                continue
            for v in value if isinstance(value, list) else [value]:
                yield v, suffix[0].lower() + suffix[1:]


def _compile_path(part: str, base: str) -> Walker | None:
    part = part.strip()
    if part.startswith("(") and part.endswith(")"):
        part = part[1:-1].strip()
    steps = _split_top(part, ".")
    if steps[0] not in (base, "Resource"):
        return None
    ops: list[tuple[str, Any, Any]] = []
    for step in steps[1:]:
        if m := _STEP_WHERE_RESOLVE.match(step):
            ops.append(("target", m[1], None))
        elif m := _STEP_WHERE_EQ.match(step):
            ops.append(("eq", m[1], m[2]))
        elif m := _STEP_EXTENSION.match(step):
            ops.append(("child", "extension", None))
            ops.append(("eq", "url", m[1]))
        elif m := _STEP_AS.match(step):
            ops.append(("child", m[1], m[2]))
        elif re.fullmatch(r"[a-zA-Z]+", step):
            ops.append(("child", step, None))
        else:
            return None

    def walk(resource: dict[str, Any]) -> list[Value]:
        current: list[Value] = [(resource, None)]
        for kind, a, b in ops:
            if kind == "child":
                current = [c for node, _ in current for c in _children(node, a, b)]
            elif kind == "eq":
                current = [(n, t) for n, t in current if isinstance(n, dict) and n.get(a) == b]
            else:  # reference target filter
                current = [(n, t) for n, t in current if _ref_type(n) == a]
        return current

    return walk


def _ref_type(node: Any) -> str | None:
    if isinstance(node, dict) and isinstance(node.get("reference"), str):
        m = _REF_RE.match(node["reference"])
        return m[1] if m else None
    return None


def _fhirpath_walker(expr: str) -> Walker:
    from fhirpathpy import compile as fp_compile
    from fhirpathpy.models import models

    fn = fp_compile(expr, models["r4"])

    def walk(resource: dict[str, Any]) -> list[Value]:
        try:
            return [(v, None) for v in fn(resource, None)]
        except Exception:
            return []

    return walk


@cache
def _walker(type_: str, code: str) -> Walker:
    sp = params_for(type_)[code]
    walkers = [_compile_path(p, type_) for p in _split_top(sp.expression, "|")]
    if all(w is not None for w in walkers):
        ws = [w for w in walkers if w is not None]
        return lambda r: [v for w in ws for v in w(r)]
    return _fhirpath_walker(sp.expression)


# -- converters per search parameter type ----------------------------------------------------
def _tokens(sp: SearchParam, value: Any, _t: str | None) -> Iterator[IndexEntry]:
    p = sp.code
    if isinstance(value, bool):
        yield IndexEntry(p, val="true" if value else "false")
    elif isinstance(value, str):
        yield IndexEntry(p, val=value)
    elif isinstance(value, dict):
        if "coding" in value or "text" in value:  # CodeableConcept
            # One entry per coding (its display is its :text), and the concept's own text as
            # an entry of its own, so :text finds either and code matches are not blurred.
            for c in value.get("coding") or []:
                if isinstance(c, dict) and (c.get("code") or c.get("system")):
                    display = c.get("display")
                    yield IndexEntry(p, sys=c.get("system"), val=c.get("code"),
                                     raw=normalise(display) if display else None)
            text = value.get("text")
            if isinstance(text, str) and text:
                yield IndexEntry(p, raw=normalise(text))
        elif "value" in value and "code" not in value:
            # Identifier or ContactPoint: system|value; :text searches Identifier.type.text
            type_text = (value.get("type") or {}).get("text") if isinstance(
                value.get("type"), dict) else None
            yield IndexEntry(p, sys=value.get("system"), val=str(value["value"]),
                             raw=normalise(type_text) if type_text else None)
        elif "code" in value or "system" in value:  # Coding
            yield IndexEntry(p, sys=value.get("system"), val=value.get("code"),
                             raw=normalise(value["display"]) if value.get("display") else None)


_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDR_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def _strings(sp: SearchParam, value: Any, _t: str | None) -> Iterator[IndexEntry]:
    texts: list[str] = []
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, dict):
        for key in _NAME_PARTS + _ADDR_PARTS:
            v = value.get(key)
            texts.extend(x for x in (v if isinstance(v, list) else [v]) if isinstance(x, str))
    for t in texts:
        yield IndexEntry(sp.code, val=normalise(t), raw=t)


def _references(sp: SearchParam, value: Any, _t: str | None) -> Iterator[IndexEntry]:
    if isinstance(value, str):  # canonical
        yield IndexEntry(sp.code, val=value)
        return
    if not isinstance(value, dict):
        return
    ref = value.get("reference")
    if isinstance(ref, str):
        m = _REF_RE.match(ref)
        if m and "://" not in ref:
            yield IndexEntry(sp.code, sys=m[1], val=f"{m[1]}/{m[2]}")
        else:
            yield IndexEntry(sp.code, sys=m[1] if m else None, val=ref)
    ident = value.get("identifier")
    if isinstance(ident, dict) and ident.get("value") is not None:
        yield IndexEntry(f"{sp.code}:identifier", sys=ident.get("system"),
                         val=str(ident["value"]))


def _dates(sp: SearchParam, value: Any, t: str | None) -> Iterator[IndexEntry]:
    if isinstance(value, str):
        try:
            start, stop = date_range(value)
        except ValueError:
            return
        yield IndexEntry(sp.code, lo=start, hi=stop)
    elif isinstance(value, dict):
        if "start" in value or "end" in value:  # Period
            lo: int | None = None
            hi: int | None = None
            try:
                if isinstance(value.get("start"), str):
                    lo = date_range(value["start"])[0]
                if isinstance(value.get("end"), str):
                    hi = date_range(value["end"])[1]
            except ValueError:
                return
            yield IndexEntry(sp.code, lo=MIN_US if lo is None else lo,
                             hi=MAX_US if hi is None else hi)
        elif "event" in value or "repeat" in value:  # Timing
            for ev in value.get("event") or []:
                yield from _dates(sp, ev, None)
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            if bounds:
                yield from _dates(sp, bounds, "Period")


def _numbers(sp: SearchParam, value: Any, _t: str | None) -> Iterator[IndexEntry]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield IndexEntry(sp.code, lo=value, hi=value)
    elif isinstance(value, dict) and isinstance(value.get("value"), int | float):  # Quantity
        v = value["value"]
        yield IndexEntry(sp.code, sys=value.get("system"), val=value.get("code") or value.get(
            "unit"), lo=v, hi=v)


def _uris(sp: SearchParam, value: Any, _t: str | None) -> Iterator[IndexEntry]:
    if isinstance(value, str):
        yield IndexEntry(sp.code, val=value)


_CONVERT: dict[str, Callable[[SearchParam, Any, str | None], Iterable[IndexEntry]]] = {
    "token": _tokens,
    "string": _strings,
    "reference": _references,
    "date": _dates,
    "number": _numbers,
    "quantity": _numbers,
    "uri": _uris,
}




def extract(type_: str, resource: dict[str, Any]) -> list[IndexEntry]:
    """Every index entry of ``resource``; duplicates removed so stores stay small."""
    out: dict[IndexEntry, None] = {}
    for code, sp in params_for(type_).items():
        convert = _CONVERT.get(sp.type)
        if convert is None:
            continue
        for value, t in _walker(type_, code)(resource):
            for entry in convert(sp, value, t):
                out[entry] = None
    entries = list(out)
    primary = PRIMARY_DATE.get(type_)
    if primary is not None:
        dates = [e for e in entries if e.param == primary]
        if len(dates) == 1:
            lo, hi = dates[0].lo, dates[0].hi
            entries = [replace(e, lo=lo, hi=hi) if e.lo is None and e.hi is None else e
                       for e in entries]
    return entries


def reference_targets(type_: str, param: str, resource: dict[str, Any]) -> list[str]:
    """Relative ``Type/id`` references a reference parameter of ``resource`` holds."""
    out = []
    for value, _ in _walker(type_, param)(resource):
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            ref = value["reference"]
            if "://" not in ref and ref.count("/") >= 1:
                t, _, rest = ref.partition("/")
                out.append(f"{t}/{rest.split('/')[0]}")
    return out
