"""The one request context every interaction carries, whatever door it came in by.

REST handlers, operations and (later) the MLLP listener build one of these and pass it to the
service layer; authorization, audit and compartment filtering hang off it, so adding SMART
enforcement changes how a context is built, not the handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from .ids import unique_id
from .scopes import Grant

# The doors a change can come in by; recorded on every change row.
Door = Literal["rest", "operation", "mllp", "system", "auth"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str = field(default_factory=unique_id)
    # Who is calling: a SMART client id, a user, an MLLP peer; "anonymous" until auth exists.
    subject: str = "anonymous"
    client_id: str | None = None
    # The token's scopes, parsed; None means no restrictions (auth off, or the server itself).
    grant: Grant | None = None
    # Patient compartment the caller is confined to (a token with patient/ scopes only), if any.
    patient: str | None = None
    door: Door = "rest"
    base_url: str = ""
    # A request without a token let in by the public view (auth on, FHIR_SCHED_PUBLIC_VIEW):
    # the authorization layer lets it read the clinic directory and ask $find for time, with
    # no patient, and nothing else (``service.authorization.PUBLIC_TYPES``).
    public: bool = False
    # Callers allowed to book past capacity (front desk override), recorded on the Appointment.
    may_overbook: bool = False
    # The caller is a calendar of record (the server itself, an EHR feed that owns the
    # calendar): what it says happened is recorded even when it breaks a booking rule, still
    # takes its time, and is flagged for staff instead of refused.
    of_record: bool = False
    # Answers from outside services that this request's writes needed (a payer's eligibility
    # answer per Coverage), gathered outside the atomic unit and kept across its reruns: a
    # unit cannot wait on another server while it holds the store (``scheduling/eligibility``).
    consulted: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def system(cls, job: str) -> RequestContext:
        """The server acting on its own behalf (sweeper, demo loader, import): ``job`` names
        which part, as the subject of what it writes."""
        return cls(subject=f"system/{job}", door="system", may_overbook=True, of_record=True)

    @classmethod
    def anonymous(cls, *, base_url: str, request_id: str | None = None) -> RequestContext:
        """The context of a request the public view lets in without a token: no grant, no
        patient, read-only on the directory (the policy decides from ``public``)."""
        if request_id:
            return cls(request_id=request_id, subject="anonymous", base_url=base_url,
                       public=True)
        return cls(subject="anonymous", base_url=base_url, public=True)

    def through(self, door: Door) -> RequestContext:
        """The same caller, entering by another door (a REST request running an operation)."""
        return self if door == self.door else replace(self, door=door)
