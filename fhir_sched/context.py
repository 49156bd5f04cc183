"""The one request context every interaction carries, whatever door it came in by.

REST handlers, operations and (later) the MLLP listener build one of these and pass it to the
service layer; authorization, audit and compartment filtering hang off it, so adding SMART
enforcement changes how a context is built, not the handlers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Who is calling: a SMART client id, a user, an MLLP peer; "anonymous" until auth exists.
    subject: str = "anonymous"
    client_id: str | None = None
    # Granted scopes (SMART v2 syntax); None means no restrictions (no auth configured).
    scopes: frozenset[str] | None = None
    # Patient compartment the caller is confined to (SMART patient launch), if any.
    patient: str | None = None
    door: str = "rest"
    base_url: str = ""
    # Callers allowed to book past capacity (front desk override), recorded on the Appointment.
    may_overbook: bool = False

    @classmethod
    def system(cls, door: str = "internal") -> RequestContext:
        return cls(subject="system", door=door, may_overbook=True)
