"""People, places and requests named by identifier, found or created inside the message's unit.

An SIU message names its patient, practitioners and rooms by the sender's own identifiers. Each
is looked up by ``identifier`` (system|value) in the same atomic unit that writes the
appointment, and created from the mapped body when nobody has it, so two messages naming one
new patient at once still make one Patient (units are serial on both stores). A name without an
identifier cannot be matched: it stays a display-only reference, as the sender gave it. Types
this server does not host (Device) stay logical references by identifier.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fhir_sched.context import RequestContext
from fhir_sched.query import Query
from fhir_sched.resources import is_hosted
from fhir_sched.search.parse import parse_param
from fhir_sched.service.resources import ResourceService, new_id
from fhir_sched.storage.base import Unit

Key = tuple[str, str, str]  # (resource type, identifier system, identifier value)


def identifier_query(type_: str, system: str, value: str, *extra: tuple[str, str]) -> Query:
    token = f"{_escape(system)}|{_escape(value)}" if system else _escape(value)
    where = [parse_param(type_, "identifier", token)]
    where += [parse_param(type_, name, raw) for name, raw in extra]
    return Query(type_, where=tuple(w for w in where if w is not None), count=2)


def _escape(text: str) -> str:
    """Search-value escaping: an identifier may hold ``,``, ``|``, ``$`` or ``\\``."""
    for ch in ("\\", ",", "|", "$"):
        text = text.replace(ch, "\\" + ch)
    return text


async def find_one(unit: Unit, type_: str, system: str, value: str,
                   *extra: tuple[str, str]) -> str | None:
    """The id of the resource with this identifier; the first when (wrongly) several have it."""
    ids = await unit.find_ids(identifier_query(type_, system, value, *extra), limit=2)
    return ids[0] if ids else None


@dataclass(slots=True)
class Resolver:
    """Finds or creates each named resource once per message, and rewrites references."""

    resources: ResourceService
    unit: Unit
    ctx: RequestContext
    found: dict[Key, str] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)

    async def ensure(self, type_: str, system: str, value: str, body: dict[str, Any]) -> str | None:
        """``Type/id`` of the resource with identifier system|value, created from ``body``
        when unknown; None for an unhosted type or a name without an identifier."""
        if not value or not is_hosted(type_):
            return None
        key = (type_, system, value)
        if key in self.found:
            return self.found[key]
        id_ = await find_one(self.unit, type_, system, value)
        if id_ is None:
            id_ = new_id()
            prepared = self.resources.prepare(type_, {**body, "id": id_}, id_)
            await self.resources.put_in_unit(self.unit, self.ctx, type_, id_, prepared)
            self.written.append(f"{type_}/{id_}")
        self.found[key] = f"{type_}/{id_}"
        return self.found[key]

    def link(self, document: Any) -> Any:
        """A copy of ``document`` where each identifier-only Reference whose target was found
        gets its literal ``reference`` (the identifier is kept beside it)."""
        if isinstance(document, list):
            return [self.link(v) for v in document]
        if not isinstance(document, dict):
            return document
        out = {k: self.link(v) for k, v in document.items()}
        ident = out.get("identifier")
        if "reference" not in out and isinstance(out.get("type"), str) and isinstance(ident, dict):
            target = self.found.get((out["type"], str(ident.get("system", "")),
                                     str(ident.get("value", ""))))
            if target is not None:
                out["reference"] = target
        return out


def references_in(document: Any) -> Iterator[dict[str, Any]]:
    """Every dict holding a ``reference`` or an identifier-only reference, depth first."""
    if isinstance(document, list):
        for v in document:
            yield from references_in(v)
    elif isinstance(document, dict):
        if "reference" in document or (isinstance(document.get("type"), str)
                                       and isinstance(document.get("identifier"), dict)):
            yield document
        for v in document.values():
            yield from references_in(v)
