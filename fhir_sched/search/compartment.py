"""The Patient compartment: which references put a resource of each type in a patient's
compartment (from the R4 CompartmentDefinition for Patient, restricted to hosted types).

Compartment searches and, later, SMART ``patient/`` scopes both filter through here, so the two
can never disagree about what a patient may see.
"""

from __future__ import annotations

from typing import Any

from ..errors import FhirError
from ..query import AnyOf, Cond, Entry, Expr, Not
from .extract import reference_targets

# R4 CompartmentDefinition "patient": resource type -> search parameters linking it to Patient.
PATIENT_COMPARTMENT: dict[str, tuple[str, ...]] = {
    "Appointment": ("actor",),
    "AppointmentResponse": ("actor",),
    "Communication": ("subject", "sender", "recipient"),
    "CommunicationRequest": ("subject", "sender", "recipient", "requester"),
    "Coverage": ("policy-holder", "subscriber", "beneficiary", "payor"),
    "CoverageEligibilityRequest": ("patient",),
    "CoverageEligibilityResponse": ("patient",),
    "Patient": ("link",),
    "Provenance": ("patient",),
    "Schedule": ("actor",),
    "ServiceRequest": ("subject", "performer"),
}


def compartment_filter(type_: str, patient_ref: str) -> tuple[Expr, ...]:
    """The condition "in the compartment of ``patient_ref``" for a search on ``type_``.

    A single linking parameter stays a plain Entry so that stores can drive the search from
    their reference index instead of testing every resource of the type.
    """
    if type_ == "Patient":
        pid = patient_ref.split("/", 1)[1]
        return (AnyOf((Entry("_id", (Cond("val", "=", pid),)),
                       Entry("link", (Cond("val", "=", patient_ref),)))),)
    params = PATIENT_COMPARTMENT.get(type_)
    if not params:
        raise FhirError(404, "not-supported", f"{type_} is not in the Patient compartment")
    entries = tuple(Entry(p, (Cond("val", "=", patient_ref),), unique=True) for p in params)
    return (entries[0] if len(entries) == 1 else AnyOf(entries),)


def in_compartment(type_: str, resource: dict[str, Any], patient_ref: str) -> bool:
    """Whether ``resource`` is in the compartment of ``patient_ref`` (``Patient/<id>``): the same
    linking parameters as ``compartment_filter``, read from the resource itself."""
    if type_ == "Patient" and f"Patient/{resource.get('id')}" == patient_ref:
        return True
    params = PATIENT_COMPARTMENT.get(type_, ())
    return any(patient_ref in reference_targets(type_, p, resource) for p in params)


def in_some_compartment(type_: str, resource: dict[str, Any]) -> bool:
    """Whether ``resource`` is in any patient's compartment (a Schedule of a Patient): what
    a caller bound to no patient, the public view, must never be shown."""
    params = PATIENT_COMPARTMENT.get(type_, ())
    if type_ == "Patient":
        return True
    return any(ref.startswith("Patient/") for p in params
               for ref in reference_targets(type_, p, resource))


def outside_compartments(type_: str) -> tuple[Expr, ...]:
    """The condition "in no patient's compartment" for a search on ``type_`` (none for a type
    outside the compartment): put in the query itself, so counts and pages are right."""
    params = PATIENT_COMPARTMENT.get(type_)
    if not params:
        return ()
    entries = tuple(Entry(p, (Cond("sys", "=", "Patient"),)) for p in params)
    return (Not(entries[0] if len(entries) == 1 else AnyOf(entries)),)
