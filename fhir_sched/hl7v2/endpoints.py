"""Outbound SIU subscribers, as FHIR Endpoint resources.

An active Endpoint whose ``connectionType`` is ``hl7v2-mllp`` and whose ``address`` is
``mllp://host:port`` receives an SIU message for every Appointment change that passes its
filters. Extensions (declared in ``conformance/``):

- ``hl7v2-version`` (valueCode, 2.3 to 2.8; default 2.5.1): the version it speaks, which
  decides the structure (TQ1 from 2.5, SCH-11 before);
- ``hl7v2-peer`` (``application``, ``facility`` valueStrings): the receiving system's
  MSH-3/MSH-4, sent as MSH-5/MSH-6, and how a change that system itself sent us is recognised
  (never echoed back to it);
- ``hl7v2-filter`` (valueReference, repeating): only appointments of these Schedules,
  Locations or HealthcareServices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_sched.hl7v2.client import parse_address
from fhir_sched.scheduling.extensions import BASE

CONNECTION_TYPE = "hl7v2-mllp"
VERSION = BASE + "hl7v2-version"
PEER = BASE + "hl7v2-peer"
FILTER = BASE + "hl7v2-filter"
VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")
DEFAULT_VERSION = "2.5.1"


@dataclass(frozen=True, slots=True)
class Subscriber:
    id: str
    host: str
    port: int
    version: str
    application: str
    facility: str
    filters: tuple[str, ...]  # "Schedule/x", "Location/y", "HealthcareService/z"

    def sent_it(self, door: str, subject: str) -> bool:
        """Whether a change with this origin came from this very system over HL7 v2."""
        if door != "mllp" or not self.application:
            return False
        if self.facility:
            return subject == f"hl7v2/{self.application}/{self.facility}"
        return subject.startswith(f"hl7v2/{self.application}/")


def _ext(resource: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in resource.get("extension") or [] if isinstance(e, dict)
            and e.get("url") == url]


def subscriber(endpoint: dict[str, Any]) -> Subscriber | None:
    """The subscriber an Endpoint describes, or None when it is not an active MLLP one (or its
    address cannot be read)."""
    if endpoint.get("status") != "active":
        return None
    if (endpoint.get("connectionType") or {}).get("code") != CONNECTION_TYPE:
        return None
    try:
        host, port = parse_address(str(endpoint.get("address") or ""))
    except ValueError:
        return None
    version = next((str(e.get("valueCode")) for e in _ext(endpoint, VERSION)), DEFAULT_VERSION)
    if version not in VERSIONS:
        version = DEFAULT_VERSION
    peer = {sub.get("url"): str(sub.get("valueString") or "")
            for e in _ext(endpoint, PEER) for sub in e.get("extension") or []}
    filters = tuple(str((e.get("valueReference") or {}).get("reference") or "")
                    for e in _ext(endpoint, FILTER))
    return Subscriber(str(endpoint.get("id")), host, port, version,
                      peer.get("application", ""), peer.get("facility", ""),
                      tuple(f for f in filters if f))
