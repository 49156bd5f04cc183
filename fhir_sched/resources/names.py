"""How a resource is named to people (a message, a calendar entry): a Location's or service's
``name``, else a person's first HumanName as written (``text``) or put together."""

from __future__ import annotations

from typing import Any


def display_name(resource: dict[str, Any] | None) -> str:
    """The name to show, "" when the resource has none."""
    if not resource:
        return ""
    if isinstance(resource.get("name"), str):
        return str(resource["name"])
    for name in resource.get("name") or []:
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return str(name["text"])
        parts = [*(name.get("prefix") or []), *(name.get("given") or []), name.get("family")]
        text = " ".join(str(p) for p in parts if p)
        if text:
            return text
    return ""
