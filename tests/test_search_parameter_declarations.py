"""Keeps the committed search-parameter declarations honest.

``conformance/search-parameters.json`` is generated, then committed so it can be
reviewed; these tests fail when someone edits it by hand, when the generator changes
without regenerating, or when an expression would not even parse in the FHIRPath engine
the server evaluates it with.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import fhirpathpy
import pytest
from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from tests.support.fhir_assets import HOSTED_TYPES, example_resources, schema_validator

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT / "conformance"
DECLARATIONS = CONFORMANCE / "search-parameters.json"
CUSTOM_FILES = ("SearchParameter-Slot-end.json", "SearchParameter-Appointment-end.json")


def _load_extractor() -> ModuleType:
    # tools/ is a script directory, not a package.
    path = ROOT / "tools" / "extract_search_params.py"
    spec = importlib.util.spec_from_file_location("extract_search_params", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


extractor = _load_extractor()


def _declarations() -> list[dict[str, Any]]:
    with DECLARATIONS.open(encoding="utf-8") as fh:
        rows: list[dict[str, Any]] = json.load(fh)
    return rows


DECLARED = _declarations()


class _RaisingListener(ErrorListener):
    """fhirpathpy's own parser silently recovers from syntax errors; we want them loud."""

    def syntaxError(  # camelCase: overrides the ANTLR callback
        self, recognizer: Any, offending: Any, line: int, column: int, msg: str, e: Any
    ) -> None:
        raise SyntaxError(f"column {column}: {msg}")


def _strict_parse(expression: str) -> None:
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_RaisingListener())
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(_RaisingListener())
    parser.expression()
    if tokens.LA(1) != Token.EOF:
        raise SyntaxError(f"unparsed trailing input at column {tokens.LT(1).start}")


def test_file_matches_fresh_extraction() -> None:
    rows, _skipped = extractor.extract(extractor.load_bundle())
    assert rows == DECLARED, "stale: run `python tools/extract_search_params.py`"
    assert DECLARATIONS.read_text(encoding="utf-8") == extractor.render(rows)


def test_custom_files_match_generator() -> None:
    for custom in extractor.custom_search_parameters():
        path = CONFORMANCE / f"SearchParameter-{custom['id']}.json"
        assert json.loads(path.read_text(encoding="utf-8")) == custom, path.name


def test_covers_exactly_the_hosted_types() -> None:
    bases = {row["base"] for row in DECLARED}
    assert bases == {*HOSTED_TYPES, "Resource"}
    keys = [(row["base"], row["code"]) for row in DECLARED]
    assert keys == sorted(keys)
    assert len(keys) == len(set(keys))
    assert {row["code"] for row in DECLARED if row["base"] == "Resource"} == {"_id", "_lastUpdated"}
    assert {"composite", "special"}.isdisjoint(row["type"] for row in DECLARED)


def test_custom_end_parameters_present() -> None:
    by_key = {(row["base"], row["code"]): row for row in DECLARED}
    for base in ("Slot", "Appointment"):
        row = by_key[(base, "end")]
        assert row["type"] == "date"
        assert row["expression"] == f"{base}.end"
        assert row["url"] == f"https://fhir-sched.org/fhir/SearchParameter/{base}-end"


def test_expressions_are_restricted_to_their_base() -> None:
    for row in DECLARED:
        for part in extractor.split_union(row["expression"]):
            assert part.startswith((f"{row['base']}.", f"({row['base']}.")), row


def test_shared_definition_is_split_per_base() -> None:
    by_key = {(row["base"], row["code"]): row for row in DECLARED}
    patient = by_key[("ServiceRequest", "patient")]
    assert patient["expression"] == "ServiceRequest.subject.where(resolve() is Patient)"
    assert patient["target"] == ["Patient"]  # Group is unreachable through this expression
    assert by_key[("Practitioner", "email")]["description"] == "A value in an email contact"


@pytest.mark.parametrize(
    ("expression", "base", "expected"),
    [
        ("A.x | B.y", "A", "A.x"),
        ("(A.x | B.y)", "B", "B.y"),
        ("(A.x as T) | (B.x as T)", "A", "(A.x as T)"),
        ("A.where(s = 'a|b') | A.y", "A", "A.where(s = 'a|b') | A.y"),
        ("AB.x | A.where(x | y)", "A", "A.where(x | y)"),
        ("B.x", "A", None),
    ],
)
def test_restrict_expression(expression: str, base: str, expected: str | None) -> None:
    assert extractor.restrict_expression(expression, base) == expected


@pytest.mark.parametrize("row", DECLARED, ids=lambda r: f"{r['base']}.{r['code']}")
def test_expression_parses_and_evaluates(row: dict[str, Any]) -> None:
    expression = row["expression"]
    _strict_parse(expression)
    compiled = fhirpathpy.compile(expression, model=models["r4"])
    assert compiled({"resourceType": row["base"]}, {}) is not None
    if "resolve()" in expression:
        return  # fhirpathpy does not implement resolve(); the server special-cases it
    samples = example_resources("Slot" if row["base"] == "Resource" else row["base"])
    for sample in samples:
        fhirpathpy.evaluate(sample, expression, model=models["r4"])


def test_strict_parse_rejects_garbage() -> None:
    for bad in ("Slot.((", "Slot.start |", "Slot.start)", "Slot.start start"):
        with pytest.raises(SyntaxError):
            _strict_parse(bad)


@pytest.mark.parametrize("name", CUSTOM_FILES)
def test_custom_search_parameter_validates(name: str) -> None:
    resource = json.loads((CONFORMANCE / name).read_text(encoding="utf-8"))
    assert schema_validator().errors(resource) == []
    assert resource["status"] == "active"
    assert resource["xpathUsage"] == "normal"
    assert resource["url"].endswith("/" + resource["id"])
