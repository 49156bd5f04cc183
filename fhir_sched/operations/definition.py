"""OperationDefinitions drive parameter parsing: declared once in ``conformance/``, used both to
check a call's inputs and to list the operation in the CapabilityStatement.

Inputs arrive as a query string (GET, or POST with a form) or a Parameters resource (POST). Each
input is matched by its IHE name or by one of its declared aliases (Argonaut, Epic), its
cardinality checked and its value converted; an unknown or malformed input is a 400 naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from ..conformance_files import load
from ..errors import FhirError
from ..timeutil import parse_instant

ALIAS = "https://fhir-sched.org/fhir/StructureDefinition/parameter-alias"
RESOURCE_TYPES = {"Resource", "Appointment", "Patient", "Bundle"}
_VALUE_KEYS = {
    "dateTime": ("valueDateTime", "valueInstant", "valueString"),
    "string": ("valueString", "valueCode", "valueToken", "valueUri", "valueCoding"),
    "integer": ("valueInteger", "valuePositiveInt", "valueUnsignedInt", "valueString"),
    "Reference": ("valueReference", "valueString", "valueUri", "valueId"),
    "Identifier": ("valueIdentifier",),
    "Timing": ("valueTiming",),
}


@dataclass(frozen=True, slots=True)
class ParamDef:
    name: str
    aliases: tuple[str, ...]
    min: int
    max: int | None  # None = unbounded
    type: str


@dataclass(frozen=True, slots=True)
class OperationDef:
    id: str
    code: str
    url: str
    params: tuple[ParamDef, ...]

    def lookup(self, name: str) -> ParamDef | None:
        for p in self.params:
            if name == p.name or name in p.aliases:
                return p
        return None


@cache
def operation(def_id: str) -> OperationDef:
    d = load(f"OperationDefinition-{def_id}.json")
    params = []
    for p in d["parameter"]:
        if p["use"] != "in":
            continue
        aliases = tuple(e["valueString"] for e in p.get("extension", []) if e["url"] == ALIAS)
        params.append(ParamDef(p["name"], aliases, p["min"],
                               None if p["max"] == "*" else int(p["max"]), p.get("type", "")))
    return OperationDef(d["id"], d["code"], d["url"], tuple(params))


def _bad(name: str, msg: str) -> FhirError:
    return FhirError(400, "invalid", f"parameter {name!r}: {msg}", expression=[name])


def _convert(p: ParamDef, name: str, value: Any) -> Any:
    if p.type == "dateTime":
        if not isinstance(value, str):
            raise _bad(name, "must be a dateTime string")
        try:
            return parse_instant(value)
        except ValueError as exc:
            raise _bad(name, f"{exc}; give a dateTime with a time and an offset, e.g. "
                       "2026-03-14T09:00:00-05:00") from None
    if p.type == "integer":
        if isinstance(value, bool):
            raise _bad(name, "must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
        raise _bad(name, "must be a non-negative integer")
    if p.type == "Reference":
        if isinstance(value, dict):
            ref = value.get("reference")
            if not isinstance(ref, str) or not ref:
                raise _bad(name, "the Reference has no reference")
            return ref
        if isinstance(value, str) and value:
            return value
        raise _bad(name, "must be a reference such as Practitioner/123")
    if p.type in ("string",):
        if isinstance(value, dict) and "code" in value:  # a Coding given for a token
            system = value.get("system")
            return f"{system}|{value['code']}" if system else value["code"]
        if not isinstance(value, str) or value == "":
            raise _bad(name, "must be a non-empty string")
        return value
    if p.type in ("Identifier", "Timing"):
        if not isinstance(value, dict):
            raise _bad(name, f"must be a {p.type}")
        return value
    if p.type in RESOURCE_TYPES:
        if not isinstance(value, dict) or "resourceType" not in value:
            raise _bad(name, f"must be a {p.type} resource")
        if p.type not in ("Resource",) and value["resourceType"] != p.type:
            raise _bad(name, f"must be a {p.type}, got {value['resourceType']}")
        return value
    return value


def _collect(op: OperationDef, pairs: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name, value in pairs:
        p = op.lookup(name)
        if p is None:
            known = ", ".join(q.name for q in op.params)
            raise _bad(name, f"${op.code} has no such parameter (known: {known})")
        out.setdefault(p.name, []).append(_convert(p, name, value))
    for p in op.params:
        got = len(out.get(p.name, []))
        if got < p.min:
            raise _bad(p.name, f"is required by ${op.code}")
        if p.max is not None and got > p.max:
            raise _bad(p.name, f"may appear at most {p.max} time(s)")
    return out


def from_query(op: OperationDef, pairs: list[tuple[str, str]]) -> dict[str, list[Any]]:
    expanded: list[tuple[str, Any]] = []
    for name, raw in pairs:
        p = op.lookup(name)
        if p is not None and p.type in RESOURCE_TYPES | {"Identifier", "Timing"}:
            raise _bad(name, "is a complex value: POST a Parameters resource instead")
        if p is not None and p.max is None and "," in raw and p.type in ("string", "Reference"):
            expanded.extend((name, v) for v in raw.split(",") if v)
        else:
            expanded.append((name, raw))
    return _collect(op, expanded)


def from_parameters(op: OperationDef, body: Any) -> dict[str, list[Any]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", f"POST ${op.code} takes a Parameters resource")
    pairs: list[tuple[str, Any]] = []
    for n, item in enumerate(body.get("parameter") or []):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise FhirError(400, "invalid", f"Parameters.parameter[{n}] needs a name",
                            expression=[f"Parameters.parameter[{n}]"])
        name = item["name"]
        p = op.lookup(name)
        if p is None:
            pairs.append((name, None))  # reported as unknown by _collect
            continue
        if "resource" in item:
            pairs.append((name, item["resource"]))
            continue
        keys = [k for k in item if k.startswith("value")]
        if len(keys) != 1:
            raise _bad(name, "needs exactly one value[x] (or a resource)")
        allowed = _VALUE_KEYS.get(p.type)
        if allowed is not None and keys[0] not in allowed:
            raise _bad(name, f"{keys[0]} is not accepted; use {' or '.join(allowed)}")
        pairs.append((name, item[keys[0]]))
    return _collect(op, pairs)
