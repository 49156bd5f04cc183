"""Logical references (a Reference with only an ``identifier``) resolved to stored resources.

(Also absolute references to this server, made relative: ITI-115 allows absolute URLs.)

IHE ITI-115 lets a client name an actor by identifier alone (its example request names the
practitioner that way). Each one is looked up with an ``identifier`` search of every type the
parameter may point to, through the search service (so authorization applies as to any search):

- a repeating parameter (practitioner, location, ...) takes every match, in place and in search
  order, keeping the client's order of preference; an identifier nobody has becomes a
  conditional reference (``Practitioner?identifier=...``) that no calendar's actor equals, so that
  actor kind gets no options instead of the filter silently vanishing;
- a single-valued parameter (the appointment to hold or book) needs exactly one match: none is a
  404 not-found, several a 422 naming the parameter.
"""

from __future__ import annotations

from typing import Any

from ..context import RequestContext
from ..errors import FhirError
from ..service.services import Services
from .definition import IdentifierRef, OperationDef

_LIMIT = 100  # matches taken per identifier; more than this is not a sensible actor list


async def _matches(services: Services, ctx: RequestContext, ref: IdentifierRef,
                   types: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for type_ in (ref.type,) if ref.type else types:
        _parsed, result = await services.search.search(
            ctx, type_, [("identifier", ref.token), ("_count", str(_LIMIT))], strict=True,
            base_url=ctx.base_url)
        found += [f"{type_}/{id_}" for id_, _body in result.rows]
    return found


async def resolve(services: Services, ctx: RequestContext, op: OperationDef,
                  values: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """``values`` with every IdentifierRef replaced by reference strings, and absolute
    references to this server made relative (``[base]/Practitioner/1`` is ``Practitioner/1``,
    the form stored resources refer by)."""
    out: dict[str, list[Any]] = {}
    own = ctx.base_url.rstrip("/") + "/" if ctx.base_url else None
    for name, items in values.items():
        p = op.lookup(name)
        assert p is not None
        if own and p.takes_reference:
            items = [v[len(own):] if isinstance(v, str) and v.startswith(own) else v
                     for v in items]
        if not any(isinstance(v, IdentifierRef) for v in items):
            out[name] = items
            continue
        types = tuple(t for t in p.targets if t not in ("InsurancePlan",)) or ("Resource",)
        resolved: list[Any] = []
        for v in items:
            if not isinstance(v, IdentifierRef):
                resolved.append(v)
                continue
            found = await _matches(services, ctx, v, types)
            if p.max == 1:
                if not found:
                    raise FhirError(404, "not-found", f"parameter {name!r}: no "
                                    f"{' or '.join(types)} has identifier {v.token}",
                                    expression=[name], severity="fatal")
                if len(found) > 1:
                    raise FhirError(422, "multiple-matches", f"parameter {name!r}: identifier "
                                    f"{v.token} matches {len(found)} resources "
                                    f"({', '.join(found[:5])}); give a literal reference",
                                    expression=[name])
            resolved += found or [f"{types[0]}?identifier={v.token}"]
        out[name] = resolved
    return out
