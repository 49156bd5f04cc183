"""FHIR R4 XML <-> JSON, by the R4 XML and JSON rules, typed by the R4 definitions.

Pure: bytes in, bytes or Python values out, ``XmlError`` (with a location) for anything that
is not valid FHIR XML. The REST door converts only when a client asks for or sends XML; JSON
stays the stored and default form.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from .errors import XmlError
from .reader import Reader
from .writer import DecimalText, Writer

__all__ = ["XmlError", "json_to_xml", "parse_xml", "to_xml", "xml_to_json"]

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def _json_decimal(text: str) -> Any:
    """What a JSON parser makes of the same number, so XML bodies validate exactly as JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None


def parse_xml(raw: bytes) -> dict[str, Any]:
    """An XML resource as the Python value ``orjson.loads`` would give for its JSON form."""
    return Reader(_json_decimal).document(raw)


def xml_to_json(raw: bytes) -> bytes:
    """An XML resource as JSON bytes; decimals keep the digits they were written with."""
    doc = Reader(lambda text: orjson.Fragment(text.encode("ascii"))).document(raw)
    return orjson.dumps(doc)


def to_xml(resource: dict[str, Any]) -> bytes:
    """A resource (JSON form, as Python values) as an XML document."""
    writer = Writer()
    writer.out.append(XML_DECLARATION)
    location = resource.get("resourceType") if isinstance(resource, dict) else None
    writer.resource(resource, str(location or "resource"), root=True)
    return "".join(writer.out).encode("utf-8")


def json_to_xml(raw: bytes) -> bytes:
    """JSON bytes as an XML document, decimals exactly as written in the JSON."""
    try:
        doc = json.loads(raw, parse_float=DecimalText)
    except ValueError as exc:
        raise XmlError(f"malformed JSON: {exc}") from None
    return to_xml(doc)
