"""The R4 element table (``r4-structure.json``, made by ``tools/generate_xml_structure.py``):
for each structure its elements in definition order, with their types, so XML can be read into
typed JSON and JSON written as XML in the order XML requires."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
RESOURCE = "Resource"  # the type of an element that holds any resource, wrapped


@dataclass(frozen=True, slots=True)
class Element:
    """One element of a structure. ``types`` are primitive names, structure keys (complex
    types, resources, nested backbones such as ``Patient.contact``) or ``Resource``."""

    name: str
    types: tuple[str, ...]
    position: int
    many: bool
    choice: bool
    attribute: bool
    xhtml: bool

    def json_name(self, type_: str) -> str:
        return self.name + type_[0].upper() + type_[1:] if self.choice else self.name


@dataclass(frozen=True, slots=True)
class Structure:
    key: str
    elements: tuple[Element, ...]
    # every name an element can take on the wire (``valueString``...) -> (element, its type)
    by_name: dict[str, tuple[Element, str]]


@functools.cache
def _table() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("r4-structure.json").read_text("utf-8")
    table: dict[str, Any] = json.loads(text)
    return table


@functools.cache
def primitive_kinds() -> dict[str, str]:
    """Primitive type -> its JSON kind: ``boolean``, ``integer``, ``decimal`` or ``string``."""
    return dict(_table()["primitives"])


@functools.cache
def resource_types() -> frozenset[str]:
    return frozenset(_table()["resources"])


def is_primitive(type_: str) -> bool:
    return type_ in primitive_kinds()


@functools.cache
def structure(key: str) -> Structure | None:
    rows = _table()["structures"].get(key)
    if rows is None:
        return None
    elements = []
    by_name: dict[str, tuple[Element, str]] = {}
    for i, (name, types, flags) in enumerate(rows):
        el = Element(name, tuple(types), i, "*" in flags, "x" in flags, "a" in flags,
                     "h" in flags)
        elements.append(el)
        for t in el.types:
            by_name[el.json_name(t)] = (el, t)
    return Structure(key, tuple(elements), by_name)
