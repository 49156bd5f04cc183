"""How the resources an appointment takes travel on it, within the IHE Appointment profile.

IHE ITI Scheduling's ``ihe-sched-appt`` profile requires ``participant.actor`` (1..1) and limits
it to Location, Patient, Practitioner, PractitionerRole and HealthcareService. A visit type may
also need a Device (an ultrasound machine), whose time is claimed like anyone's; putting it in
``participant`` would make the Appointment fail the profile. So a device travels in the
``device-participant`` extension on the Appointment (declared in ``conformance/``; the profile's
extensions are open), with its ``required`` code; its status follows the appointment's.

Readers must not care which way an actor came: a plain REST client may still send a Device
participant, as base R4 allows. ``resource_actors`` reads both, and is what the booking guard
claims time for.
"""

from __future__ import annotations

from typing import Any

DEVICE_PARTICIPANT = "https://fhir-sched.org/fhir/StructureDefinition/device-participant"

# ihe-sched-appt: Appointment.participant.actor targetProfile
PROFILE_ACTOR_TYPES = frozenset(
    {"Location", "Patient", "Practitioner", "PractitionerRole", "HealthcareService"})
# Participant actor types whose time is a bookable resource, with a capacity. A patient's time
# is claimed too, with room for one appointment at a time (``guard.patient_actors``).
RESOURCE_TYPES = frozenset(
    {"Practitioner", "PractitionerRole", "Location", "Device", "HealthcareService", "RelatedPerson"}
)


def _type_of(reference: str) -> str:
    return reference.split("/", 1)[0]


def device_extension(device: str, required: str = "required") -> dict[str, Any]:
    """The ``device-participant`` extension naming ``device`` (e.g. ``Device/us-1``)."""
    return {"url": DEVICE_PARTICIPANT, "extension": [
        {"url": "actor", "valueReference": {"reference": device}},
        {"url": "required", "valueCode": required},
    ]}


def with_actor(appointment: dict[str, Any], actor: str, *, required: str = "required",
               status: str = "needs-action") -> dict[str, Any]:
    """A copy of ``appointment`` with ``actor`` added where the profile lets it travel: a
    participant for the profile's actor types, the device-participant extension otherwise."""
    out = dict(appointment)
    if _type_of(actor) in PROFILE_ACTOR_TYPES:
        out["participant"] = [*(appointment.get("participant") or []),
                              {"actor": {"reference": actor}, "required": required,
                               "status": status}]
    else:
        out["extension"] = [*(appointment.get("extension") or []),
                            device_extension(actor, required)]
    return out


def _extension_actor(ext: Any) -> tuple[str | None, str | None]:
    """(actor reference, required code) of one device-participant extension."""
    if not isinstance(ext, dict) or ext.get("url") != DEVICE_PARTICIPANT:
        return None, None
    ref = required = None
    for sub in ext.get("extension") or []:
        if not isinstance(sub, dict):
            continue
        if sub.get("url") == "actor" and isinstance(sub.get("valueReference"), dict):
            value = sub["valueReference"].get("reference")
            ref = value if isinstance(value, str) else None
        elif sub.get("url") == "required" and isinstance(sub.get("valueCode"), str):
            required = sub["valueCode"]
    return ref, required


def _bookable(ref: Any) -> bool:
    return isinstance(ref, str) and "://" not in ref and _type_of(ref) in RESOURCE_TYPES


def resource_actors(appointment: dict[str, Any]) -> list[str]:
    """Every bookable resource the appointment takes, whichever way it travels: participants
    that have not declined and are not information-only, then device-participant extensions
    that are not information-only; each once, in that order."""
    actors: list[str] = []
    for p in appointment.get("participant") or []:
        if (not isinstance(p, dict) or p.get("status") == "declined"
                or p.get("required") == "information-only"):
            continue
        actor = p.get("actor")
        ref = actor.get("reference") if isinstance(actor, dict) else None
        if isinstance(ref, str) and _bookable(ref):
            actors.append(ref)
    for ext in appointment.get("extension") or []:
        ref, required = _extension_actor(ext)
        if isinstance(ref, str) and _bookable(ref) and required != "information-only":
            actors.append(ref)
    return list(dict.fromkeys(actors))

