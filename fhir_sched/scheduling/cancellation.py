"""Cancellation reasons: the codes of R4's appointment-cancellation-reason code system.

The binding on ``Appointment.cancelationReason`` is an example binding, so any code system
may be used; a coding that claims this one must use one of its codes, or the clinic's
cancellation figures would count reasons nobody can read back.
"""

from __future__ import annotations

from typing import Any

from ..errors import FhirError

SYSTEM = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"
CODES = frozenset({
    "pat", "pat-cpp", "pat-crs", "pat-dec", "pat-fb", "pat-lt", "pat-mt", "pat-mv", "pat-preg",
    "pat-swl", "pat-ucp",
    "prov", "prov-dch", "prov-edu", "prov-hosp", "prov-labs", "prov-mri", "prov-onc",
    "prov-pers",
    "maint", "meds-inc",
    "other", "oth-cms", "oth-err", "oth-fin", "oth-int", "oth-iv", "oth-mu", "oth-oerr",
    "oth-room", "oth-swie", "oth-weath",
})


def check_reason(appointment: dict[str, Any]) -> None:
    reason = appointment.get("cancelationReason")
    codings = reason.get("coding") if isinstance(reason, dict) else None
    for n, coding in enumerate(codings if isinstance(codings, list) else []):
        if (isinstance(coding, dict) and coding.get("system") == SYSTEM
                and coding.get("code") not in CODES):
            raise FhirError(422, "code-invalid", f"{coding.get('code')!r} is not a code of "
                            f"{SYSTEM} (R4 appointment-cancellation-reason)",
                            expression=[f"Appointment.cancelationReason.coding[{n}].code"])
