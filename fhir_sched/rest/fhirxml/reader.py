"""FHIR R4 XML -> the JSON form (Python values), by the rules of the R4 XML and JSON pages.

The table gives each element's type and place, so a ``value`` attribute becomes a JSON
boolean, number or string as its type says, ``id``/``extension`` of a primitive become the
``_name`` sibling (with ``null`` place-holders in arrays), and a wrapped resource becomes an
object with ``resourceType``. Anything the definitions do not allow (an unknown element or
attribute, elements out of order or repeated, text where none may be) is refused with its
location, since XML, unlike JSON, is order-sensitive by definition.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from xml.etree.ElementTree import Element

from .errors import XmlError
from .safe import parse
from .structure import (
    FHIR_NS,
    RESOURCE,
    XHTML_NS,
    Structure,
    is_primitive,
    primitive_kinds,
    resource_types,
    structure,
)
from .xhtml import serialize, split

XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
DecimalReader = Callable[[str], Any]

_INTEGERS = {
    "integer": re.compile(r"-?(0|[1-9][0-9]*)"),
    "unsignedInt": re.compile(r"0|[1-9][0-9]*"),
    "positiveInt": re.compile(r"\+?[1-9][0-9]*"),
}
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _no_text(text: str | None, location: str) -> None:
    if text and text.strip():
        raise XmlError(f"text {text.strip()[:40]!r} is not allowed here; FHIR XML carries "
                       "values in value attributes", location)


class Reader:
    """One conversion; ``decimal`` turns a checked decimal's text into its JSON value (a float
    as a JSON parser would give it, or the exact text for writing JSON out)."""

    def __init__(self, decimal: DecimalReader) -> None:
        self.decimal = decimal

    def document(self, raw: bytes) -> dict[str, Any]:
        root = parse(raw)
        return self.resource(root, None)

    def resource(self, node: Element, location: str | None) -> dict[str, Any]:
        ns, local = split(node.tag)
        where = location or local
        if ns != FHIR_NS:
            raise XmlError(f"<{local}> is not in the FHIR namespace {FHIR_NS}"
                           + (f" (its namespace is {ns})" if ns else ""), where)
        st = structure(local)
        if local not in resource_types() or st is None:
            raise XmlError(f"{local!r} is not a FHIR R4 resource type", where)
        out: dict[str, Any] = {"resourceType": local}
        self.fill(node, st, out, where)
        return out

    def fill(self, node: Element, st: Structure, out: dict[str, Any], location: str) -> None:
        for name, text in node.attrib.items():
            ns, local = split(name)
            if ns == XSI_NS:
                continue
            hit = None if ns else st.by_name.get(local)
            if hit is None or not hit[0].attribute:
                raise XmlError(f"unknown attribute {local!r}", location)
            if not text:
                raise XmlError(f"attribute {local!r} may not be empty", location)
            out[local] = text
        _no_text(node.text, location)
        last, last_name = -1, ""
        repeated: dict[str, tuple[list[Any], list[Any]]] = {}
        for child in node:
            _no_text(child.tail, location)
            ns, local = split(child.tag)
            hit = st.by_name.get(local)
            if hit is None or hit[0].attribute:
                raise XmlError(f"unknown element <{local}> in {st.key}", f"{location}.{local}")
            el, type_ = hit
            want_ns = XHTML_NS if el.xhtml else FHIR_NS
            if ns != want_ns:
                raise XmlError(f"<{local}> must be in the namespace {want_ns}",
                               f"{location}.{local}")
            if el.position < last:
                raise XmlError(f"<{local}> is out of order: it must come before <{last_name}>",
                               location)
            if el.position == last and (not el.many or local != last_name):
                what = f"{el.name}[x]" if el.choice else local
                raise XmlError(f"<{local}>: {what} may appear only once", location)
            last, last_name = el.position, local
            if el.many:
                values, unders = repeated.setdefault(local, ([], []))
                where = f"{location}.{local}[{len(values)}]"
            else:
                where = f"{location}.{local}"
            value: Any
            under: dict[str, Any] | None = None
            if el.xhtml:
                value = serialize(child, where)
            elif is_primitive(type_):
                value, under = self.primitive(child, type_, where)
            elif type_ == RESOURCE:
                value = self.wrapped(child, where)
            else:
                nested = structure(type_)
                assert nested is not None, type_
                value = {}
                self.fill(child, nested, value, where)
                if not value:
                    raise XmlError(f"<{local}> is empty; an element needs a value or children",
                                   where)
            if el.many:
                values.append(value)
                unders.append(under)
            else:
                if value is not None:
                    out[local] = value
                if under is not None:
                    out["_" + local] = under
        for name, (values, unders) in repeated.items():
            if any(v is not None for v in values):
                out[name] = values
            if any(u is not None for u in unders):
                out["_" + name] = unders

    def primitive(self, node: Element, type_: str, location: str
                  ) -> tuple[Any, dict[str, Any] | None]:
        value: Any = None
        under: dict[str, Any] = {}
        for name, text in node.attrib.items():
            ns, local = split(name)
            if ns == XSI_NS:
                continue
            if ns or local not in ("value", "id"):
                raise XmlError(f"unknown attribute {local!r}", location)
            if local == "value":
                value = self.typed(text, type_, location)
            elif not text:
                raise XmlError("attribute 'id' may not be empty", location)
            else:
                under["id"] = text
        _no_text(node.text, location)
        extensions: list[dict[str, Any]] = []
        ext = structure("Extension")
        assert ext is not None
        for child in node:
            _no_text(child.tail, location)
            if child.tag != f"{{{FHIR_NS}}}extension":
                raise XmlError(f"<{split(child.tag)[1]}> cannot appear in a primitive element; "
                               "only <extension> can", location)
            item: dict[str, Any] = {}
            self.fill(child, ext, item, f"{location}.extension[{len(extensions)}]")
            extensions.append(item)
        if extensions:
            under["extension"] = extensions
        if value is None and not under:
            raise XmlError("the element has no value attribute and no extension", location)
        return value, under or None

    def typed(self, text: str, type_: str, location: str) -> Any:
        if text == "":
            raise XmlError(f"a {type_} value may not be empty", location)
        kind = primitive_kinds()[type_]
        if kind == "boolean":
            if text not in ("true", "false"):
                raise XmlError(f"{text!r} is not a boolean (true or false)", location)
            return text == "true"
        if kind == "integer":
            if not _INTEGERS[type_].fullmatch(text):
                raise XmlError(f"{text!r} is not a valid {type_}", location)
            return int(text)
        if kind == "decimal":
            if not _DECIMAL.fullmatch(text):
                raise XmlError(f"{text!r} is not a valid decimal", location)
            try:
                return self.decimal(text)
            except ValueError:
                raise XmlError(f"{text!r} is out of the range of a decimal", location) from None
        return text

    def wrapped(self, node: Element, location: str) -> dict[str, Any]:
        if node.attrib:
            raise XmlError(f"unknown attribute {split(next(iter(node.attrib)))[1]!r}", location)
        _no_text(node.text, location)
        children = list(node)
        if len(children) != 1:
            raise XmlError(f"must hold exactly one resource, found {len(children)} elements",
                           location)
        _no_text(children[0].tail, location)
        return self.resource(children[0], location)
