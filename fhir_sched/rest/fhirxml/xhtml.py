"""Narrative XHTML (``Narrative.div``): kept as XHTML in XML, carried as a string in JSON.

Both directions go through a parsed tree, so the JSON string always declares the XHTML
namespace on its root (as the JSON format requires) and the XML always holds well-formed XHTML.
"""

from __future__ import annotations

import re
from html.entities import name2codepoint
from xml.etree.ElementTree import Element

from .errors import XmlError
from .safe import parse
from .structure import XHTML_NS

_XML_NS = "http://www.w3.org/XML/1998/namespace"
_XML_ENTITIES = {"amp", "lt", "gt", "quot", "apos"}
_HTML_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")


def _numeric_entities(text: str) -> str:
    """``&nbsp;`` and the other HTML names as character references, which XML knows."""
    def ref(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in _XML_ENTITIES or name not in name2codepoint:
            return m.group(0)
        return f"&#{name2codepoint[name]};"
    return _HTML_ENTITY.sub(ref, text)


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


def serialize(el: Element, location: str, root: bool = True, lenient: bool = False) -> str:
    """One XHTML element as text; anything outside the XHTML namespace is refused (``lenient``:
    elements in no namespace count as XHTML)."""
    ns, local = split(el.tag)
    if ns != XHTML_NS and not (lenient and ns == ""):
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
        parts.append(serialize(child, location, root=False, lenient=lenient))
        if child.tail:
            parts.append(escape_text(child.tail))
    parts.append(f"</{local}>")
    return "".join(parts)


def div_from_json(text: str, location: str) -> str:
    """A stored JSON ``div`` string as XML text.

    What the JSON door stored is answered, never refused: a div without the XHTML namespace
    declaration is put in it, HTML entity names become character references, and a div
    that still is not well-formed XHTML (or not a div at all) is carried as the text of an
    XHTML div, so no narrative content is lost and the XML stays well-formed.
    """
    try:
        root = parse(_numeric_entities(text).encode("utf-8"), location)
        if split(root.tag) in ((XHTML_NS, "div"), ("", "div")):
            return serialize(root, location, lenient=True)
    except XmlError:
        pass
    return f'<div xmlns="{XHTML_NS}">{escape_text(text)}</div>'
