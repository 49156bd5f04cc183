"""The one failure of the converter: what is wrong, and where (a FHIRPath-like location)."""

from __future__ import annotations


class XmlError(ValueError):
    def __init__(self, message: str, location: str | None = None) -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.message = message
        self.location = location
