"""The FHIR R4 XML converter on its own: the R4 XML and JSON rules, and what it refuses.

The official R4 examples (written by HL7, in JSON) must come back from XML unchanged, and
``fhir.resources`` (an independent implementation with its own XML reader and writer, on
lxml) must read our XML as it reads the JSON, and we must read its XML likewise. Narrative
XHTML is compared in canonical XML form: ``&quot;`` and ``"`` are the same XHTML.
"""

from __future__ import annotations

import decimal
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import canonicalize, fromstring

import pytest

from fhir_sched.rest.fhirxml import XmlError, json_to_xml, parse_xml, to_xml, xml_to_json
from tests.support.fhir_assets import r4_examples_dir

Json = dict[str, Any]
FHIR = "{http://hl7.org/fhir}"
XHTML = "http://www.w3.org/1999/xhtml"
ROOT = Path(__file__).resolve().parent.parent
# every type the server hosts or answers with
TYPES = ("Appointment", "Schedule", "Slot", "Patient", "Practitioner", "PractitionerRole",
         "Location", "HealthcareService", "Organization", "Coverage", "ServiceRequest",
         "Bundle", "OperationOutcome", "Parameters", "CapabilityStatement",
         "OperationDefinition", "StructureDefinition", "SearchParameter")


def exact(raw: bytes | str) -> Any:
    """JSON with decimals as written, so ``1.50`` and ``1.5`` differ."""
    return json.loads(raw, parse_float=decimal.Decimal)


def xhtml_canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: canonicalize(v) if k == "div" and isinstance(v, str) else xhtml_canonical(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [xhtml_canonical(v) for v in value]
    return value


# The ten definition Bundles of the package (all profiles, all value sets: 2-35 MB each) only
# repeat what the per-type examples cover, at a minute of test time.
MAX_EXAMPLE_BYTES = 1 << 20


def examples(type_: str) -> list[tuple[str, bytes]]:
    out = []
    for path in sorted(r4_examples_dir().glob(f"{type_}-*.json")):
        if path.stat().st_size > MAX_EXAMPLE_BYTES:
            continue
        raw = path.read_bytes()
        if json.loads(raw).get("resourceType") == type_:
            out.append((path.name, raw))
    return out


def children(xml: bytes, path: str = ".") -> list[str]:
    node = fromstring(xml).find(path) if path != "." else fromstring(xml)
    assert node is not None
    return [c.tag.removeprefix(FHIR) for c in node]


# -- the official examples -------------------------------------------------------------------
@pytest.mark.parametrize("type_", TYPES)
def test_official_examples_come_back_from_xml_unchanged(type_: str) -> None:
    found = examples(type_)
    if type_ != "Parameters":  # R4 ships no Parameters example; built ones are tested below
        assert found, f"no official {type_} example"
    for name, raw in found:
        back = xml_to_json(json_to_xml(raw))
        assert xhtml_canonical(exact(back)) == xhtml_canonical(exact(raw)), name


def _model(type_: str) -> Any:
    return getattr(importlib.import_module(f"fhir.resources.R4B.{type_.lower()}"), type_)


# R4B (what fhir.resources offers) differs from R4 in these, so its models cannot be the
# oracle for them; the R4 round trip above still covers their examples.
R4B_DIFFERS = {"StructureDefinition", "OperationDefinition", "CapabilityStatement",
               "OperationOutcome", "Bundle", "SearchParameter"}


@pytest.mark.parametrize("type_", [t for t in TYPES if t not in R4B_DIFFERS])
def test_fhir_resources_reads_our_xml_as_it_reads_the_json(type_: str) -> None:
    model = _model(type_)
    checked = 0
    for name, raw in examples(type_):
        want = xhtml_canonical(model.model_validate_json(raw).model_dump(mode="json"))
        got = model.model_validate_xml(json_to_xml(raw)).model_dump(mode="json")
        assert xhtml_canonical(got) == want, name
        checked += 1
    assert checked or type_ == "Parameters"


@pytest.mark.parametrize("type_", [t for t in TYPES if t not in R4B_DIFFERS])
def test_we_read_the_xml_fhir_resources_writes(type_: str) -> None:
    model = _model(type_)
    for name, raw in examples(type_):
        theirs = model.model_validate_json(raw)
        got = model.model_validate(parse_xml(theirs.model_dump_xml())).model_dump(mode="json")
        assert xhtml_canonical(got) == xhtml_canonical(theirs.model_dump(mode="json")), name


def test_fhir_resources_reads_a_parameters_with_a_resource_inside() -> None:
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "appt-resource", "resource": {
            "resourceType": "Appointment", "status": "proposed",
            "participant": [{"actor": {"display": "Dr A"}, "status": "needs-action"}]}},
        {"name": "start", "valueDateTime": "2031-05-05T09:00:00Z"},
        {"name": "count", "valueInteger": 3},
        {"name": "part", "part": [{"name": "flag", "valueBoolean": False}]}]}
    xml = to_xml(params)
    model = _model("Parameters").model_validate_xml(xml)
    assert model.model_dump(mode="json") == params
    assert parse_xml(xml) == params


def test_committed_element_table_matches_the_r4_definitions() -> None:
    run = subprocess.run([sys.executable, "tools/generate_xml_structure.py", "--check"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr + run.stdout


# -- the rules, one at a time ----------------------------------------------------------------
def test_primitive_id_and_extension_become_the_underscore_sibling() -> None:
    xml = (b'<Patient xmlns="http://hl7.org/fhir"><birthDate id="b1" value="1970-01-01">'
           b'<extension url="http://example.org/t"><valueTime value="07:30:00"/></extension>'
           b"</birthDate></Patient>")
    assert parse_xml(xml) == {
        "resourceType": "Patient", "birthDate": "1970-01-01",
        "_birthDate": {"id": "b1", "extension": [{"url": "http://example.org/t",
                                                   "valueTime": "07:30:00"}]}}


def test_repeating_primitives_with_extensions_keep_nulls_in_both_arrays() -> None:
    ext = {"extension": [{"url": "http://example.org/e", "valueString": "x"}]}
    resource = {"resourceType": "Patient", "name": [{
        "given": ["Ada", None, "Bea"], "_given": [None, ext, None]}]}
    xml = to_xml(resource)
    assert children(xml, f"{FHIR}name") == ["given", "given", "given"]
    assert parse_xml(xml) == resource


def test_a_primitive_with_only_an_extension_has_no_value_attribute() -> None:
    xml = to_xml({"resourceType": "Patient",
                  "_gender": {"extension": [{"url": "http://example.org/why",
                                             "valueCode": "asked-declined"}]}})
    gender = fromstring(xml).find(f"{FHIR}gender")
    assert gender is not None and "value" not in gender.attrib


def test_decimals_keep_the_digits_they_were_written_with() -> None:
    raw = b'{"resourceType":"Slot","extension":[{"url":"http://e","valueDecimal":1.50}]}'
    xml = json_to_xml(raw)
    assert b'<valueDecimal value="1.50"/>' in xml
    assert b'"valueDecimal":1.50' in xml_to_json(xml)
    # the server's own reading gives what a JSON parser gives for the same text
    assert parse_xml(xml)["extension"][0]["valueDecimal"] == 1.5


def test_booleans_and_integers_are_typed_by_the_definition_and_strings_stay_strings() -> None:
    xml = (b'<Patient xmlns="http://hl7.org/fhir"><identifier><value value="5"/></identifier>'
           b'<active value="true"/><multipleBirthInteger value="2"/></Patient>')
    doc = parse_xml(xml)
    assert doc["identifier"][0]["value"] == "5"
    assert doc["active"] is True
    assert doc["multipleBirthInteger"] == 2


def test_elements_are_written_in_definition_order_with_extensions_first() -> None:
    shuffled = {"gender": "female", "name": [{"given": ["A"], "family": "B"}],
                "extension": [{"valueString": "v", "url": "http://e"}], "active": False,
                "meta": {"versionId": "1"}, "id": "p1", "resourceType": "Patient"}
    xml = to_xml(shuffled)
    assert children(xml) == ["id", "meta", "extension", "active", "name", "gender"]
    assert children(xml, f"{FHIR}name") == ["family", "given"]
    ext = fromstring(xml).find(f"{FHIR}extension")
    assert ext is not None and ext.attrib == {"url": "http://e"}


def test_choice_elements_are_named_after_their_type() -> None:
    resource = {"resourceType": "Patient", "deceasedDateTime": "2020-01-01",
                "extension": [{"url": "http://e", "valueCodeableConcept": {"text": "t"}}]}
    xml = to_xml(resource)
    assert children(xml) == ["extension", "deceasedDateTime"]
    assert parse_xml(xml) == resource


def test_element_ids_and_extension_urls_are_attributes() -> None:
    resource = {"resourceType": "Patient", "contact": [{"id": "c1", "gender": "male"}]}
    contact = fromstring(to_xml(resource)).find(f"{FHIR}contact")
    assert contact is not None and contact.attrib == {"id": "c1"}


def test_nested_resources_are_wrapped_in_an_element_named_after_their_type() -> None:
    oo = {"resourceType": "OperationOutcome",
          "issue": [{"severity": "warning", "code": "informational"}]}
    bundle = {"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p",
                      "contained": [{"resourceType": "Organization", "id": "o"}]},
         "response": {"status": "201 Created", "outcome": oo}}]}
    xml = to_xml(bundle)
    root = fromstring(xml)
    assert root.find(f"{FHIR}entry/{FHIR}resource/{FHIR}Patient/{FHIR}contained/"
                     f"{FHIR}Organization") is not None
    assert root.find(f"{FHIR}entry/{FHIR}response/{FHIR}outcome/"
                     f"{FHIR}OperationOutcome") is not None
    assert parse_xml(xml) == bundle


def test_narrative_stays_xhtml_in_its_namespace() -> None:
    div = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Ada &amp; <b>Bea</b></p></div>'
    resource = {"resourceType": "Patient", "text": {"status": "generated", "div": div}}
    xml = to_xml(resource)
    node = fromstring(xml).find(f"{FHIR}text/{{{XHTML}}}div/{{{XHTML}}}p/{{{XHTML}}}b")
    assert node is not None and node.text == "Bea"
    assert parse_xml(xml) == resource


def test_xml_declaration_and_root_namespace() -> None:
    xml = to_xml({"resourceType": "Slot", "status": "free"})
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?><Slot xmlns="http://hl7.org/fhir">')


# -- refusals: (what is sent, what the error names, where) -----------------------------------
def patient(inner: str) -> bytes:
    return f'<Patient xmlns="http://hl7.org/fhir">{inner}</Patient>'.encode()


LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
          b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
          b'<Patient xmlns="http://hl7.org/fhir"><name><family value="&lol3;"/></name></Patient>')
XXE = (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<Patient xmlns="http://hl7.org/fhir"><name><family value="&x;"/></name></Patient>')
DEEP = patient('<extension url="http://e">' * 150 + "</extension>" * 150)

REFUSED = [
    ("malformed", b"<Patient xmlns='http://hl7.org/fhir'><name>", "malformed XML", None),
    ("no-namespace", b"<Patient/>", "FHIR namespace", "Patient"),
    ("wrong-namespace", b'<Patient xmlns="urn:other"/>', "FHIR namespace", "Patient"),
    ("not-a-type", b'<Patients xmlns="http://hl7.org/fhir"/>', "resource type", "Patients"),
    ("unknown-element", patient('<nickname value="x"/>'), "unknown element <nickname>",
     "Patient.nickname"),
    ("unknown-attribute", patient('<active value="true" flavour="x"/>'), "flavour",
     "Patient.active"),
    ("out-of-order", patient('<gender value="male"/><active value="true"/>'), "out of order",
     "Patient"),
    ("repeated-single", patient('<active value="true"/><active value="false"/>'),
     "only once", "Patient"),
    ("two-choices", patient('<deceasedBoolean value="true"/><deceasedDateTime value="2020"/>'),
     "deceased[x]", "Patient"),
    ("bad-boolean", patient('<active value="yes"/>'), "not a boolean", "Patient.active"),
    ("bad-integer", patient('<multipleBirthInteger value="2.5"/>'), "not a valid integer",
     "Patient.multipleBirthInteger"),
    ("bad-decimal", b'<Slot xmlns="http://hl7.org/fhir"><extension url="http://e">'
     b'<valueDecimal value="1,5"/></extension></Slot>', "not a valid decimal",
     "Slot.extension[0].valueDecimal"),
    ("zero-positive-int", b'<Slot xmlns="http://hl7.org/fhir"><extension url="http://e">'
     b'<valuePositiveInt value="0"/></extension></Slot>', "positiveInt",
     "Slot.extension[0].valuePositiveInt"),
    ("empty-value", patient('<gender value=""/>'), "may not be empty", "Patient.gender"),
    ("no-value", patient("<gender/>"), "no value attribute", "Patient.gender"),
    ("empty-complex", patient("<name/>"), "is empty", "Patient.name[0]"),
    ("text-content", patient("<gender>male</gender>"), "value attributes", "Patient.gender"),
    ("text-in-resource", patient("hello"), "not allowed", "Patient"),
    ("two-resources", b'<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/><entry>'
     b"<resource><Patient/><Patient/></resource></entry></Bundle>", "exactly one resource",
     "Bundle.entry[0].resource"),
    ("narrative-not-xhtml", patient('<text><status value="generated"/><div/></text>'),
     "namespace http://www.w3.org/1999/xhtml", "Patient.text.div"),
    ("entity-expansion", LAUGHS, "DTDs and entity declarations are not allowed", None),
    ("external-entity", XXE, "DTDs and entity declarations are not allowed", None),
    ("too-deep", DEEP, "deeper than", None),
]


@pytest.mark.parametrize(("raw", "message", "location"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
def test_invalid_xml_is_refused_naming_the_problem(raw: bytes, message: str,
                                                   location: str | None) -> None:
    with pytest.raises(XmlError) as caught:
        parse_xml(raw)
    assert message in caught.value.message
    assert caught.value.location == location


def test_writing_refuses_json_that_is_not_fhir() -> None:
    with pytest.raises(XmlError, match="unknown element 'nickname'"):
        to_xml({"resourceType": "Patient", "nickname": "x"})
    with pytest.raises(XmlError, match="not a valid JSON value for a boolean"):
        to_xml({"resourceType": "Patient", "active": "yes"})


# -- narrative the JSON door stored that is not strict XHTML: answered, never refused --------
def _div_of(xml: bytes) -> Any:
    node = fromstring(xml).find(f"{FHIR}text/{{{XHTML}}}div")
    assert node is not None
    return node


def _with_div(div: str) -> Json:
    return {"resourceType": "Patient", "text": {"status": "generated", "div": div}}


def test_a_stored_div_without_the_xhtml_namespace_is_put_in_it() -> None:
    node = _div_of(to_xml(_with_div("<div><p>hi</p></div>")))
    assert [c.tag for c in node] == [f"{{{XHTML}}}p"]


def test_html_entity_names_in_a_stored_div_become_characters() -> None:
    node = _div_of(to_xml(_with_div(f'<div xmlns="{XHTML}">a&nbsp;b &amp; c</div>')))
    assert node.text == "a\u00a0b & c"


def test_a_stored_div_that_is_not_xhtml_is_carried_as_text() -> None:
    node = _div_of(to_xml(_with_div("plain <b>text")))
    assert (node.text, list(node)) == ("plain <b>text", [])
