"""The JSON form -> FHIR R4 XML text, elements in definition order (extensions first).

The input is JSON parsed so that every decimal keeps the text it was written with
(``DecimalText``), so ``1.50`` stays ``1.50`` in the ``value`` attribute.
"""

from __future__ import annotations

from typing import Any

from .errors import XmlError
from .structure import (
    FHIR_NS,
    RESOURCE,
    Element,
    Structure,
    is_primitive,
    primitive_kinds,
    resource_types,
    structure,
)
from .xhtml import div_from_json, escape_attr


class DecimalText(str):
    """A JSON number as written, for ``json.loads(parse_float=DecimalText)``."""


def _text(value: Any, type_: str, location: str) -> str:
    kind = primitive_kinds()[type_]
    if kind == "boolean" and isinstance(value, bool):
        return "true" if value else "false"
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if kind == "decimal" and (isinstance(value, DecimalText | float)
                              or (isinstance(value, int) and not isinstance(value, bool))):
        return str(value)
    if kind == "string" and isinstance(value, str) and not isinstance(value, DecimalText):
        return value
    raise XmlError(f"{value!r} is not a valid JSON value for a {type_}", location)


class Writer:
    def __init__(self) -> None:
        self.out: list[str] = []

    def resource(self, obj: Any, location: str, root: bool = False) -> None:
        rt = obj.get("resourceType") if isinstance(obj, dict) else None
        st = structure(rt) if isinstance(rt, str) and rt in resource_types() else None
        if st is None:
            raise XmlError(f"resourceType {rt!r} is not a FHIR R4 resource type", location)
        self.out.append(f'<{rt} xmlns="{FHIR_NS}">' if root else f"<{rt}>")
        attrs = self.members(obj, st, location)
        if attrs:
            raise XmlError("a resource has no XML attributes", location)
        self.out.append(f"</{rt}>")

    def members(self, obj: dict[str, Any], st: Structure, location: str) -> str:
        """Writes the child elements; returns the attributes (``id``, ``url``) for the caller's
        start tag, which is why the caller writes its start tag with a placeholder."""
        attrs: list[str] = []
        known = {"resourceType"}
        for el in st.elements:
            present = [(el.json_name(t), t) for t in el.types
                       if el.json_name(t) in obj or "_" + el.json_name(t) in obj]
            if len(present) > 1:
                raise XmlError(f"only one of {', '.join(n for n, _ in present)} may be given "
                               f"({el.name}[x])", location)
            for name, type_ in present:
                known.update((name, "_" + name))
                value, under = obj.get(name), obj.get("_" + name)
                where = f"{location}.{name}"
                if el.attribute:
                    attrs.append(f' {name}="{escape_attr(_text(value, type_, where))}"')
                elif el.many:
                    values = [] if value is None else value
                    unders = [] if under is None else under
                    if not isinstance(values, list) or not isinstance(unders, list):
                        raise XmlError("must be an array", where)
                    for i in range(max(len(values), len(unders))):
                        self.element(el, name, type_, values[i] if i < len(values) else None,
                                     unders[i] if i < len(unders) else None, f"{where}[{i}]")
                else:
                    self.element(el, name, type_, value, under, where)
        unknown = sorted(k for k in obj if k not in known)
        if unknown:
            raise XmlError(f"unknown element {unknown[0]!r}", location)
        return "".join(attrs)

    def element(self, el: Element, name: str, type_: str, value: Any, under: Any,
                location: str) -> None:
        if el.xhtml:
            if not isinstance(value, str):
                raise XmlError("the narrative div must be a string of XHTML", location)
            self.out.append(div_from_json(value, location))
        elif is_primitive(type_):
            self.primitive(name, type_, value, under, location)
        elif type_ == RESOURCE:
            self.out.append(f"<{name}>")
            self.resource(value, location)
            self.out.append(f"</{name}>")
        else:
            nested = structure(type_)
            assert nested is not None, type_
            if not isinstance(value, dict):
                raise XmlError(f"must be an object (a {type_})", location)
            start = len(self.out)
            self.out.append("")
            attrs = self.members(value, nested, location)
            self.out[start] = f"<{name}{attrs}>"
            self.out.append(f"</{name}>")

    def primitive(self, name: str, type_: str, value: Any, under: Any, location: str) -> None:
        if value is None and under is None:
            return
        attrs = ""
        extensions: list[Any] = []
        if under is not None:
            if not isinstance(under, dict) or set(under) - {"id", "extension"}:
                raise XmlError(f"_{name} may hold only id and extension", location)
            if "id" in under:
                attrs += f' id="{escape_attr(_text(under["id"], "string", location))}"'
            extensions = under.get("extension") or []
            if not isinstance(extensions, list):
                raise XmlError("extension must be an array", location)
        if value is not None:
            attrs += f' value="{escape_attr(_text(value, type_, location))}"'
        if not extensions:
            self.out.append(f"<{name}{attrs}/>")
            return
        self.out.append(f"<{name}{attrs}>")
        ext = structure("Extension")
        assert ext is not None
        for i, item in enumerate(extensions):
            if not isinstance(item, dict):
                raise XmlError("an extension must be an object", f"{location}.extension[{i}]")
            start = len(self.out)
            self.out.append("")
            ext_attrs = self.members(item, ext, f"{location}.extension[{i}]")
            self.out[start] = f"<extension{ext_attrs}>"
            self.out.append("</extension>")
        self.out.append(f"</{name}>")
