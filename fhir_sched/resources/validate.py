"""Content validation: the R4B models (identical to R4 for hosted types) plus our own rules.

Every problem is reported at once with its element path, so a client fixes its payload in one
round trip; the models do not enforce required code bindings, so those are checked from each
type module's BINDINGS table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from ..errors import FhirError
from .registry import get_type


def _loc_path(type_: str, loc: tuple[Any, ...]) -> str:
    path = type_
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("__root__",):
            continue
        else:
            path += f".{part}"
    return path


def _walk(node: Any, parts: list[str], path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, list):
        for n, item in enumerate(node):
            yield from _walk(item, parts, f"{path}[{n}]")
        return
    if not parts:
        yield path, node
        return
    if isinstance(node, dict) and parts[0] in node:
        yield from _walk(node[parts[0]], parts[1:], f"{path}.{parts[0]}")


def problems(resource: dict[str, Any]) -> list[tuple[str, str]]:
    type_ = resource["resourceType"]
    rt = get_type(type_)
    found: list[tuple[str, str]] = []
    try:
        rt.model.model_validate(resource)
    except ValidationError as exc:
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            found.append((_loc_path(type_, err["loc"]), msg))
    except (ValueError, TypeError) as exc:
        found.append((type_, str(exc)))
    for dotted, codes in rt.bindings.items():
        for path, value in _walk(resource, dotted.split("."), type_):
            if isinstance(value, str) and value not in codes:
                found.append((path, f"{value!r} is not in the required value set "
                              f"({', '.join(sorted(codes))})"))
    if rt.rules is not None:
        found.extend(rt.rules(resource))
    return found


def validate(resource: dict[str, Any]) -> None:
    found = problems(resource)
    if found:
        first_path, first_msg = found[0]
        raise FhirError(
            422, "invalid", f"{first_path}: {first_msg}", expression=[first_path],
            issues=[{"severity": "error", "code": "invalid", "diagnostics": f"{p}: {m}",
                     "expression": [p]} for p, m in found[1:]],
        )
