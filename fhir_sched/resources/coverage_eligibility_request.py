"""CoverageEligibilityRequest: required status and purpose bindings (fm-status,
eligibilityrequest-purpose). Submitted through ``$submit``, or made by the booking guard's
eligibility check (``service/eligibility.py``)."""

BINDINGS = {
    "status": ("active", "cancelled", "draft", "entered-in-error"),
    "purpose": ("auth-requirements", "benefits", "discovery", "validation"),
}
