"""What an EHR says it has open when it asks for a launch id (SMART App Launch 2.2, "launch
context arrives with the access token"): the patient, the encounter and ``fhirContext``, the
other resources in view (for a scheduling app, typically the Appointment being rebooked or the
Schedule on screen).

The EHR is trusted to name what it has open, so the checks are of shape, not existence: an
encounter lives in the EHR, not here. Patient and Encounter have parameters of their own and
are refused inside ``fhirContext``, as the guide asks; each item is a relative ``reference``,
a ``canonical`` or an ``identifier``, with an optional ``type`` and ``role`` (an absolute URI;
``launch`` is the implied default and may not be spelt out).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_ITEMS = 16
MAX_TEXT = 1024
_ID = r"[A-Za-z0-9\-.]{1,64}"
_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_REFERENCE = re.compile(rf"([A-Z][A-Za-z]{{1,63}})/{_ID}")
_PATIENT = re.compile(rf"Patient/{_ID}")
_ENCOUNTER = re.compile(rf"Encounter/{_ID}")
_URI = re.compile(r"[a-z][a-z0-9+.\-]*:\S+", re.I)
_ITEM_KEYS = {"reference", "canonical", "identifier", "type", "role"}


class LaunchContextError(ValueError):
    """The body names a context we cannot hand to an app; the message says which part."""


@dataclass(frozen=True, slots=True)
class LaunchContext:
    patient: str | None = None  # "Patient/<id>"
    encounter: str | None = None  # "Encounter/<id>"
    fhir_context: list[dict[str, Any]] = field(default_factory=list)

    def doc(self) -> dict[str, Any]:
        return {"patient": self.patient, "encounter": self.encounter,
                "fhir_context": self.fhir_context}


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise LaunchContextError(f"{where} must be a non-empty string of at most {MAX_TEXT} "
                                 "characters")
    return value


def _item(n: int, raw: Any) -> dict[str, Any]:
    where = f"fhirContext[{n}]"
    if not isinstance(raw, dict):
        raise LaunchContextError(f"{where} must be an object")
    unknown = set(raw) - _ITEM_KEYS
    if unknown:
        raise LaunchContextError(f"{where} has unknown member(s) {', '.join(sorted(unknown))}")
    given = [k for k in ("reference", "canonical", "identifier") if k in raw]
    if len(given) != 1:
        raise LaunchContextError(f"{where} needs exactly one of reference, canonical and "
                                 "identifier")
    item: dict[str, Any] = {}
    if "reference" in raw:
        ref = _text(raw["reference"], f"{where}.reference")
        m = _REFERENCE.fullmatch(ref)
        if m is None:
            raise LaunchContextError(f"{where}.reference must be a relative reference "
                                     "Type/id")
        if m[1] in ("Patient", "Encounter"):
            raise LaunchContextError(f"{where}: a {m[1]} goes in the {m[1].lower()} member, "
                                     "not in fhirContext")
        item["reference"] = ref
    if "canonical" in raw:
        canonical = _text(raw["canonical"], f"{where}.canonical")
        if not _URI.fullmatch(canonical):
            raise LaunchContextError(f"{where}.canonical must be an absolute URI")
        item["canonical"] = canonical
    if "identifier" in raw:
        ident = raw["identifier"]
        if not isinstance(ident, dict) or "value" not in ident or set(ident) - {
                "system", "value"}:
            raise LaunchContextError(f"{where}.identifier must be {{\"system\", \"value\"}}")
        item["identifier"] = {k: _text(v, f"{where}.identifier.{k}") for k, v in ident.items()}
    if "type" in raw:
        type_ = _text(raw["type"], f"{where}.type")
        if not _TYPE.fullmatch(type_):
            raise LaunchContextError(f"{where}.type must be a FHIR resource type")
        item["type"] = type_
    if "role" in raw:
        role = _text(raw["role"], f"{where}.role")
        if role == "launch" or not _URI.fullmatch(role):
            raise LaunchContextError(f"{where}.role must be an absolute URI (leave it out for "
                                     "the launch role)")
        item["role"] = role
    return item


def parse(body: Any) -> LaunchContext:
    """The launch endpoint's JSON body, checked; at least one of its members is needed."""
    if not isinstance(body, dict):
        raise LaunchContextError("the body must be a JSON object: {\"patient\": "
                                 "\"Patient/<id>\", \"encounter\": ..., \"fhirContext\": [...]}")
    unknown = set(body) - {"patient", "encounter", "fhirContext"}
    if unknown:
        raise LaunchContextError(f"unknown member(s) {', '.join(sorted(unknown))}")
    patient = encounter = None
    if body.get("patient") is not None:
        patient = _text(body["patient"], "patient")
        if not _PATIENT.fullmatch(patient):
            raise LaunchContextError("patient must be \"Patient/<id>\"")
    if body.get("encounter") is not None:
        encounter = _text(body["encounter"], "encounter")
        if not _ENCOUNTER.fullmatch(encounter):
            raise LaunchContextError("encounter must be \"Encounter/<id>\"")
    items = body.get("fhirContext") or []
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        raise LaunchContextError(f"fhirContext must be an array of at most {MAX_ITEMS} items")
    context = LaunchContext(patient, encounter, [_item(n, i) for n, i in enumerate(items)])
    if not (patient or encounter or context.fhir_context):
        raise LaunchContextError("name what the EHR has open: patient, encounter or "
                                 "fhirContext")
    return context
