"""The one authorization layer: every interaction of every door asks it, in the service.

The service calls ``Authorizer.check`` for each read, search (and every type a chain, ``_has``,
``_include`` or ``_revinclude`` reaches), history, batch, transaction and entry, operation and
write, given the caller's RequestContext, and with the resource in hand where the decision needs
it (compartment membership). Writes are checked once, in the write pipeline, so a booking's
Patient and a transaction entry are checked exactly like a plain PUT. Results are filtered
through ``visible``, so an included resource the caller may not read is left out.

``OpenPolicy`` is the default until SMART plugs in its scope policy: it allows everything,
except that a context confined to one patient (``ctx.patient``) sees and writes only that
patient's compartment.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from ..context import RequestContext
from ..errors import FhirError
from ..search.compartment import PATIENT_COMPARTMENT, in_compartment

Json = dict[str, Any]


class Interaction(StrEnum):
    READ = "read"
    VREAD = "vread"
    SEARCH = "search-type"
    HISTORY = "history"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    BATCH = "batch"
    TRANSACTION = "transaction"
    OPERATION = "operation"


WRITES = frozenset({Interaction.CREATE, Interaction.UPDATE, Interaction.DELETE})


class Authorizer(Protocol):
    def check(self, ctx: RequestContext, interaction: Interaction, type_: str | None,
              id_: str | None = None, *, resource: Json | None = None,
              operation: str | None = None) -> None:
        """Raise FhirError(403) when ``ctx`` may not perform ``interaction`` on the target.
        ``resource`` is the content at stake (the new body of a write, the stored one of a
        read or delete) when the caller has it."""
        ...

    def needs_content(self, ctx: RequestContext, type_: str) -> bool:
        """Whether decisions for ``ctx`` on ``type_`` depend on a resource's content, so that
        results must be passed through ``visible`` (the fast path skips it otherwise)."""
        ...

    def visible(self, ctx: RequestContext, type_: str, resource: Json) -> bool:
        """Whether ``ctx`` may see ``resource`` in a result (search match, include, history)."""
        ...


def forbidden(msg: str) -> FhirError:
    return FhirError(403, "forbidden", msg)


class OpenPolicy:
    """Allow all, but confine a patient-bound context to its compartment."""

    def check(self, ctx: RequestContext, interaction: Interaction, type_: str | None,
              id_: str | None = None, *, resource: Json | None = None,
              operation: str | None = None) -> None:
        if ctx.patient is None or type_ is None:
            return
        if interaction in WRITES and type_ not in PATIENT_COMPARTMENT:
            raise forbidden(f"a caller confined to {ctx.patient} may not write {type_}")
        if resource is not None and not self.visible(ctx, type_, resource):
            raise forbidden(f"{type_}/{id_ or resource.get('id')} is outside the compartment "
                            f"of {ctx.patient}")

    def needs_content(self, ctx: RequestContext, type_: str) -> bool:
        return ctx.patient is not None

    def visible(self, ctx: RequestContext, type_: str, resource: Json) -> bool:
        if ctx.patient is None or type_ not in PATIENT_COMPARTMENT:
            return True
        return in_compartment(type_, resource, ctx.patient)
