"""Generate ``conformance/search-parameters.json`` from the official R4 SearchParameter bundle.

The server's search behaviour must follow the published definitions, not a hand-typed
list that drifts from them.  The official definitions are shared across many resource
types (``clinical-patient`` spans 32 bases), so each one is cut down to the part that
applies to a single hosted type; the result is a small, reviewable, committed file that
a test keeps in sync with the pinned package.

Run from the repository root:  ``python tools/extract_search_params.py``
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE_DIR = ROOT / "conformance"
OUTPUT = CONFORMANCE_DIR / "search-parameters.json"
BUNDLE_FILE = "Bundle-searchParams.json"

# The server has no generic engine for these; supporting one means writing it by hand.
UNSUPPORTED_TYPES = frozenset({"composite", "special"})
# Parameters valid on every resource type, listed once under base "Resource".
COMMON_CODES = frozenset({"_id", "_lastUpdated"})
OPTIONAL_KEYS = ("comparator", "modifier", "multipleOr", "multipleAnd")
DATE_COMPARATORS = ["eq", "ne", "gt", "ge", "lt", "le", "sa", "eb", "ap"]
CUSTOM_URL = "https://fhir-sched.org/fhir/SearchParameter/"

_RESOLVE_IS = re.compile(r"\.where\(resolve\(\) is (\w+)\)")
_SHARED_LINE = re.compile(r"^\*\s*\[(\w+)\]\([^)]*\):\s*(.*)$")


def _assets() -> ModuleType:
    """Import the test-asset helper even when run as a script from ``tools/``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("tests.support.fhir_assets")


def split_union(expression: str) -> list[str]:
    """Split on top-level ``|`` only; unions inside ``(...)`` or quotes belong to one part."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    for i, ch in enumerate(expression):
        if quote:
            if ch == quote and expression[i - 1] != "\\":
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _union_members(expression: str) -> list[str]:
    """Top-level union members, looking through parentheses that enclose a whole union.

    ``(A.x | B.y)`` must not be kept whole just because it starts with ``(A.``, while a
    lone ``(Patient.deceased as dateTime)`` keeps its parentheses untouched.
    """
    parts = split_union(expression)
    if len(parts) == 1 and _is_enclosed(parts[0]):
        inner = _union_members(parts[0][1:-1].strip())
        if len(inner) > 1:
            return inner
    return parts


def _is_enclosed(expression: str) -> bool:
    if not (expression.startswith("(") and expression.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(expression):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0 and i < len(expression) - 1:
                return False  # the first "(" closes early, e.g. "(a) | (b)"
    return True


def restrict_expression(expression: str, base: str) -> str | None:
    """The union members of ``expression`` that evaluate on ``base``; None if there are none."""
    kept = [
        part for part in _union_members(expression) if part.startswith((f"{base}.", f"({base}."))
    ]
    return " | ".join(kept) if kept else None


def _narrow_targets(targets: list[str], expression: str) -> list[str]:
    """Drop targets the restricted expression can never reach.

    ``clinical-patient`` targets Patient and Group, but on ServiceRequest it is
    ``subject.where(resolve() is Patient)``; advertising Group there would be wrong.
    """
    parts = split_union(expression)
    filters = [_RESOLVE_IS.findall(part) for part in parts]
    if not all(filters):
        return list(targets)
    allowed = {t for found in filters for t in found}
    return [t for t in targets if t in allowed]


def _first_sentence(text: str) -> str:
    """Up to the first sentence end outside parentheses, so "(eg. plan number)" survives."""
    text = text.strip().splitlines()[0].strip() if text.strip() else ""
    depth = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        elif ch in ".!?" and depth == 0 and (i + 1 == len(text) or text[i + 1].isspace()):
            return text[: i + 1]
    return text


def short_description(description: str, base: str) -> str:
    """Shared definitions describe every base in a bullet list; pick this base's bullet."""
    if description.lstrip().startswith("Multiple Resources"):
        for line in description.splitlines():
            match = _SHARED_LINE.match(line.strip())
            if match and match.group(1) == base:
                return _first_sentence(match.group(2))
    return _first_sentence(description)


def compact(resource: dict[str, Any], base: str) -> dict[str, Any]:
    """One row of the output: the definition as it applies to ``base`` alone."""
    expression = restrict_expression(resource.get("expression", ""), base)
    if expression is None:
        raise ValueError(f"{resource['url']}: no expression part applies to {base}")
    row: dict[str, Any] = {
        "code": resource["code"],
        "base": base,
        "type": resource["type"],
        "expression": expression,
    }
    if resource["type"] == "reference":
        row["target"] = _narrow_targets(resource.get("target", []), expression)
    row["url"] = resource["url"]
    row["description"] = short_description(resource.get("description", ""), base)
    for key in OPTIONAL_KEYS:
        if key in resource:
            row[key] = resource[key]
    return row


def custom_search_parameters() -> list[dict[str, Any]]:
    """Our own parameters: R4 has ``start`` but no ``end`` search on Slot and Appointment,
    and "slots ending before X" is a core scheduling query; staff find the bookings a calendar
    of record made against the rules by ``booking-flag``; the guard finds which service
    offers a visit type by ``visit-type``, and a recent eligibility answer by ``coverage``;
    a recurring series is found by ``originating-appointment``."""
    return [*_end_parameters(), {
        "resourceType": "SearchParameter",
        "id": "Appointment-actor",
        "url": f"{CUSTOM_URL}Appointment-actor",
        "name": "AppointmentActor",
        "derivedFrom": "http://hl7.org/fhir/SearchParameter/Appointment-actor",
        "status": "active",
        "experimental": False,
        "publisher": "fhir-sched",
        "description": (
            "Any one of the individuals participating in the appointment, and the devices it "
            "takes: R4's Appointment-actor, which also reads the device-participant extension "
            "(devices travel there so that Appointments conform to IHE ihe-sched-appt)."
        ),
        "code": "actor",
        "base": ["Appointment"],
        "type": "reference",
        "expression": "Appointment.participant.actor | Appointment.extension('https://"
                      "fhir-sched.org/fhir/StructureDefinition/device-participant')"
                      ".extension('actor').value",
        "xpathUsage": "normal",
        "target": ["Practitioner", "Device", "Patient", "HealthcareService",
                   "PractitionerRole", "RelatedPerson", "Location"],
    }, {
        "resourceType": "SearchParameter",
        "id": "Appointment-booking-flag",
        "url": f"{CUSTOM_URL}Appointment-booking-flag",
        "name": "AppointmentBookingFlag",
        "status": "active",
        "experimental": False,
        "publisher": "fhir-sched",
        "description": (
            "The rules a booking recorded from a calendar of record breaks (past, "
            "outside-availability, patient-overlap, capacity), from its booking-flag "
            "extensions; `booking-flag:missing=false` finds every flagged booking."
        ),
        "code": "booking-flag",
        "base": ["Appointment"],
        "type": "token",
        "expression": "Appointment.extension('https://fhir-sched.org/fhir/StructureDefinition/"
                      "booking-flag').extension('rule').value",
        "xpathUsage": "normal",
    }, {
        "resourceType": "SearchParameter",
        "id": "Appointment-originating-appointment",
        "url": f"{CUSTOM_URL}Appointment-originating-appointment",
        "name": "AppointmentOriginatingAppointment",
        "status": "active",
        "experimental": False,
        "publisher": "fhir-sched",
        "description": (
            "The first appointment of the recurring series an occurrence belongs to (the R5 "
            "cross-version extension originatingAppointment); a series is that appointment "
            "and every one naming it."
        ),
        "code": "originating-appointment",
        "base": ["Appointment"],
        "type": "reference",
        "expression": "Appointment.extension('http://hl7.org/fhir/5.0/StructureDefinition/"
                      "extension-Appointment.originatingAppointment').value",
        "xpathUsage": "normal",
        "target": ["Appointment"],
    }, {
        "resourceType": "SearchParameter",
        "id": "HealthcareService-visit-type",
        "url": f"{CUSTOM_URL}HealthcareService-visit-type",
        "name": "HealthcareServiceVisitType",
        "status": "active",
        "experimental": False,
        "publisher": "fhir-sched",
        "description": (
            "The codes of the visit types a HealthcareService offers (its visit-type "
            "extensions); the booking guard finds a booking's visit type by it when the "
            "booking names no service."
        ),
        "code": "visit-type",
        "base": ["HealthcareService"],
        "type": "token",
        "expression": "HealthcareService.extension('https://fhir-sched.org/fhir/"
                      "StructureDefinition/visit-type').extension('code').value",
        "xpathUsage": "normal",
    }, {
        "resourceType": "SearchParameter",
        "id": "CoverageEligibilityResponse-coverage",
        "url": f"{CUSTOM_URL}CoverageEligibilityResponse-coverage",
        "name": "CoverageEligibilityResponseCoverage",
        "status": "active",
        "experimental": False,
        "publisher": "fhir-sched",
        "description": (
            "The Coverage an eligibility answer is about (insurance.coverage); the booking "
            "guard finds a recent answer for a booking's Coverage by it (the eligibility "
            "cache)."
        ),
        "code": "coverage",
        "base": ["CoverageEligibilityResponse"],
        "type": "reference",
        "expression": "CoverageEligibilityResponse.insurance.coverage",
        "xpathUsage": "normal",
        "target": ["Coverage"],
    }]


def _end_parameters() -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "SearchParameter",
            "id": f"{base}-end",
            "url": f"{CUSTOM_URL}{base}-end",
            "name": f"{base}End",
            "status": "active",
            "experimental": False,
            "publisher": "fhir-sched",
            "description": (
                f"{base} end date/time. Complements the standard `start` parameter so that "
                f"clients can find {base} resources ending before or after a given instant."
            ),
            "code": "end",
            "base": [base],
            "type": "date",
            "expression": f"{base}.end",
            "xpath": f"f:{base}/f:end",
            "xpathUsage": "normal",
            "comparator": list(DATE_COMPARATORS),
        }
        for base in ("Slot", "Appointment")
    ]


def extract(bundle: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Return (rows sorted by base and code, human-readable notes on what was left out)."""
    hosted: tuple[str, ...] = _assets().HOSTED_TYPES
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    skipped: list[str] = []

    def add(row: dict[str, Any]) -> None:
        key = (row["base"], row["code"])
        if key in rows:
            raise ValueError(f"duplicate search parameter {key}: {rows[key]['url']}, {row['url']}")
        rows[key] = row

    # Our own definitions that replace an official one (``derivedFrom``) take its place.
    replaced = {c["derivedFrom"] for c in custom_search_parameters() if "derivedFrom" in c}
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") != "SearchParameter" or resource.get("url") in replaced:
            continue
        bases = resource.get("base", [])
        if "Resource" in bases or "DomainResource" in bases:
            if resource["code"] in COMMON_CODES:
                add(compact(resource, "Resource"))
            else:
                skipped.append(f"{resource['code']} ({'/'.join(bases)}, not served)")
            continue
        for base in bases:
            if base not in hosted:
                continue
            if resource["type"] in UNSUPPORTED_TYPES:
                skipped.append(f"{base}.{resource['code']} ({resource['type']}, {resource['url']})")
                continue
            add(compact(resource, base))

    for custom in custom_search_parameters():
        add(compact(custom, custom["base"][0]))
    return [rows[key] for key in sorted(rows)], skipped


def load_bundle() -> dict[str, Any]:
    """The official bundle whose 1375 entries are all SearchParameter resources."""
    path = _assets().r4_examples_dir() / BUNDLE_FILE
    with path.open(encoding="utf-8") as fh:
        bundle: dict[str, Any] = json.load(fh)
    return bundle


def render(data: Any) -> str:
    """Stable formatting, so regenerating an unchanged file yields an empty diff."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)

    rows, skipped = extract(load_bundle())
    out: Path = args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(rows), encoding="utf-8")
    for custom in custom_search_parameters():
        path = out.parent / f"SearchParameter-{custom['id']}.json"
        path.write_text(render(custom), encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(f"wrote {len(rows)} search parameters to {out}")
    print(f"skipped {len(skipped)}:")
    for note in skipped:
        print(f"  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
