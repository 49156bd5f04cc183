"""The one authorization layer: every interaction of every door asks it, in the service.

The service calls ``Authorizer.check`` for each read, search (and every type a chain, ``_has``,
``_include`` or ``_revinclude`` reaches), history, batch, transaction and entry, operation and
write, given the caller's RequestContext, and with the resource in hand where the decision needs
it (compartment membership). Writes are checked once, in the write pipeline, so a booking's
Patient and a transaction entry are checked exactly like a plain PUT. Results are filtered
through ``visible``, so an included resource the caller may not read is left out.

``OpenPolicy`` is the default until SMART plugs in its scope policy: it allows everything,
except that a context confined to one patient (``ctx.patient``) sees and writes only that
patient's compartment, and a public context (``ctx.public``: a request without a token let in
by the public view) only reads and searches ``PUBLIC_TYPES`` and asks ``$find``. The SMART
policy hands both to it, as it does every context without a grant.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from ..context import RequestContext
from ..errors import FhirError
from ..search.compartment import PATIENT_COMPARTMENT, in_compartment, in_some_compartment

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
# What a public context may read: the clinic's directory, which a booking widget shows before
# anyone signs in (services and their visit types, places, people, calendars). A Schedule of
# a patient is in that patient's compartment and never shown (``public_visible``). Slot is
# left out: $find says what is free, and which times are busy is the clinic's business.
PUBLIC_TYPES = frozenset({"HealthcareService", "Location", "Organization", "Practitioner",
                          "PractitionerRole", "Schedule"})
PUBLIC_READS = frozenset({Interaction.READ, Interaction.SEARCH})
PUBLIC_OPERATIONS = frozenset({("Appointment", "find")})


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


def check_public(interaction: Interaction, type_: str | None, id_: str | None = None, *,
                 resource: Json | None = None, operation: str | None = None) -> None:
    """What a public context may do: read and search the directory, and ``$find``; no write,
    no history, no batch, nothing of a patient. The gate lets only such requests in without a
    token; this is the same rule where the service asks, so an include, a chain or a
    ``_has`` that reaches further is refused (or left out) like any other request's."""
    if interaction is Interaction.OPERATION and (type_, operation) in PUBLIC_OPERATIONS:
        return
    if interaction not in PUBLIC_READS or type_ not in PUBLIC_TYPES:
        what = interaction.value + (f" ${operation}" if operation else "")
        directory = ", ".join(sorted(PUBLIC_TYPES))
        raise forbidden(f"without a token only the clinic directory ({directory}) may be read "
                        f"and Appointment/$find asked; {what} on {type_ or 'the server'} needs "
                        "a bearer token")
    if resource is not None and not public_visible(type_, resource):
        raise forbidden(f"{type_}/{id_ or resource.get('id')} is in a patient's compartment")


def public_visible(type_: str, resource: Json) -> bool:
    return type_ in PUBLIC_TYPES and not in_some_compartment(type_, resource)


class OpenPolicy:
    """Allow all, but confine a patient-bound context to its compartment and a public one to
    the directory."""

    def check(self, ctx: RequestContext, interaction: Interaction, type_: str | None,
              id_: str | None = None, *, resource: Json | None = None,
              operation: str | None = None) -> None:
        if ctx.public:
            check_public(interaction, type_, id_, resource=resource, operation=operation)
            return
        if ctx.patient is None or type_ is None:
            return
        if interaction in WRITES and type_ not in PATIENT_COMPARTMENT:
            raise forbidden(f"a caller confined to {ctx.patient} may not write {type_}")
        if resource is not None and not self.visible(ctx, type_, resource):
            raise forbidden(f"{type_}/{id_ or resource.get('id')} is outside the compartment "
                            f"of {ctx.patient}")

    def needs_content(self, ctx: RequestContext, type_: str) -> bool:
        return ctx.patient is not None or ctx.public

    def visible(self, ctx: RequestContext, type_: str, resource: Json) -> bool:
        if ctx.public:
            return public_visible(type_, resource)
        if ctx.patient is None or type_ not in PATIENT_COMPARTMENT:
            return True
        return in_compartment(type_, resource, ctx.patient)
