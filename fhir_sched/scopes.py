"""SMART scopes, v1 and v2, parsed once per token and matched per interaction.

Grammar (SMART App Launch 2.2, scopes-and-launch-context): ``level/Type.letters[?query]`` where
level is ``patient``, ``user`` or ``system``, Type a resource type or ``*``, and letters a
subset of ``cruds`` in that order. v1 scopes (``.read``, ``.write``, ``.*``) are read as their
v2 equivalents (``rs``, ``cud``, ``cruds``). Anything else (``launch``, ``openid``,
``fhirUser``, ``offline_access``...) grants no resource access and is kept as given.

What each letter covers (the spec's table): ``c`` create; ``r`` read, vread and an instance's
history; ``u`` update and patch; ``d`` delete; ``s`` search and type or system history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

LEVELS = ("patient", "user", "system")
_V2 = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(c?r?u?d?s?)(?:\?(.+))?$")
_V1 = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*)$")
_V1_LETTERS = {"read": "rs", "write": "cud", "*": "cruds"}


class ScopeError(ValueError):
    """A scope string that looks like a resource scope but is not one."""


@dataclass(frozen=True, slots=True)
class ResourceScope:
    level: str  # patient | user | system
    type: str  # a resource type, or "*"
    letters: frozenset[str]
    # ``?param=value`` restrictions (v2 granular scopes), each (name, value)
    where: tuple[tuple[str, str], ...] = ()
    text: str = ""

    def covers(self, type_: str, letter: str) -> bool:
        return letter in self.letters and self.type in ("*", type_)

    def within(self, other: ResourceScope) -> bool:
        """Whether everything this scope allows, ``other`` allows too (a client registered
        for ``other`` may be granted this)."""
        return (other.level == self.level and other.type in ("*", self.type)
                and self.letters <= other.letters
                and (not other.where or set(other.where) <= set(self.where)))


def parse_scope(text: str) -> ResourceScope | None:
    """The resource scope ``text`` names, None for a non-resource scope (``launch``,
    ``openid``...); ScopeError for a resource scope with bad letters or query."""
    if "/" not in text or text.split("/", 1)[0] not in LEVELS:
        return None
    if m := _V1.match(text):
        return ResourceScope(m[1], m[2], frozenset(_V1_LETTERS[m[3]]), (), text)
    m = _V2.match(text)
    if m is None or not m[3]:
        raise ScopeError(f"{text!r} is not a SMART scope: expected level/Type.letters with the "
                         "letters a subset of cruds in that order (or .read, .write, .*)")
    where: tuple[tuple[str, str], ...] = ()
    if m[4]:
        pairs = parse_qsl(m[4], keep_blank_values=True, strict_parsing=False)
        if not pairs or any(not k or not v for k, v in pairs):
            raise ScopeError(f"{text!r}: the restriction after '?' must be param=value pairs")
        where = tuple(pairs)
    return ResourceScope(m[1], m[2], frozenset(m[3]), where, text)


@dataclass(frozen=True, slots=True)
class Grant:
    """The scopes of one token, parsed: the resource scopes and the rest, with the patient in
    context (the token's ``patient``), which ``patient/`` scopes are confined to."""

    resource: tuple[ResourceScope, ...]
    other: frozenset[str]
    patient: str | None = None
    # Every resource scope is ``patient/``: the caller is confined to one compartment. Asked
    # on every request, so worked out once (a grant never changes).
    patient_only: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "patient_only", bool(self.resource) and all(
            s.level == "patient" for s in self.resource))

    @classmethod
    def parse(cls, scopes: str | frozenset[str] | list[str], patient: str | None = None) -> Grant:
        items = scopes.split() if isinstance(scopes, str) else list(scopes)
        resource: list[ResourceScope] = []
        other: set[str] = set()
        for s in items:
            parsed = parse_scope(s)
            if parsed is None:
                other.add(s)
            else:
                resource.append(parsed)
        return cls(tuple(resource), frozenset(other), patient)

    def matching(self, type_: str, letter: str) -> list[ResourceScope]:
        return [s for s in self.resource if s.covers(type_, letter)]

    @property
    def texts(self) -> frozenset[str]:
        return frozenset(s.text for s in self.resource) | self.other


def grantable(requested: str, registered: str) -> list[str]:
    """The requested scopes a client registered for ``registered`` may be given, in request
    order: each resource scope within a registered one, each other scope registered as is.
    Raises ScopeError for a malformed requested scope."""
    reg = Grant.parse(registered)
    out: list[str] = []
    for text in requested.split():
        parsed = parse_scope(text)
        if parsed is None:
            if text in reg.other and text not in out:
                out.append(text)
        elif any(parsed.within(r) for r in reg.resource) and text not in out:
            out.append(text)
    return out
