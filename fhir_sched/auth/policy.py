"""The SMART scope policy: the Authorizer the service asks when a request carries a token.

A context without a grant (auth off, the MLLP door, the server's own jobs) keeps the open policy.
With a grant, an interaction needs a resource scope whose letter covers it (see ``scopes``).
Then the content must fit at least one of those scopes:

- a ``user/`` or ``system/`` scope without restrictions admits anything of its type;
- a ``patient/`` scope admits what is in the token patient's compartment. For a type outside
  the compartment (Practitioner, Location, Schedule, Slot...) it admits reads and searches but
  never writes; a Subscription, outside the compartment but about appointments, is read only
  when it is confined to the token's patient (filtered ``Appointment?patient=`` them), since
  its filter, endpoint, status and events tell whose visits it reports;
- a ``?param=value`` restriction admits what the search parameter would match.

Results are filtered the same way (``visible``), so a search, an include or a history entry
shows nothing the same token could not read by id.
"""

from __future__ import annotations

from typing import Any

from ..context import RequestContext
from ..query import IndexEntry
from ..resources.subscription import confined_to
from ..scopes import Grant, ResourceScope
from ..search.compartment import PATIENT_COMPARTMENT, in_compartment
from ..search.extract import extract
from ..search.params import params_for
from ..service.authorization import Interaction, OpenPolicy, forbidden

Json = dict[str, Any]

_LETTER = {
    Interaction.READ: "r", Interaction.VREAD: "r", Interaction.SEARCH: "s",
    Interaction.CREATE: "c", Interaction.UPDATE: "u", Interaction.DELETE: "d",
}
# $find searches for open time; $hold and $book create (or move) an Appointment.
_OPERATION_LETTER = {"find": "s", "hold": "c", "book": "c", "submit": "c"}
_READS = frozenset("rs")


def letter_for(interaction: Interaction, id_: str | None, operation: str | None) -> str | None:
    """The scope letter an interaction needs (None: checked per entry, as batch bundles are)."""
    if interaction is Interaction.HISTORY:
        return "r" if id_ is not None else "s"
    if interaction is Interaction.OPERATION:
        return _OPERATION_LETTER.get(operation or "", "r")
    return _LETTER.get(interaction)


def _matches(type_: str, resource: Json, where: tuple[tuple[str, str], ...],
             entries: list[IndexEntry] | None = None) -> bool:
    """Whether ``resource`` matches every ``param=value`` of a granular scope, as a search on
    those parameters would (token ``system|code`` or ``code``, reference, string prefix)."""
    entries = entries if entries is not None else extract(type_, resource)
    params = params_for(type_)
    for name, value in where:
        sp = params.get(name)
        if sp is None:
            return False
        found = [e for e in entries if e.param == name]
        if sp.type == "token":
            if "|" in value:
                system, _, code = value.partition("|")
                ok = any((e.sys or "") == system and (not code or e.val == code) for e in found)
            else:
                ok = any(e.val == value for e in found)
        elif sp.type == "string":
            ok = any((e.val or "").startswith(value.casefold()) for e in found)
        else:
            ok = any(e.val == value for e in found)
        if not ok:
            return False
    return True


class SmartPolicy:
    """SMART scopes on top of the open policy's compartment rule."""

    def __init__(self) -> None:
        self._open = OpenPolicy()

    def check(self, ctx: RequestContext, interaction: Interaction, type_: str | None,
              id_: str | None = None, *, resource: Json | None = None,
              operation: str | None = None) -> None:
        grant = ctx.grant
        if grant is None:
            self._open.check(ctx, interaction, type_, id_, resource=resource,
                             operation=operation)
            return
        letter = letter_for(interaction, id_, operation)
        if letter is None:  # a batch or transaction: each entry is checked on its own
            if not grant.resource:
                raise forbidden("the token grants no resource scopes")
            return
        target = type_ or "*"
        scopes = [s for s in grant.resource if s.covers(target, letter)
                  and (type_ is not None or s.type == "*")]
        if not scopes:
            what = f"{interaction.value}" + (f" ${operation}" if operation else "")
            raise forbidden(f"the token's scopes do not allow {what} on {target} (a scope such "
                            f"as user/{target}.{letter} would)")
        if resource is not None and type_ is not None and not any(
                self._admits(grant, s, type_, resource, letter) for s in scopes):
            raise forbidden(f"{type_}/{id_ or resource.get('id')} is outside what the token's "
                            f"scopes allow ({' '.join(s.text for s in scopes)})")

    def _admits(self, grant: Grant, scope: ResourceScope, type_: str, resource: Json,
                letter: str) -> bool:
        if scope.level == "patient":
            if type_ in PATIENT_COMPARTMENT:
                if grant.patient is None or not in_compartment(type_, resource, grant.patient):
                    return False
            elif type_ == "Subscription" and letter in _READS:
                if grant.patient is None or not confined_to(resource, grant.patient):
                    return False
            elif letter not in _READS:
                return False
        return not scope.where or _matches(type_, resource, scope.where)

    def needs_content(self, ctx: RequestContext, type_: str) -> bool:
        grant = ctx.grant
        if grant is None:
            return self._open.needs_content(ctx, type_)
        return any((s.level == "patient" and (type_ in PATIENT_COMPARTMENT
                                              or type_ == "Subscription")) or s.where
                   for s in grant.resource if s.type in ("*", type_))

    def visible(self, ctx: RequestContext, type_: str, resource: Json) -> bool:
        grant = ctx.grant
        if grant is None:
            return self._open.visible(ctx, type_, resource)
        return any(self._admits(grant, s, type_, resource, letter)
                   for letter in "rs" for s in grant.resource if s.covers(type_, letter))
