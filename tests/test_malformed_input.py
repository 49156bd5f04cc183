"""Malformed input never yields a 500: each mistake gets its status and an OperationOutcome.

One row per mistake a client can make, with the status FHIR (and HTTP) gives it and a fragment
the OperationOutcome must contain (the element path for invalid content, so the client can find
its error). Every request carries its own ``X-Request-Id``; the server logs only unexpected
failures, so finding none of the table's ids in the log proves no row reached an error handler
meant for bugs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from tests.support.client import fhir_client
from tests.support.fhir_assets import SchemaValidator
from tests.support.server import ServerProcess, cleanup_dir, store_url

FHIR_JSON = {"content-type": "application/fhir+json"}
SMALL_LIMIT = 2048


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str  # may use {patient}, {deleted}, {schedule}
    status: int
    expect: str  # must occur in the OperationOutcome (diagnostics or expression)
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    small_limit: bool = False  # send to the server started with a tiny body limit


def js(value: Any) -> bytes:
    return orjson.dumps(value)


SLOT_TIMES = {"start": "2031-05-01T09:00:00Z", "end": "2031-05-01T09:30:00Z"}


def slot(**fields: Any) -> bytes:
    return js({"resourceType": "Slot", "status": "free",
               "schedule": {"reference": "Schedule/{schedule}"}, **SLOT_TIMES, **fields})


def appointment(**fields: Any) -> bytes:
    return js({"resourceType": "Appointment", "status": "booked", **SLOT_TIMES,
               "participant": [{"actor": {"reference": "Patient/{patient}"},
                                "status": "accepted"}], **fields})


PATIENT = js({"resourceType": "Patient"})
DEEP = b'{"resourceType":"Patient","extension":' + b"[" * 5000 + b"]" * 5000 + b"}"

CASES = [
    # 400: not a FHIR resource at all
    Case("malformed-json", "POST", "/Patient", 400, "malformed JSON", b'{"resourceType":',
         FHIR_JSON),
    Case("empty-body", "POST", "/Patient", 400, "empty", b"", FHIR_JSON),
    Case("array-body", "POST", "/Patient", 400, "JSON object", b"[]", FHIR_JSON),
    Case("string-body", "POST", "/Patient", 400, "JSON object", b'"Patient"', FHIR_JSON),
    Case("null-body", "POST", "/Patient", 400, "JSON object", b"null", FHIR_JSON),
    Case("wrong-resource-type", "POST", "/Patient", 400, "resourceType",
         js({"resourceType": "Practitioner"}), FHIR_JSON),
    Case("missing-resource-type", "POST", "/Patient", 400, "resourceType", b"{}", FHIR_JSON),
    Case("id-mismatch", "PUT", "/Patient/{patient}", 400, "does not match",
         js({"resourceType": "Patient", "id": "someone-else"}), FHIR_JSON),
    Case("update-without-id", "PUT", "/Patient/{patient}", 400, "Patient.id", PATIENT,
         FHIR_JSON),
    Case("bad-id-characters", "PUT", "/Patient/bad_id!", 400, "invalid resource id",
         js({"resourceType": "Patient", "id": "bad_id!"}), FHIR_JSON),
    Case("id-too-long", "PUT", f"/Patient/{'x' * 65}", 400, "invalid resource id",
         js({"resourceType": "Patient", "id": "x" * 65}), FHIR_JSON),
    Case("deeply-nested-json", "POST", "/Patient", 400, "malformed JSON", DEEP, FHIR_JSON),
    Case("invalid-utf8", "POST", "/Patient", 400, "malformed JSON",
         b'{"resourceType":"Patient","name":[{"family":"M\xfcller"}]}', FHIR_JSON),
    Case("lone-surrogate", "POST", "/Patient", 400, "malformed JSON",
         b'{"resourceType":"Patient","name":[{"family":"\\ud800"}]}', FHIR_JSON),
    Case("number-overflow", "POST", "/Patient", 400, "malformed JSON",
         b'{"resourceType":"Patient","multipleBirthInteger":1e999}', FHIR_JSON),
    Case("form-body-on-create", "POST", "/Patient", 400, "_search", b"name=x",
         {"content-type": "application/x-www-form-urlencoded"}),
    Case("bad-if-match", "PUT", "/Patient/{patient}", 400, "If-Match",
         js({"resourceType": "Patient", "id": "{patient}"}), {**FHIR_JSON, "If-Match": "v1"}),
    Case("bad-if-none-match", "GET", "/Patient/{patient}", 400, "If-None-Match",
         headers={"If-None-Match": "latest"}),
    Case("bad-count", "GET", "/Patient?_count=many", 400, "_count"),
    Case("negative-history-count", "GET", "/Patient/_history?_count=-1", 400, "_count"),
    Case("bad-since", "GET", "/_history?_since=yesterday", 400, "_since"),
    Case("bad-date-search", "GET", "/Appointment?date=next-tuesday", 400, "date"),
    Case("unknown-search-param-strict", "GET", "/Patient?shoe-size=42", 400, "shoe-size",
         headers={"Prefer": "handling=strict"}),
    Case("if-none-exist-unknown-param", "POST", "/Patient", 400, "shoe-size", PATIENT,
         {**FHIR_JSON, "If-None-Exist": "shoe-size=42"}),
    Case("conditional-update-without-criteria", "PUT", "/Patient", 400, "criteria", PATIENT,
         FHIR_JSON),
    Case("transaction-entry-not-a-list", "POST", "/", 400, "Bundle.entry",
         js({"resourceType": "Bundle", "type": "transaction", "entry": {}}), FHIR_JSON),
    Case("transaction-entry-not-objects", "POST", "/", 400, "Bundle.entry",
         js({"resourceType": "Bundle", "type": "transaction", "entry": [1, 2]}), FHIR_JSON),
    Case("transaction-entry-without-request", "POST", "/", 400, "Bundle.entry[0].request",
         js({"resourceType": "Bundle", "type": "transaction",
             "entry": [{"resource": {"resourceType": "Patient"}}]}), FHIR_JSON),
    Case("transaction-if-none-exist-not-a-string", "POST", "/", 400, "ifNoneExist",
         js({"resourceType": "Bundle", "type": "transaction", "entry": [
             {"resource": {"resourceType": "Patient"},
              "request": {"method": "POST", "url": "Patient", "ifNoneExist": 7}}]}), FHIR_JSON),
    Case("transaction-full-url-not-a-string", "POST", "/", 400, "fullUrl",
         js({"resourceType": "Bundle", "type": "transaction", "entry": [
             {"fullUrl": {"x": 1}, "resource": {"resourceType": "Patient"},
              "request": {"method": "POST", "url": "Patient"}}]}), FHIR_JSON),
    Case("bundle-of-wrong-type", "POST", "/", 400, "Bundle.type",
         js({"resourceType": "Bundle", "type": "collection"}), FHIR_JSON),
    Case("base-post-not-a-bundle", "POST", "/", 400, "Bundle", PATIENT, FHIR_JSON),
    Case("json-patch-not-an-array", "PATCH", "/Patient/{patient}", 400, "array", b"{}",
         {"content-type": "application/json-patch+json"}),
    Case("json-patch-unknown-op", "PATCH", "/Patient/{patient}", 400, "JSON Patch",
         js([{"op": "frobnicate", "path": "/gender"}]),
         {"content-type": "application/json-patch+json"}),
    # 404 / 410
    Case("unknown-type", "GET", "/Observation/1", 404, "Observation"),
    Case("made-up-type", "POST", "/Foo", 404, "Foo", PATIENT, FHIR_JSON),
    Case("path-under-metadata", "GET", "/metadata/extra", 404, "metadata"),
    Case("unknown-id", "GET", f"/Patient/{uuid.uuid4().hex}", 404, "not known"),
    Case("unknown-version", "GET", "/Patient/{patient}/_history/99", 404, "version"),
    Case("deleted", "GET", "/Patient/{deleted}", 410, "deleted"),
    # 422: invalid content, naming the element
    Case("bad-status-code", "POST", "/Slot", 422, "Slot.status", slot(status="maybe"),
         FHIR_JSON),
    Case("bad-instant", "POST", "/Slot", 422, "Slot.start",
         slot(start="2031-13-01T09:00:00Z"), FHIR_JSON),
    Case("instant-without-offset", "POST", "/Slot", 422, "Slot.end",
         slot(end="2031-05-01T09:30:00"), FHIR_JSON),
    Case("bad-date", "POST", "/Patient", 422, "Patient.birthDate",
         js({"resourceType": "Patient", "birthDate": "1990-02-30"}), FHIR_JSON),
    Case("boolean-as-string", "POST", "/Patient", 422, "Patient.active",
         js({"resourceType": "Patient", "active": "yes"}), FHIR_JSON),
    Case("integer-as-string", "POST", "/Appointment", 422, "Appointment.minutesDuration",
         appointment(minutesDuration="30"), FHIR_JSON),
    Case("date-as-number", "POST", "/Patient", 422, "Patient.birthDate",
         js({"resourceType": "Patient", "birthDate": 19900101}), FHIR_JSON),
    Case("object-for-array", "POST", "/Patient", 422, "Patient.name",
         js({"resourceType": "Patient", "name": {"family": "X"}}), FHIR_JSON),
    Case("string-for-object", "POST", "/Slot", 422, "Slot.schedule",
         slot(schedule="Schedule/1"), FHIR_JSON),
    Case("null-element", "POST", "/Patient", 422, "Patient.gender",
         js({"resourceType": "Patient", "gender": None}), FHIR_JSON),
    Case("unknown-element", "POST", "/Patient", 422, "Patient.shoeSize",
         js({"resourceType": "Patient", "shoeSize": 42}), FHIR_JSON),
    Case("slot-end-before-start", "POST", "/Slot", 422, "Slot.end",
         slot(end="2031-05-01T08:00:00Z"), FHIR_JSON),
    Case("appointment-start-without-end", "POST", "/Appointment", 422, "app-2",
         js({"resourceType": "Appointment", "status": "booked",
             "start": "2031-05-01T09:00:00Z",
             "participant": [{"actor": {"reference": "Patient/{patient}"},
                              "status": "accepted"}]}), FHIR_JSON),
    Case("appointment-participant-empty", "POST", "/Appointment", 422,
         "Appointment.participant[0]",
         appointment(participant=[{"status": "accepted"}]), FHIR_JSON),
    Case("unresolvable-slot-schedule", "POST", "/Slot", 422, "Slot.schedule.reference",
         slot(schedule={"reference": f"Schedule/{uuid.uuid4().hex}"}), FHIR_JSON),
    Case("reference-to-deleted", "POST", "/Appointment", 422,
         "Appointment.participant[0].actor.reference",
         appointment(participant=[{"actor": {"reference": "Patient/{deleted}"},
                                   "status": "accepted"}]), FHIR_JSON),
    Case("missing-contained", "POST", "/Patient", 422, "#nowhere",
         js({"resourceType": "Patient", "generalPractitioner": [{"reference": "#nowhere"}]}),
         FHIR_JSON),
    Case("urn-reference-outside-transaction", "POST", "/Patient", 422,
         "Patient.generalPractitioner[0].reference",
         js({"resourceType": "Patient",
             "generalPractitioner": [{"reference": f"urn:uuid:{uuid.uuid4()}"}]}), FHIR_JSON),
    Case("patch-result-invalid", "PATCH", "/Patient/{patient}", 422, "Patient.gender",
         js([{"op": "add", "path": "/gender", "value": "robot"}]),
         {"content-type": "application/json-patch+json"}),
    # 415 / 406 / 405 / 413
    Case("xml-bad-boolean", "POST", "/Patient", 400, "Patient.active",
         b'<Patient xmlns="http://hl7.org/fhir"><active value="yes"/></Patient>',
         {"content-type": "application/fhir+xml"}),
    Case("xml-without-namespace", "PUT", "/Patient/{patient}", 400, "FHIR namespace",
         b"<Patient/>", {"content-type": "application/xml"}),
    Case("xml-patch", "PATCH", "/Patient/{patient}", 415, "JSON Patch",
         b'<Patient xmlns="http://hl7.org/fhir"/>', {"content-type": "application/fhir+xml"}),
    Case("text-body", "POST", "/Patient", 415, "text/plain", b"Patient",
         {"content-type": "text/plain"}),
    Case("patch-with-fhir-json", "PATCH", "/Patient/{patient}", 415,
         "application/json-patch+json", js([]), FHIR_JSON),
    Case("format-html", "GET", "/Patient/{patient}?_format=html", 406, "_format"),
    Case("accept-html", "GET", "/metadata", 406, "text/html", headers={"accept": "text/html"}),
    Case("patch-on-type", "PATCH", "/Patient", 405, "PATCH"),
    Case("delete-metadata", "DELETE", "/metadata", 405, "DELETE"),
    Case("post-to-history", "POST", "/Patient/_history", 405, "POST", PATIENT, FHIR_JSON),
    Case("body-over-limit", "POST", "/Patient", 413, "limit",
         js({"resourceType": "Patient", "name": [{"family": "x" * SMALL_LIMIT}]}), FHIR_JSON,
         small_limit=True),
]


@pytest.fixture(scope="module")
def small_server(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    """A server whose body limit is tiny, for the 413 rows."""
    url = store_url(store_kind, mongo_uri, "fhir_sched_small_limit")
    proc = ServerProcess(url, env={"FHIR_SCHED_MAX_BODY_BYTES": str(SMALL_LIMIT)}).start()
    yield proc
    proc.stop()
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@pytest.fixture(scope="module")
async def ids(server: ServerProcess, fhir_schema: SchemaValidator
              ) -> AsyncIterator[dict[str, str]]:
    """A live Patient, a deleted Patient and a Schedule for the rows to point at."""
    async with fhir_client(server.base, fhir_schema) as c:
        live = (await c.post("/Patient", json={"resourceType": "Patient"})).json()["id"]
        dead = (await c.post("/Patient", json={"resourceType": "Patient"})).json()["id"]
        assert (await c.delete(f"/Patient/{dead}")).status_code == 204
        sched = (await c.post("/Schedule", json={"resourceType": "Schedule",
                                                  "actor": [{"display": "Room 1"}]})).json()
        yield {"patient": live, "deleted": dead, "schedule": sched["id"]}


def fill(text: str, ids: dict[str, str]) -> str:
    for key, value in ids.items():
        text = text.replace("{" + key + "}", value)
    return text


def request_id(case: Case) -> str:
    return f"malformed-{case.name}-{uuid.uuid4().hex[:8]}"


SENT: list[str] = []  # request ids of the table's rows, checked against the log afterwards


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_malformed_input_gets_its_status_and_an_outcome(
        case: Case, ids: dict[str, str], server: ServerProcess, small_server: ServerProcess,
        fhir_schema: SchemaValidator) -> None:
    target = small_server if case.small_limit else server
    rid = request_id(case)
    SENT.append(rid)
    body = fill(case.body.decode("utf-8", "surrogateescape"), ids).encode(
        "utf-8", "surrogateescape") if case.body is not None else None
    headers = {"X-Request-Id": rid, **case.headers}
    async with fhir_client(target.base, fhir_schema) as c:
        r = await c.request(case.method, fill(case.path, ids), content=body, headers=headers)
    assert r.status_code == case.status, f"{case.name}: {r.status_code} {r.text[:300]}"
    oo = r.json()
    assert oo["resourceType"] == "OperationOutcome"
    assert oo["issue"][0]["severity"] in ("error", "fatal")
    text = orjson.dumps(oo).decode()
    assert case.expect in text, f"{case.name}: {case.expect!r} not in {text[:300]}"
    if case.status == 405:
        assert r.headers.get("allow")


async def test_body_over_limit_without_content_length_is_413(
        small_server: ServerProcess, fhir_schema: SchemaValidator) -> None:
    """A chunked body declares no length, so the limit must be enforced while reading."""
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * (SMALL_LIMIT // 2)

    async with fhir_client(small_server.base, fhir_schema) as c:
        r = await c.post("/Patient", content=chunks(), headers=FHIR_JSON)
    assert r.status_code == 413
    assert r.json()["issue"][0]["code"] == "too-costly"


def test_the_table_has_at_least_25_cases_and_unique_names() -> None:
    assert len(CASES) >= 25
    assert len({c.name for c in CASES}) == len(CASES)


async def test_after_the_table_the_server_still_serves_and_logged_no_failure(
        fhir: httpx.AsyncClient, ids: dict[str, str], server: ServerProcess,
        small_server: ServerProcess) -> None:
    r = await fhir.get(f"/Patient/{ids['patient']}")
    assert r.status_code == 200
    logs = server.log() + small_server.log()
    assert not [rid for rid in SENT if rid in logs]
