"""CoverageEligibilityResponse: required status, purpose and outcome bindings (fm-status,
eligibilityresponse-purpose, remittance-outcome).

Only the server writes these (``SERVER_MADE`` in ``service/resources.py``): each one is the
answer of the eligibility checker, and the booking guard trusts a stored one as that answer, so
a client must not be able to store a "yes" of its own."""

BINDINGS = {
    "status": ("active", "cancelled", "draft", "entered-in-error"),
    "purpose": ("auth-requirements", "benefits", "discovery", "validation"),
    "outcome": ("queued", "complete", "error", "partial"),
}
