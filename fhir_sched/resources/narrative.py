"""Narrative checks the models do not make: ``Narrative.status`` from its required value set
and ``Narrative.div`` held to the R4 narrative rules (txt-1, txt-2).

txt-1 allows only the basic HTML formatting elements and attributes, ``<a>`` and images, so
anything active (``script``, ``form``, ``iframe``, ``object``, ``base``/``link``, an ``on*``
event attribute) is refused by not being on the lists; a ``javascript:`` URL in ``href`` or
``src`` is refused on top, since an allowed attribute can still carry one. The div must be one
XHTML ``div`` element with some text (txt-2). Parsed with defusedxml: no DTD, no entities.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

STATUS = frozenset({"generated", "extensions", "additional", "empty"})
XHTML = "http://www.w3.org/1999/xhtml"
MAX_DIV_CHARS = 256 * 1024  # a narrative is a summary; a larger one is refused, not parsed
ELEMENTS = frozenset({
    "a", "abbr", "acronym", "b", "big", "blockquote", "br", "caption", "cite", "code", "col",
    "colgroup", "dd", "dfn", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "i", "img", "li", "ol", "p", "pre", "q", "samp", "small", "span", "strong", "sub", "sup",
    "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "ul", "var"})
ATTRIBUTES = frozenset({
    "abbr", "accesskey", "align", "alt", "axis", "bgcolor", "border", "cellhalign",
    "cellpadding", "cellspacing", "cellvalign", "char", "charoff", "charset", "class",
    "colspan", "compact", "coords", "dir", "frame", "headers", "height", "href", "hreflang",
    "hspace", "id", "lang", "longdesc", "name", "nowrap", "rel", "rev", "rowspan", "rules",
    "scope", "shape", "span", "src", "start", "style", "summary", "tabindex", "title", "type",
    "valign", "value", "vspace", "width"})
_SCRIPT_URL = re.compile(r"^\s*(javascript|vbscript|data\s*:\s*text/html)", re.I)
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def _local(tag: str, path: str) -> tuple[str | None, str | None]:
    """The element's local name, or a problem when it is not in the XHTML namespace."""
    if not tag.startswith("{" + XHTML + "}"):
        return None, f"{path}: <{tag}> is not an XHTML element"
    return tag[len(XHTML) + 2:], None


def _element_problems(root: Element, path: str) -> Iterator[str]:
    stack = [root]
    while stack:
        el = stack.pop()
        name, problem = _local(el.tag if isinstance(el.tag, str) else "?", path)
        if problem:
            yield problem
            continue
        if name not in ELEMENTS:
            yield f"{path}: <{name}> is not allowed in a narrative (txt-1)"
        for attr, value in el.attrib.items():
            if attr == _XML_LANG:
                continue
            if attr.startswith("{") or attr not in ATTRIBUTES:
                yield f"{path}: attribute {attr!r} on <{name}> is not allowed (txt-1)"
            elif attr in ("href", "src") and _SCRIPT_URL.match(value):
                yield f"{path}: {attr} on <{name}> may not be a script URL"
        stack.extend(reversed(list(el)))


def problems(text: Any, path: str) -> Iterator[tuple[str, str]]:
    """Problems with one ``text`` element (a Narrative) at ``path``."""
    if not isinstance(text, dict):
        return  # the model reports a wrong type
    status = text.get("status")
    if isinstance(status, str) and status not in STATUS:
        yield (f"{path}.status", f"{status!r} is not in the required value set "
               f"({', '.join(sorted(STATUS))})")
    div = text.get("div")
    if not isinstance(div, str):
        return
    where = f"{path}.div"
    if len(div) > MAX_DIV_CHARS:
        yield (where, f"the narrative is longer than {MAX_DIV_CHARS} characters")
        return
    try:
        root = fromstring(div)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        yield (where, f"not well-formed XHTML ({type(exc).__name__}: {str(exc)[:120]})")
        return
    if root.tag != "{" + XHTML + "}div":
        yield (where, "must be a single <div> in the XHTML namespace "
               f"(xmlns=\"{XHTML}\")")
        return
    for problem in _element_problems(root, where):
        yield (where, problem.removeprefix(f"{where}: "))
    if not "".join(root.itertext()).strip() and root.find(f".//{{{XHTML}}}img") is None:
        yield (where, "txt-2: the narrative must have some non-whitespace content")


def narratives(resource: dict[str, Any], type_: str) -> Iterator[tuple[str, Any]]:
    """The resource's ``text`` and each contained resource's, with their paths."""
    if "text" in resource:
        yield f"{type_}.text", resource["text"]
    contained = resource.get("contained")
    if isinstance(contained, list):
        for n, inner in enumerate(contained):
            if isinstance(inner, dict) and "text" in inner:
                yield f"{type_}.contained[{n}].text", inner["text"]
