"""OpenAPI 3.1 for the FHIR API, derived from the CapabilityStatement, and a plain docs page.

Derived rather than written: the CapabilityStatement is already the server's own account of
what it does (interactions per type, search parameters, operations), so the two can never
disagree, and a type, parameter or operation added to the server appears in both at once.

What a generic OpenAPI tool needs and a CapabilityStatement leaves implicit is spelt out:
``{id}`` follows the FHIR id rule, successful answers are resources (a ``Bundle`` for searches,
histories and batches; the type itself for reads and writes), and every error is an
``OperationOutcome`` with at least one issue. Request bodies are described as resources of the
type (``resourceType`` fixed) and not field by field: the FHIR schema is the contract for
those, and the server validates against it.
"""

from __future__ import annotations

import html
from typing import Any

FHIR_JSON = "application/fhir+json"
ID_PATTERN = "^[A-Za-z0-9\\-\\.]{1,64}$"

_OUTCOME = {"type": "object", "required": ["resourceType", "issue"], "properties": {
    "resourceType": {"const": "OperationOutcome"},
    "issue": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["severity", "code"], "properties": {
            "severity": {"enum": ["fatal", "error", "warning", "information"]},
            "code": {"type": "string"}, "diagnostics": {"type": "string"}}}}}}
_BUNDLE = {"type": "object", "required": ["resourceType", "type"], "properties": {
    "resourceType": {"const": "Bundle"}, "type": {"type": "string"},
    "total": {"type": "integer", "minimum": 0},
    "entry": {"type": "array", "items": {"type": "object"}}}}
_ANY = {"type": "object", "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string"}}}


def _of(type_: str) -> dict[str, Any]:
    return {"type": "object", "required": ["resourceType"],
            "properties": {"resourceType": {"const": type_}, "id": {"type": "string"}}}


def _answer(description: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {FHIR_JSON: {"schema": schema}}
    return out


def _responses(ok: str, schema: dict[str, Any] | None, *codes: str) -> dict[str, Any]:
    out = {code: _answer(ok, schema) for code in codes or ("200",)}
    out["4XX"] = _answer("refused: the OperationOutcome says why",
                         {"$ref": "#/components/schemas/OperationOutcome"})
    out["5XX"] = _answer("the server could not answer now (503: retry)",
                         {"$ref": "#/components/schemas/OperationOutcome"})
    return out


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "pattern": ID_PATTERN}}


def _search_params(entry: dict[str, Any]) -> list[dict[str, Any]]:
    out = [{"name": p["name"], "in": "query", "required": False,
            "description": f"FHIR {p['type']} search parameter", "schema": {"type": "string"}}
           for p in entry.get("searchParam", [])]
    out += [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
            for n in ("_count", "_sort", "_include", "_revinclude", "_total", "_summary",
                      "_elements") if n not in {p["name"] for p in out}]
    return out


def openapi(statement: dict[str, Any], base_url: str, bearer: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``statement`` served at ``base_url``."""
    rest = statement["rest"][0]
    paths: dict[str, dict[str, Any]] = {}

    def add(path: str, method: str, op: dict[str, Any]) -> None:
        paths.setdefault(path, {})[method] = op

    add("/metadata", "get", {"operationId": "capabilities", "summary": "the CapabilityStatement",
                             "security": [],
                             "responses": _responses("the CapabilityStatement",
                                                     _of("CapabilityStatement"))})
    system = {i["code"] for i in rest.get("interaction", [])}
    if system & {"batch", "transaction"}:
        add("/", "post", {"operationId": "batch-or-transaction",
                          "summary": "a batch or transaction Bundle",
                          "requestBody": {"required": True, "content": {
                              FHIR_JSON: {"schema": {"$ref": "#/components/schemas/Bundle"}}}},
                          "responses": _responses("the response Bundle",
                                                  {"$ref": "#/components/schemas/Bundle"})})
    if "history-system" in system:
        add("/_history", "get", {"operationId": "history-system", "responses": _responses(
            "a history Bundle", {"$ref": "#/components/schemas/Bundle"})})
    for op in rest.get("operation", []):
        add(f"/${op['name']}", "get", _operation(op, "system"))
    for entry in rest.get("resource", []):
        t = entry["type"]
        kinds = {i["code"] for i in entry.get("interaction", [])}
        body = {"required": True, "content": {FHIR_JSON: {"schema": _of(t)}}}
        if "search-type" in kinds:
            add(f"/{t}", "get", {"operationId": f"search-{t}", "tags": [t],
                                 "parameters": _search_params(entry),
                                 "responses": _responses("a searchset Bundle",
                                                         {"$ref": "#/components/schemas/Bundle"})})
        if "create" in kinds:
            add(f"/{t}", "post", {"operationId": f"create-{t}", "tags": [t], "requestBody": body,
                                  "responses": _responses("created", _of(t), "200", "201")})
        one = f"/{t}/{{id}}"
        ident = [_path_param("id")]
        if "read" in kinds:
            add(one, "get", {"operationId": f"read-{t}", "tags": [t], "parameters": ident,
                             "responses": _responses("the current version", _of(t))})
        if "update" in kinds:
            add(one, "put", {"operationId": f"update-{t}", "tags": [t], "parameters": ident,
                             "requestBody": body,
                             "responses": _responses("updated", _of(t), "200", "201")})
        if "patch" in kinds:
            add(one, "patch", {"operationId": f"patch-{t}", "tags": [t], "parameters": ident,
                               "requestBody": {"required": True, "content": {
                                   "application/json-patch+json": {"schema": {
                                       "type": "array", "items": {"type": "object"}}}}},
                               "responses": _responses("patched", _of(t))})
        if "delete" in kinds:
            add(one, "delete", {"operationId": f"delete-{t}", "tags": [t], "parameters": ident,
                                "responses": _responses("deleted", None, "200", "204")})
        if "history-instance" in kinds:
            add(f"{one}/_history", "get", {"operationId": f"history-{t}", "tags": [t],
                                           "parameters": ident, "responses": _responses(
                                               "a history Bundle",
                                               {"$ref": "#/components/schemas/Bundle"})})
        if "vread" in kinds:
            add(f"{one}/_history/{{vid}}", "get", {
                "operationId": f"vread-{t}", "tags": [t],
                "parameters": [*ident, {"name": "vid", "in": "path", "required": True,
                                        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}}],
                "responses": _responses("that version", _of(t))})
        if "history-type" in kinds:
            add(f"/{t}/_history", "get", {"operationId": f"history-type-{t}", "tags": [t],
                                          "responses": _responses(
                                              "a history Bundle",
                                              {"$ref": "#/components/schemas/Bundle"})})
        for op in entry.get("operation", []):
            add(f"/{t}/${op['name']}", "get", _operation(op, t))
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "fhir-sched FHIR R4 API", "version": str(statement.get("version", "")),
                 "description": "Derived from the CapabilityStatement at /metadata, which is "
                                "the authoritative description. "
                                + str(rest.get("documentation", ""))},
        "servers": [{"url": base_url}],
        "paths": paths,
        "components": {"schemas": {"OperationOutcome": _OUTCOME, "Bundle": _BUNDLE,
                                   "Resource": _ANY}},
    }
    if bearer:
        doc["components"]["securitySchemes"] = {"smart": {
            "type": "http", "scheme": "bearer",
            "description": "a SMART on FHIR access token (see "
                           "/.well-known/smart-configuration)"}}
        doc["security"] = [{"smart": []}]
    return doc


def _operation(op: dict[str, Any], where: str) -> dict[str, Any]:
    """An operation invoked with GET and query parameters (the OperationDefinition, at its
    canonical URL, lists them; POST with a Parameters body works too)."""
    return {"operationId": f"{op['name']}-{where}", "summary": f"${op['name']}",
            "description": f"defined by {op['definition']}",
            "responses": _responses("the operation's result", {
                "$ref": "#/components/schemas/Resource"}, "200", "202")}


def docs_page(doc: dict[str, Any]) -> str:
    """A self-contained page listing every path and method: nothing fetched from elsewhere."""
    rows = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>"
                        f"{html.escape(path)}</code></td><td>"
                        f"{html.escape(str(op.get('summary') or op.get('operationId')))}"
                        "</td></tr>")
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>fhir-sched API</title>"
            "</head><body><h1>fhir-sched FHIR R4 API</h1><p>Machine-readable: "
            "<a href=\"openapi.json\">openapi.json</a> (OpenAPI 3.1) and the "
            "<a href=\"fhir/metadata\">CapabilityStatement</a>.</p><table>"
            "<tr><th>Method</th><th>Path</th><th>What</th></tr>" + "".join(rows)
            + "</table></body></html>")
