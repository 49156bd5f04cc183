"""The SMART Scheduling Links conformance rules, written out from the specification and its
profiles, as a test oracle for ``$bulk-publish``.

Sources (facts carried over, not code):

- the manifest checks of the ONC Inferno SMART Scheduling Links test kit
  (``manifest_group.rb``: URL ends in ``$bulk-publish``, ``transactionTime`` an instant,
  ``request`` an http(s) URL, ``output`` items with string ``type`` and an http(s) ``url``,
  ``extension.state`` an array of strings);
- the Slot Publisher API (Timestamps: to the second, with an offset; ids up to 64 characters
  of ``[A-Za-z0-9-.]``);
- the profiles' element rules: HL7's ``smart-scheduling-location``, ``-schedule`` and
  ``-slot`` (cardinalities) and the original ``vaccine-location`` / ``vaccine-slot``
  invariants, whose FHIRPath expressions are evaluated here by fhirpathpy, an evaluator
  nobody on this project wrote. The COVID-specific parts of the vaccine profiles (the VTrckS
  PIN, the covid19-immunization service coding) do not apply to a general scheduler.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from fhirpathpy import evaluate

SMART = "http://fhir-registry.smarthealthit.org/StructureDefinition/"
DEEP_LINK, PHONE, CAPACITY = (SMART + n for n in ("booking-deep-link", "booking-phone",
                                                  "slot-capacity"))
# The spec's timestamp: to the second at least, with an offset (FHIR instant).
INSTANT = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|"
    r"3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
    r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))")
ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# (id, FHIRPath expression, severity) of the vaccine-* profiles' invariants that apply.
INVARIANTS = {
    "Location": [
        # the Slot Publisher API's Location table: a phone is required (vaccine-location-1
        # also wants a URL, as a warning only)
        ("location-phone", "telecom.where(system = 'phone').exists()", "error"),
        ("vaccine-location-2", "telecom.where(system = 'phone' and value.contains('@')).empty()",
         "error"),
        ("vaccine-location-3", "telecom.where(system = 'url').exists() implies "
         "telecom.where(system = 'url' and value.contains(' ')).empty()", "error"),
    ],
    "Slot": [
        ("vaccine-slot-1", f"extension.where(url = '{DEEP_LINK}').exists()", "warning"),
        ("vaccine-slot-2", f"extension.where(url = '{PHONE}').exists()", "warning"),
    ],
}
SCHEDULE_ACTORS = ("Practitioner", "PractitionerRole", "HealthcareService", "Location",
                   "Patient", "RelatedPerson", "Device")


def http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def manifest_errors(manifest: Any, url: str) -> list[str]:
    errors = []
    if not url.split("?")[0].endswith("$bulk-publish"):
        errors.append(f"manifest URL {url} does not end with $bulk-publish")
    if not isinstance(manifest, dict):
        return [*errors, "the manifest is not a JSON object"]
    for field, kind in (("transactionTime", str), ("request", str), ("output", list)):
        if not isinstance(manifest.get(field), kind):
            errors.append(f"{field} should be a {kind.__name__}")
    if isinstance(manifest.get("transactionTime"), str) and not INSTANT.fullmatch(
            manifest["transactionTime"]):
        errors.append(f"transactionTime {manifest['transactionTime']!r} is not an instant")
    if not http_url(manifest.get("request")):
        errors.append("request is not an http(s) URL")
    for item in manifest.get("output") or []:
        if item.get("type") not in ("Location", "Schedule", "Slot", "PractitionerRole"):
            continue
        if not isinstance(item.get("type"), str) or not http_url(item.get("url")):
            errors.append(f"output item {item} needs a string type and an http(s) url")
        ext = item.get("extension")
        if ext is not None:
            if not isinstance(ext, dict):
                errors.append("output.extension should be a JSON object")
            elif "state" in ext and not (isinstance(ext["state"], list) and all(
                    isinstance(s, str) for s in ext["state"])):
                errors.append("output.extension.state should be an array of strings")
    return errors


def profile_errors(res: dict[str, Any], *, strict_slots: bool = True) -> list[str]:
    """What makes ``res`` fail its SMART Scheduling Links profile (warnings count as errors
    for Slots when ``strict_slots``: the test server is configured to publish both)."""
    kind = res.get("resourceType")
    where = f"{kind}/{res.get('id')}"
    errors = [] if isinstance(res.get("id"), str) and ID.fullmatch(res["id"]) else [
        f"{where}: id must be 1-64 of [A-Za-z0-9-.]"]
    if kind == "Location":
        if not res.get("name"):
            errors.append(f"{where}: name 1..1")
        telecom = res.get("telecom") or []
        if not telecom or not all(t.get("system") and t.get("value") for t in telecom):
            errors.append(f"{where}: telecom 1..* with system and value")
        address = res.get("address")
        if not isinstance(address, dict):
            errors.append(f"{where}: address 1..1")
        else:
            if not address.get("line"):
                errors.append(f"{where}: address.line 1..*")
            errors += [f"{where}: address.{k} 1..1" for k in ("city", "state", "postalCode")
                       if not isinstance(address.get(k), str)]
    elif kind == "Schedule":
        actors = res.get("actor") or []
        if not actors or not all(isinstance(a.get("reference"), str) for a in actors):
            errors.append(f"{where}: actor 1..* with reference 1..1")
        errors += [f"{where}: actor {a.get('reference')} is not an allowed type"
                   for a in actors
                   if str(a.get("reference", "")).split("/")[0] not in SCHEDULE_ACTORS]
        if not res.get("serviceType"):
            errors.append(f"{where}: serviceType 1..*")
    elif kind == "Slot":
        if not str((res.get("schedule") or {}).get("reference", "")).startswith("Schedule/"):
            errors.append(f"{where}: schedule.reference Schedule/<id>")
        if res.get("status") not in ("free", "busy"):
            errors.append(f"{where}: status must be free or busy")
        errors += [f"{where}: {k} is not a timestamp with an offset" for k in ("start", "end")
                   if not INSTANT.fullmatch(str(res.get(k, "")))]
        for ext in res.get("extension") or []:
            url = ext.get("url")
            shape = {DEEP_LINK: "valueUrl", PHONE: "valueString", CAPACITY: "valueInteger"}
            if url in shape and set(ext) != {"url", shape[url]}:
                errors.append(f"{where}: {url} takes exactly one {shape[url]}")
            if url == DEEP_LINK and not http_url(ext.get("valueUrl")):
                errors.append(f"{where}: the deep link is not an http(s) URL")
    else:
        errors.append(f"{where}: not a published type")
    for name, expression, severity in INVARIANTS.get(str(kind), []):
        if severity == "warning" and not (kind == "Slot" and strict_slots
                                          and res.get("status") == "free"):
            continue
        if evaluate(res, expression) != [True]:
            errors.append(f"{where}: {name} fails ({expression})")
    return errors
