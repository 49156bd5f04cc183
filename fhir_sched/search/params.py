"""Search parameter declarations, loaded once from ``conformance/search-parameters.json``.

The same declarations drive index extraction on write, query parsing and the
CapabilityStatement, so a parameter cannot be searchable without being indexed or advertised.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from ..conformance_files import load
from ..resources import HOSTED_TYPES


@dataclass(frozen=True, slots=True)
class SearchParam:
    code: str
    base: str
    type: str
    expression: str
    url: str
    description: str
    targets: tuple[str, ...]


@cache
def _all() -> dict[str, dict[str, SearchParam]]:
    by_type: dict[str, dict[str, SearchParam]] = {t: {} for t in HOSTED_TYPES}
    common: list[SearchParam] = []
    for d in load("search-parameters.json"):
        sp = SearchParam(
            code=d["code"],
            base=d["base"],
            type=d["type"],
            expression=d["expression"],
            url=d.get("url", ""),
            description=d.get("description", ""),
            targets=tuple(d.get("target") or ()),
        )
        if sp.base == "Resource":
            common.append(sp)
        elif sp.base in by_type:
            by_type[sp.base][sp.code] = sp
    for params in by_type.values():
        for sp in common:
            params.setdefault(sp.code, sp)
    return by_type


def params_for(type_: str) -> dict[str, SearchParam]:
    return _all()[type_]


def get_param(type_: str, code: str) -> SearchParam | None:
    return _all().get(type_, {}).get(code)
