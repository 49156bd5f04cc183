"""The only place XML text is parsed: defusedxml refuses DTDs (so no entity expansion, no
billion laughs, no external entities or XXE) and the tree is checked for depth before any
recursive code walks it."""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from .errors import XmlError

# FHIR's deepest honest nesting (Questionnaire.item.item..., extension.extension...) stays far
# below this; past it a document is an attack on the recursive walkers, not a resource.
MAX_DEPTH = 100


def parse(raw: bytes, location: str | None = None) -> Element:
    try:
        root: Element = fromstring(raw, forbid_dtd=True, forbid_entities=True,
                                   forbid_external=True)
    except DefusedXmlException as exc:
        raise XmlError("DTDs and entity declarations are not allowed in FHIR XML "
                       f"({type(exc).__name__})", location) from None
    except ParseError as exc:
        raise XmlError(f"malformed XML: {exc}", location) from None
    stack: list[tuple[Element, int]] = [(root, 1)]
    while stack:
        el, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise XmlError(f"XML nested deeper than {MAX_DEPTH} elements", location)
        stack.extend((child, depth + 1) for child in el)
    return root
