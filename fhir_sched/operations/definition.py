"""OperationDefinitions drive parameter parsing: declared once in ``conformance/``, used both to
check a call's inputs and to list the operation in the CapabilityStatement.

Inputs arrive as a query string (GET, or POST with a form) or a Parameters resource (POST). Each
input is matched by its IHE name or by one of its declared aliases (Argonaut, Epic), its
cardinality checked and its value converted; a malformed input is a 400 naming it. An unknown
input is handled as FHIR search handles an unknown search parameter: ignored and reported back
(``Checked.ignored``), or a 400 when the client asked for ``Prefer: handling=strict``.

The IG examples are not always well-formed FHIR, and real clients copy them: the Argonaut ones
send a value[x] as a one-element JSON array (``"valueString": ["Napa"]``), references as uri,
url or a bare id, and the IHE ones a Reference with only an ``identifier``. All of those are
read here; a logical (identifier-only) reference comes out as an ``IdentifierRef`` for the
operation to resolve against stored resources (``operations/logical.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from ..conformance_files import load
from ..errors import FhirError
from ..numbers import MAX_INT64, plain_int
from ..timeutil import parse_instant

ALIAS = "https://fhir-sched.org/fhir/StructureDefinition/parameter-alias"
# R5's OperationDefinition.parameter.allowedType, used in R4 as its cross-version extension:
# the further types a parameter accepts beyond ``type`` (Argonaut's uri references, Coverage).
ALLOWED_TYPE = ("http://hl7.org/fhir/5.0/StructureDefinition/"
                "extension-OperationDefinition.parameter.allowedType")
RESOURCE_TYPES = {"Resource", "Appointment", "Patient", "Bundle", "Coverage",
                  "CoverageEligibilityRequest"}
_REFERENCE_KEYS = ("valueReference", "valueString", "valueUri", "valueUrl", "valueId",
                   "valueCanonical")
_VALUE_KEYS = {
    "dateTime": ("valueDateTime", "valueInstant", "valueString"),
    "string": ("valueString", "valueCode", "valueToken", "valueUri", "valueCoding",
               "valueCodeableConcept"),
    "integer": ("valueInteger", "valuePositiveInt", "valueUnsignedInt", "valueString"),
    "Reference": _REFERENCE_KEYS,
    "uri": _REFERENCE_KEYS,
    "boolean": ("valueBoolean", "valueString"),
    "code": ("valueCode", "valueString"),
    "Identifier": ("valueIdentifier",),
    "Timing": ("valueTiming",),
}


@dataclass(frozen=True, slots=True)
class IdentifierRef:
    """A logical reference: ``Reference.identifier`` without ``Reference.reference`` (the IHE
    ITI-115 example names the practitioner this way). ``type`` is ``Reference.type``, if given."""

    system: str | None
    value: str
    type: str | None = None

    @property
    def token(self) -> str:
        """The identifier as a token search value."""
        return f"{self.system}|{self.value}" if self.system else self.value


@dataclass(frozen=True, slots=True)
class ParamDef:
    name: str
    aliases: tuple[str, ...]
    min: int
    max: int | None  # None = unbounded
    type: str
    allowed: tuple[str, ...] = ()  # further accepted types (allowedType)
    targets: tuple[str, ...] = ()  # resource types a Reference may point to (targetProfile)

    @property
    def types(self) -> tuple[str, ...]:
        return (self.type, *self.allowed)

    @property
    def takes_resource(self) -> bool:
        return any(t in RESOURCE_TYPES for t in self.types)

    @property
    def takes_reference(self) -> bool:
        return any(t in ("Reference", "uri") for t in self.types)


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


@dataclass(frozen=True, slots=True)
class Checked:
    """A call's inputs by canonical parameter name, and the unknown names it ignored."""

    values: dict[str, list[Any]]
    ignored: tuple[str, ...] = ()


_PROFILE_TYPES = {
    # IHE profiles a targetProfile may name, by the type they constrain
    "https://profiles.ihe.net/ITI/Scheduling/StructureDefinition/ihe-sched-appt": "Appointment",
}


def _target_type(profile: str) -> str:
    return _PROFILE_TYPES.get(profile) or profile.rsplit("/", 1)[-1]


@cache
def operation(def_id: str) -> OperationDef:
    d = load(f"OperationDefinition-{def_id}.json")
    params = []
    for p in d["parameter"]:
        if p["use"] != "in":
            continue
        exts = p.get("extension", [])
        aliases = tuple(e["valueString"] for e in exts if e["url"] == ALIAS)
        allowed = tuple(e["valueCode"] for e in exts if e["url"] == ALLOWED_TYPE)
        targets = tuple(dict.fromkeys(_target_type(t) for t in p.get("targetProfile", [])))
        params.append(ParamDef(p["name"], aliases, p["min"],
                               None if p["max"] == "*" else int(p["max"]), p.get("type", ""),
                               allowed, targets))
    return OperationDef(d["id"], d["code"], d["url"], tuple(params))


def _bad(name: str, msg: str) -> FhirError:
    return FhirError(400, "invalid", f"parameter {name!r}: {msg}", expression=[name])


def _reference(p: ParamDef, name: str, value: Any) -> str | IdentifierRef:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref:
            return ref
        ident = value.get("identifier")
        if ref is None and isinstance(ident, dict):
            system, id_value = ident.get("system"), ident.get("value")
            if not isinstance(id_value, str) or not id_value:
                raise _bad(name, "the Reference's identifier has no value")
            if system is not None and (not isinstance(system, str) or not system):
                raise _bad(name, "the Reference's identifier.system must be a non-empty uri")
            type_ = value.get("type")
            if type_ is not None and (not isinstance(type_, str) or (
                    p.targets and type_ not in p.targets)):
                raise _bad(name, f"Reference.type {type_!r} is not one of "
                           f"{', '.join(p.targets) or 'the accepted types'}")
            return IdentifierRef(system, id_value, type_)
        raise _bad(name, "the Reference has neither a reference nor an identifier")
    if isinstance(value, str) and value:
        return value
    raise _bad(name, "must be a reference such as Practitioner/123")


def _token(name: str, value: Any) -> str:
    if isinstance(value, dict) and "coding" in value:  # a CodeableConcept: its first coding
        codings = value.get("coding")
        if isinstance(codings, list) and codings and isinstance(codings[0], dict):
            value = codings[0]
        elif isinstance(value.get("text"), str) and value["text"]:
            return str(value["text"])
    if isinstance(value, dict) and "code" in value:  # a Coding given for a token
        system, code = value.get("system"), value.get("code")
        if not isinstance(code, str) or not code or (system is not None and (
                not isinstance(system, str) or not system)):
            raise _bad(name, "the Coding needs a code (and a non-empty system, if any)")
        return f"{system}|{code}" if system else code
    if not isinstance(value, str) or value == "":
        raise _bad(name, "must be a non-empty string")
    return value


def _convert(p: ParamDef, name: str, value: Any) -> Any:
    if isinstance(value, dict) and "resourceType" in value and p.takes_resource:
        wanted = [t for t in p.types if t in RESOURCE_TYPES]
        if "Resource" not in wanted and value["resourceType"] not in wanted:
            raise _bad(name, f"must be a {' or '.join(wanted)}, got {value['resourceType']}")
        return value
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
        number = plain_int(value) if isinstance(value, str) else None
        if number is not None and number <= MAX_INT64:
            return number
        raise _bad(name, "must be a non-negative integer")
    if p.type == "boolean":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise _bad(name, "must be true or false")
    if p.takes_reference:
        return _reference(p, name, value)
    if p.type in ("string", "code"):
        return _token(name, value)
    if p.type in ("Identifier", "Timing"):
        if not isinstance(value, dict):
            raise _bad(name, f"must be a {p.type}")
        return value
    if p.type in RESOURCE_TYPES:
        raise _bad(name, f"must be a {p.type} resource")
    return value


def _collect(op: OperationDef, pairs: list[tuple[str, Any]], strict: bool) -> Checked:
    out: dict[str, list[Any]] = {}
    ignored: list[str] = []
    for name, value in pairs:
        p = op.lookup(name)
        if p is None:
            if strict:
                known = ", ".join(q.name for q in op.params)
                raise _bad(name, f"${op.code} has no such parameter (known: {known}); it was "
                           "refused because the request asked for Prefer: handling=strict")
            ignored.append(name)
            continue
        out.setdefault(p.name, []).append(_convert(p, name, value))
    for p in op.params:
        got = len(out.get(p.name, []))
        if got < p.min:
            raise _bad(p.name, f"is required by ${op.code}")
        if p.max is not None and got > p.max:
            raise _bad(p.name, f"may appear at most {p.max} time(s)")
    return Checked(out, tuple(dict.fromkeys(ignored)))


def _identifier_token(name: str, raw: str) -> dict[str, str]:
    """``system|value`` or a bare ``value`` as an Identifier (``|value``: no system)."""
    system, bar, value = raw.partition("|")
    if not bar:
        system, value = "", raw
    if not value:
        raise _bad(name, "must be an identifier: system|value, or a value")
    return {"system": system, "value": value} if system else {"value": value}


def from_query(op: OperationDef, pairs: list[tuple[str, str]], strict: bool = False) -> Checked:
    expanded: list[tuple[str, Any]] = []
    for name, raw in pairs:
        p = op.lookup(name)
        if p is not None and p.type == "Identifier":
            # In a URL an Identifier is written as a token, as search writes one.
            expanded.append((name, _identifier_token(name, raw)))
            continue
        if p is not None and p.type in RESOURCE_TYPES | {"Timing"}:
            raise _bad(name, "is a complex value: POST a Parameters resource instead")
        if p is not None and p.max is None and "," in raw and p.type in ("string", "Reference"):
            expanded.extend((name, v) for v in raw.split(",") if v)
        else:
            expanded.append((name, raw))
    return _collect(op, expanded, strict)


def _direct_parameter(op: OperationDef, body: Any) -> ParamDef | None:
    """The parameter a resource POSTed as the whole body stands for: FHIR lets a client post
    the resource itself when the operation takes it as its one resource input, and the Argonaut
    examples post an Appointment to $hold and $book that way ("Appointment resource as request
    body"). Only when exactly one parameter takes that resource type."""
    if not isinstance(body, dict) or body.get("resourceType") in (None, "Parameters"):
        return None
    fits = [p for p in op.params if body["resourceType"] in p.types]
    return fits[0] if len(fits) == 1 else None


def from_parameters(op: OperationDef, body: Any, strict: bool = False,
                    extra: list[tuple[str, str]] | None = None) -> Checked:
    """A Parameters body; ``extra`` are query-string inputs a POST may carry too (``_count``,
    as the Argonaut IG writes ``POST [base]/Appointment/$find?_count=3``)."""
    pairs: list[tuple[str, Any]] = list(extra or [])
    direct = _direct_parameter(op, body)
    if direct is not None:
        return _collect(op, [*pairs, (direct.name, body)], strict)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", f"POST ${op.code} takes a Parameters resource")
    items = body.get("parameter") or []
    if not isinstance(items, list):
        raise FhirError(400, "invalid", "Parameters.parameter must be an array",
                        expression=["Parameters.parameter"])
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise FhirError(400, "invalid", f"Parameters.parameter[{n}] needs a name",
                            expression=[f"Parameters.parameter[{n}]"])
        name = item["name"]
        p = op.lookup(name)
        if p is None:
            pairs.append((name, None))  # unknown: _collect ignores or refuses it
            continue
        if "resource" in item:
            if not p.takes_resource:
                raise _bad(name, "takes a value[x], not a resource")
            pairs.append((name, item["resource"]))
            continue
        keys = [k for k in item if k.startswith("value")]
        if len(keys) != 1:
            raise _bad(name, "needs exactly one value[x] (or a resource)")
        allowed = tuple(dict.fromkeys(k for t in p.types for k in _VALUE_KEYS.get(t, ())))
        if allowed and keys[0] not in allowed:
            raise _bad(name, f"{keys[0]} is not accepted; use {' or '.join(allowed)}")
        value = item[keys[0]]
        if isinstance(value, list):
            # Argonaut examples: "valueString": ["Napa"]; each element counts as one value
            if not value or any(isinstance(v, list | dict) for v in value):
                raise _bad(name, f"{keys[0]} must be one value (or an array of primitives)")
            pairs.extend((name, v) for v in value)
        else:
            pairs.append((name, value))
    return _collect(op, pairs, strict)
