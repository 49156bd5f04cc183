"""The compiled path walkers of index extraction agree with a FHIRPath engine.

Index extraction compiles the plain-path search expressions into small walkers instead of
running fhirpathpy on every write (see ``search/extract.py``). Here, on every official R4 example
of every hosted type and on our own extension-bearing Appointment, each compiled walker must
select exactly the values fhirpathpy selects for the same expression.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fhirpathpy import evaluate
from fhirpathpy.models import models

from fhir_sched.search.extract import _compile_path, _split_top
from fhir_sched.search.params import params_for
from tests.support.fhir_assets import HOSTED_TYPES

DEVICE = "https://fhir-sched.org/fhir/StructureDefinition/device-participant"
FLAG = "https://fhir-sched.org/fhir/StructureDefinition/booking-flag"
OWN_APPOINTMENT: dict[str, Any] = {
    "resourceType": "Appointment", "id": "own", "status": "booked",
    "start": "2030-01-01T09:00:00Z", "end": "2030-01-01T09:30:00Z",
    "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}],
    "extension": [
        {"url": DEVICE, "extension": [
            {"url": "actor", "valueReference": {"reference": "Device/d1"}},
            {"url": "status", "valueCode": "accepted"}]},
        {"url": FLAG, "extension": [{"url": "rule", "valueCode": "slot-busy"}]},
        {"url": "https://example.org/other", "valueString": "not indexed"},
    ],
}


def _compiled(type_: str) -> list[tuple[str, str]]:
    """(code, expression) of each parameter every part of which compiles to a walker; the
    parts using resolve() are left out (fhirpathpy does not implement it)."""
    out = []
    for code, sp in params_for(type_).items():
        parts = _split_top(sp.expression, "|")
        if "resolve()" in sp.expression:
            continue
        if all(_compile_path(p, type_) is not None for p in parts):
            out.append((code, sp.expression))
    return out


def _canonical(values: list[Any]) -> list[bytes]:
    return sorted(orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in values)


def _walk(type_: str, expression: str, resource: dict[str, Any]) -> list[Any]:
    walkers = [_compile_path(p, type_) for p in _split_top(expression, "|")]
    return [v for w in walkers if w is not None for v, _ in w(resource)]


def test_the_appointment_extension_parameters_compile_to_walkers() -> None:
    codes = {code for code, _ in _compiled("Appointment")}
    assert {"actor", "booking-flag"} <= codes


@pytest.mark.parametrize("type_", HOSTED_TYPES)
def test_compiled_walkers_select_what_fhirpath_selects(
        type_: str, r4_examples: Callable[[str], list[dict[str, Any]]]) -> None:
    resources = r4_examples(type_) + ([OWN_APPOINTMENT] if type_ == "Appointment" else [])
    assert resources, f"no official {type_} examples to compare on"
    checked = 0
    for resource in resources:
        for code, expression in _compiled(type_):
            # fhirpathpy types the root by its resourceType, so ``Resource.id`` is spelled out
            typed = expression.replace("Resource.", f"{type_}.")
            expected = evaluate(resource, typed, model=models["r4"])
            got = _walk(type_, expression, resource)
            assert _canonical(got) == _canonical(expected), (resource.get("id"), code)
            checked += bool(expected)
    assert checked > 0


def test_the_extension_step_selects_only_its_own_url() -> None:
    values = _walk("Appointment", params_for("Appointment")["actor"].expression,
                   OWN_APPOINTMENT)
    assert {"reference": "Device/d1"} in values
    assert {"reference": "Patient/p1"} in values
    flags = _walk("Appointment", params_for("Appointment")["booking-flag"].expression,
                  OWN_APPOINTMENT)
    assert flags == ["slot-busy"]
