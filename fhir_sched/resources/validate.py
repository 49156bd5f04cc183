"""Content validation: the R4B models (identical to R4 for hosted types) plus our own rules.

Every problem is reported at once with its element path, so a client fixes its payload in one
round trip; the models do not enforce required code bindings, so those are checked from each
type module's BINDINGS table.

The models are also lax about JSON primitive types (pydantic turns ``"yes"`` into ``True`` and a
number into a date), while FHIR JSON fixes them (booleans are JSON booleans, integers JSON
integers, dates strings). Since we store and serve the client's JSON as accepted, not the model's
coerced values, a coercion the model forgives would be served back as invalid FHIR; so the JSON
types are checked against the validated model, value by value.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, time
from decimal import Decimal
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

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


@cache
def _fields_by_json_name(model: type[BaseModel]) -> dict[str, str]:
    """JSON member name -> model attribute (``class`` is ``class_fhir``, ``_x`` is ``x__ext``)."""
    return {(f.alias or name): name for name, f in model.model_fields.items()}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _json_type_problems(value: Any, parsed: Any, path: str) -> Iterator[tuple[str, str]]:
    """Compare the client's JSON with what the model made of it, to catch lax coercions."""
    if isinstance(parsed, BaseModel):
        if not isinstance(value, dict):
            return
        fields = _fields_by_json_name(type(parsed))
        for key, item in value.items():
            name = fields.get(key)
            if name is None:
                continue  # resourceType, or an unknown member the model already reported
            if item is None:
                yield (f"{path}.{key}", "null is not a FHIR JSON value; omit the element")
                continue
            yield from _json_type_problems(item, getattr(parsed, name, None), f"{path}.{key}")
    elif isinstance(parsed, list):
        if isinstance(value, list):
            for n, (item, sub) in enumerate(zip(value, parsed, strict=False)):
                if item is not None:  # nulls align primitive arrays with their _extensions
                    yield from _json_type_problems(item, sub, f"{path}[{n}]")
    elif isinstance(parsed, bool):
        if not isinstance(value, bool):
            yield (path, f"expected a JSON boolean (true or false), got {_json_kind(value)}")
    elif isinstance(parsed, int):
        if isinstance(value, bool) or not isinstance(value, int):
            yield (path, f"expected a JSON integer, got {_json_kind(value)}")
    elif isinstance(parsed, float | Decimal):
        if isinstance(value, bool) or not isinstance(value, int | float):
            yield (path, f"expected a JSON number, got {_json_kind(value)}")
    elif isinstance(parsed, str | bytes | date | time) and not isinstance(value, str):
        # date covers datetime
        yield (path, f"expected a JSON string, got {_json_kind(value)}")


def problems(resource: dict[str, Any]) -> list[tuple[str, str]]:
    type_ = resource["resourceType"]
    rt = get_type(type_)
    found: list[tuple[str, str]] = []
    try:
        parsed = rt.model.model_validate(resource)
        found.extend(_json_type_problems(resource, parsed, type_))
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
