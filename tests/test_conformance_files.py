"""Everything in conformance/ is valid R4, and every extension the server writes is defined."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(p for p in (ROOT / "conformance").glob("*.json")
               if p.name != "search-parameters.json")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_conformance_resource_is_valid_r4(path: Path, fhir_schema: object) -> None:
    resource = orjson.loads(path.read_bytes())
    assert fhir_schema.errors(resource) == []  # type: ignore[attr-defined]


def test_every_extension_url_in_the_code_has_a_structure_definition() -> None:
    defined = {orjson.loads(p.read_bytes()).get("url") for p in FILES}
    used: set[str] = set()
    for source in (ROOT / "fhir_sched").rglob("*.py"):
        text = source.read_text()
        used |= set(re.findall(r'"(https://fhir-sched\.org/fhir/StructureDefinition/[a-z0-9-]+)"',
                               text))
        for base_name in re.findall(r'BASE \+ "([a-z0-9-]+)"', text):
            used.add("https://fhir-sched.org/fhir/StructureDefinition/" + base_name)
    assert used, "the scan found no extension URLs at all"
    assert used - defined == set()


def test_the_booking_rule_code_system_file_is_the_rules_table() -> None:
    from fhir_sched.scheduling.booking_rules import code_system

    stored = orjson.loads((ROOT / "conformance" / "CodeSystem-booking-rule.json").read_bytes())
    assert stored == code_system()
