"""What a storage error means to a client: the one translation from ``storage.errors`` to FHIR.

Storage raises its own errors in no door's terms; every door (REST, operations, HL7 v2) renders
the ``FhirError`` this returns, so a database that is down, a query the database refuses and a
cursor that does not fit mean the same thing whichever door the request came in by.
"""

from __future__ import annotations

from ..errors import FhirError
from ..storage.errors import (
    InvalidCursor,
    QueryTimedOut,
    QueryTooComplex,
    StoreError,
    StoreUnavailable,
    VersionConflict,
)

# Seconds a client is asked to wait before retrying when the database is unavailable.
RETRY_AFTER_SECONDS = 2


def as_fhir_error(exc: StoreError) -> FhirError:
    """The client-facing error for ``exc``: 503 (retry) when the database cannot serve now, 400
    when the request asked for what the database will not do, 409 for a lost version race."""
    if isinstance(exc, StoreUnavailable):
        return FhirError(503, "transient", "the database is unavailable; retry shortly",
                         headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, QueryTooComplex):
        return FhirError(400, "too-costly", f"the search is too costly to run ({exc}); narrow it "
                         "with more specific criteria or fewer values")
    if isinstance(exc, QueryTimedOut):
        return FhirError(400, "too-costly", f"the search ran past its time budget and was "
                         f"stopped ({exc}; FHIR_SCHED_SEARCH_MAX_MS); narrow it with more "
                         "specific criteria, a date range or fewer _include")
    if isinstance(exc, InvalidCursor):
        return FhirError(400, "invalid", f"{exc}; start the search again", expression=["_page"])
    if isinstance(exc, VersionConflict):
        return FhirError(409, "conflict", f"the resource changed meanwhile ({exc}); read it "
                         "again and retry")
    return FhirError(500, "exception", f"storage error: {type(exc).__name__}")
