"""Join links for virtual visits: a booking of a visit type marked ``virtual`` gets one, kept
on the Appointment in R5's ``virtualService`` (the R5-for-R4 cross-version extension), and
loses it when it is cancelled, so the link in an old reminder or calendar entry stops being
offered.

The link comes from a provider port. The one built in fills a URL template
(``FHIR_SCHED_TELEHEALTH_URL_TEMPLATE``, e.g. ``https://meet.example.org/{room}``) with a room
name of 128 random bits: unguessable, so the link itself is the invitation. It is made in the
write, so the ``$book`` answer already carries it; a provider that must be called over the
network would run beside the unit, as the eligibility check does.
"""

from __future__ import annotations

import secrets
from typing import Any

VIRTUAL_SERVICE_URL = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService"
CHANNEL_SYSTEM = "https://fhir-sched.org/fhir/CodeSystem/virtual-service-type"
NO_LINK_STATUSES = frozenset({"cancelled", "noshow", "entered-in-error"})


def join_link(appointment: dict[str, Any]) -> str | None:
    """The join URL an Appointment carries, if any."""
    for ext in appointment.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == VIRTUAL_SERVICE_URL:
            for sub in ext.get("extension") or []:
                if isinstance(sub, dict) and sub.get("url") == "address":
                    value = sub.get("valueUrl")
                    return value if isinstance(value, str) else None
    return None


def with_link(appointment: dict[str, Any], template: str) -> dict[str, Any]:
    """The Appointment with a fresh join link, unless it has one already."""
    if join_link(appointment) is not None or not template:
        return appointment
    room = secrets.token_urlsafe(16)
    detail = {"url": VIRTUAL_SERVICE_URL, "extension": [
        {"url": "channelType", "valueCoding": {"system": CHANNEL_SYSTEM, "code": "video",
                                               "display": "Video visit"}},
        {"url": "address", "valueUrl": template.replace("{room}", room)},
        {"url": "sessionKey", "valueString": room}]}
    return {**appointment, "extension": [*(appointment.get("extension") or []), detail]}


def without_link(appointment: dict[str, Any]) -> dict[str, Any]:
    exts = appointment.get("extension") or []
    kept = [e for e in exts if not (isinstance(e, dict) and e.get("url") == VIRTUAL_SERVICE_URL)]
    if len(kept) == len(exts):
        return appointment
    out = {**appointment, "extension": kept}
    if not kept:
        del out["extension"]
    return out
