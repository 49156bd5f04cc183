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

import logging
from collections.abc import Iterator
from datetime import date, time
from decimal import Decimal
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ValidationError

from ..errors import FhirError
from . import narrative
from .registry import get_type

log = logging.getLogger("fhir_sched.validate")
# Deeper JSON than any real resource needs (extensions and Questionnaire items nest, but not
# this far); checked before the models, whose recursive validators would otherwise run out of
# stack on a hostile body.
MAX_DEPTH = 64


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


def _too_deep(resource: dict[str, Any]) -> bool:
    stack: list[tuple[Any, int]] = [(resource, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
    return False


def _shape_problems(resource: dict[str, Any], type_: str) -> list[tuple[str, str]]:
    """What would stop the models from validating at all: too deep, or contained resources
    of no FHIR type (the models fail on those with errors of their own, not a report)."""
    if _too_deep(resource):
        return [(type_, f"the resource nests deeper than {MAX_DEPTH} levels")]
    found = []
    contained = resource.get("contained")
    for n, inner in enumerate(contained if isinstance(contained, list) else []):
        rtype = inner.get("resourceType") if isinstance(inner, dict) else None
        path = f"{type_}.contained[{n}]"
        if not isinstance(rtype, str):
            found.append((path, "a contained resource needs a resourceType"))
            continue
        try:
            get_fhir_model_class(rtype)
        except (ValueError, KeyError):
            found.append((f"{path}.resourceType", f"{rtype!r} is not a FHIR R4 resource type"))
    return found


def problems(resource: dict[str, Any]) -> list[tuple[str, str]]:
    type_ = resource["resourceType"]
    rt = get_type(type_)
    found = _shape_problems(resource, type_)
    if found:
        return found
    try:
        parsed = rt.model.model_validate(resource)
        found.extend(_json_type_problems(resource, parsed, type_))
    except ValidationError as exc:
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            found.append((_loc_path(type_, err["loc"]), msg))
    except (ValueError, TypeError) as exc:
        found.append((type_, str(exc)))
    except Exception as exc:  # the models' own failure on some input: still the client's 4xx
        log.warning("validation of a %s failed inside the models: %s", type_,
                    type(exc).__name__)
        found.append((type_, f"the resource cannot be validated ({type(exc).__name__})"))
    for dotted, codes in rt.bindings.items():
        for path, value in _walk(resource, dotted.split("."), type_):
            if isinstance(value, str) and value not in codes:
                found.append((path, f"{value!r} is not in the required value set "
                              f"({', '.join(sorted(codes))})"))
    for path, text in narrative.narratives(resource, type_):
        found.extend(narrative.problems(text, path))
    if rt.rules is not None:
        # The rules read the resource as FHIR shapes it; when the model already found it
        # misshapen they may meet types they do not expect, and the model's report stands.
        try:
            found.extend(rt.rules(resource))
        except (TypeError, AttributeError, ValueError, KeyError):
            if not found:
                raise
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
