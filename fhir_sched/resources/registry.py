"""Which types this server hosts, and the per-type rule modules that guard them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel

from ..writes import WriteRule

Issue = tuple[str, str]  # (element path, message)
Rules = Callable[[dict[str, Any]], Iterable[Issue]]

# Module name per hosted type; each module declares BINDINGS (required code bindings that the
# fhir.resources models do not enforce), optionally rules(resource) for content invariants
# (checked before any transaction opens) and WRITE_RULE, the rule the write pipeline runs inside
# the atomic unit of every write of that type (Appointment: the booking guard).
_MODULES = {
    "Appointment": "appointment",
    "AppointmentResponse": "appointment_response",
    "Communication": "communication",
    "CommunicationRequest": "communication_request",
    "Coverage": "coverage",
    "CoverageEligibilityRequest": "coverage_eligibility_request",
    "CoverageEligibilityResponse": "coverage_eligibility_response",
    "Endpoint": "endpoint",
    "HealthcareService": "healthcare_service",
    "Location": "location",
    "Organization": "organization",
    "Patient": "patient",
    "Practitioner": "practitioner",
    "PractitionerRole": "practitioner_role",
    "Provenance": "provenance",
    "Schedule": "schedule",
    "ServiceRequest": "service_request",
    "Slot": "slot",
    "Subscription": "subscription",
}
HOSTED_TYPES: tuple[str, ...] = tuple(sorted(_MODULES))


@dataclass(frozen=True, slots=True)
class ResourceType:
    name: str
    model: type[BaseModel]
    bindings: dict[str, frozenset[str]]
    rules: Rules | None
    write_rule: WriteRule | None


def is_hosted(name: str) -> bool:
    return name in _MODULES


@cache
def get_type(name: str) -> ResourceType:
    module = importlib.import_module(f"{__package__}.{_MODULES[name]}")
    bindings = {path: frozenset(codes) for path, codes in getattr(module, "BINDINGS", {}).items()}
    return ResourceType(name, get_fhir_model_class(name), bindings, getattr(module, "rules", None),
                        getattr(module, "WRITE_RULE", None))
