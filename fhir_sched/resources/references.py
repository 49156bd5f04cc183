"""Finding the references inside a resource, so hosted targets can be checked and rewritten."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]+))?$")


def iter_references(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(element path, Reference dict) for every Reference, skipping contained resources."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield path, node
        for key, value in node.items():
            if key in ("contained", "reference"):
                continue
            if isinstance(value, dict | list):
                yield from iter_references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for n, item in enumerate(node):
            yield from iter_references(item, f"{path}[{n}]")
