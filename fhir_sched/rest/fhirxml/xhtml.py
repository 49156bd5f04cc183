"""Narrative XHTML (``Narrative.div``): kept as XHTML in XML, carried as a string in JSON.

Both directions go through a parsed tree, so the JSON string always declares the XHTML
namespace on its root (as the JSON format requires) and the XML always holds well-formed XHTML.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from .errors import XmlError
from .safe import parse
from .structure import XHTML_NS

_XML_NS = "http://www.w3.org/XML/1998/namespace"


def split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_attr(text: str) -> str:
    return (escape_text(text).replace('"', "&quot;").replace("\t", "&#9;")
            .replace("\n", "&#10;").replace("\r", "&#13;"))


def serialize(el: Element, location: str, root: bool = True) -> str:
    """One XHTML element as text; anything outside the XHTML namespace is refused."""
    ns, local = split(el.tag)
    if ns != XHTML_NS:
        raise XmlError(f"narrative element <{local}> must be in the XHTML namespace "
                       f"{XHTML_NS}", location)
    parts = [f"<{local}"]
    if root:
        parts.append(f' xmlns="{XHTML_NS}"')
    for name, value in el.attrib.items():
        ans, alocal = split(name)
        if ans == _XML_NS:
            alocal = "xml:" + alocal
        elif ans:
            raise XmlError(f"narrative attribute {alocal!r} in namespace {ans} is not XHTML",
                           location)
        parts.append(f' {alocal}="{escape_attr(value)}"')
    children = list(el)
    if not children and not el.text:
        return "".join(parts) + "/>"
    parts.append(">")
    if el.text:
        parts.append(escape_text(el.text))
    for child in children:
        parts.append(serialize(child, location, root=False))
        if child.tail:
            parts.append(escape_text(child.tail))
    parts.append(f"</{local}>")
    return "".join(parts)


def div_from_json(text: str, location: str) -> str:
    """A JSON ``div`` string as XML text; it must be one well-formed XHTML ``div``."""
    root = parse(text.encode("utf-8"), location)
    if split(root.tag) != (XHTML_NS, "div"):
        raise XmlError("the narrative must be one <div> in the XHTML namespace", location)
    return serialize(root, location)
