"""The audit trail against a real server with auth on, on both stores: an AuditEvent for reads,
searches, writes, refusals and HL7 v2 messages, with who, what, when, outcome, request id and
the patient; valid R4; readable only with a scope naming AuditEvent; never writable; no PHI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import web
from tests.support.scheduling import hours, parameters, schedule, template
from tests.support.server import ServerProcess, cleanup_dir, free_port, store_url
from tests.support.smart import BackendClient, get_token, register_backend, token_form
from tests.test_hl7v2_serve import RawPeer, msa, s12

ADMIN = BackendClient.new("audit-admin", "ES384")
AUDITOR = BackendClient.new("auditor", "ES384")
READER = BackendClient.new("audit-reader", "ES384")
DESK = BackendClient.new("audit-desk", "ES384")
OVERBOOKED = "https://fhir-sched.org/fhir/StructureDefinition/overbooked"
FRAME_LIMIT = 64 * 1024
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@pytest.fixture(scope="module")
def server(store_kind: str, mongo_uri: str | None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_audit")
    keys = tmp_path_factory.mktemp("audit")
    for client, scope in ((ADMIN, "system/*.cruds"), (AUDITOR, "system/AuditEvent.rs"),
                          (READER, "system/*.rs"),
                          (DESK, "system/*.cruds fhir-sched/overbook")):
        register_backend(url, client, scope, keys)
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart",
                                   "FHIR_SCHED_MLLP_PORT": str(free_port()),
                                   "FHIR_SCHED_MLLP_MAX_FRAME_BYTES": str(FRAME_LIMIT)}).start()
    yield proc
    proc.stop()
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def h(client: BackendClient, server: ServerProcess, scope: str) -> dict[str, str]:
    return {"authorization": f"Bearer {get_token(server.base, client, scope)}"}


def events(server: ServerProcess, want: Callable[[dict[str, Any]], bool],
           **params: str) -> list[dict[str, Any]]:
    """AuditEvents matching ``want``, waiting for the read entries' batch to be written."""
    auditor = h(AUDITOR, server, "system/AuditEvent.rs")
    deadline = time.monotonic() + 10
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        bundle = web.get(f"{server.base}/AuditEvent", params={"_count": "1000", **params},
                         headers=auditor).json()
        found = [e["resource"] for e in bundle.get("entry", []) if want(e["resource"])]
        if found:
            return found
        time.sleep(0.2)
    return found


def request_id(event: dict[str, Any]) -> str | None:
    for entity in event.get("entity", []):
        if entity["type"].get("code") == "XrequestId":
            return str(entity["what"]["identifier"]["value"])
    return None


def refs(event: dict[str, Any]) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "reference" in e["what"]}


def new_patient(server: ServerProcess, family: str) -> str:
    r = web.post(f"{server.base}/Patient", headers=h(ADMIN, server, "system/*.cruds"),
                 json={"resourceType": "Patient", "name": [{"family": family}]})
    assert r.status_code == 201
    return f"Patient/{r.json()['id']}"


def test_a_read_is_audited_with_who_what_outcome_request_id_and_patient(
        server: ServerProcess, fhir_schema: Any) -> None:
    patient = new_patient(server, "Audited")
    read = web.get(f"{server.base}/{patient}", headers={
        **h(READER, server, "system/*.rs"), "x-request-id": "audit-read-1"})
    assert read.status_code == 200
    found = events(server, lambda e: request_id(e) == "audit-read-1")
    assert len(found) == 1
    event = found[0]
    assert fhir_schema.errors(event) == []
    assert event["subtype"][0]["code"] == "read"
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["type"]["code"] == "rest"
    assert patient in refs(event)
    assert {"identifier": {"value": READER.client_id}} in [a["who"] for a in event["agent"]]


def test_a_write_is_audited_in_its_own_transaction(server: ServerProcess) -> None:
    patient = new_patient(server, "Writer")
    created = web.post(f"{server.base}/Appointment", headers={
        **h(ADMIN, server, "system/*.cruds"), "x-request-id": "audit-write-1"}, json={
        "resourceType": "Appointment", "status": "proposed",
        "requestedPeriod": [{"start": "2034-01-01T09:00:00Z", "end": "2034-01-01T10:00:00Z"}],
        "participant": [{"actor": {"reference": patient}, "status": "needs-action"}]})
    assert created.status_code == 201
    found = events(server, lambda e: request_id(e) == "audit-write-1")
    assert [e["subtype"][0]["code"] for e in found] == ["create"]
    assert found[0]["action"] == "C"
    assert {f"Appointment/{created.json()['id']}", patient} <= refs(found[0])


def test_refusals_are_audited_as_failures(server: ServerProcess) -> None:
    denied = web.get(f"{server.base}/Patient", headers={
        **h(AUDITOR, server, "system/AuditEvent.rs"), "x-request-id": "audit-403"})
    assert denied.status_code == 403
    anonymous = web.get(f"{server.base}/Patient/x", headers={"x-request-id": "audit-401"})
    assert anonymous.status_code == 401
    for rid, who in (("audit-403", AUDITOR.client_id), ("audit-401", "anonymous")):
        found = events(server, lambda e, rid=rid: request_id(e) == rid)
        assert len(found) == 1, rid
        assert found[0]["outcome"] == "4"
        assert {"identifier": {"value": who}} in [a["who"] for a in found[0]["agent"]]


def test_a_search_is_audited_with_parameter_names_and_never_their_values(
        server: ServerProcess) -> None:
    response = web.get(f"{server.base}/Patient", params={"family": "Zyxwvutsrq",
                                                         "birthdate": "1961-02-03"},
                       headers={**h(READER, server, "system/*.rs"),
                                "x-request-id": "audit-search"})
    assert response.status_code == 200
    found = events(server, lambda e: request_id(e) == "audit-search")
    assert len(found) == 1
    text = json.dumps(found[0])
    assert "family" in text and "birthdate" in text
    assert "Zyxwvutsrq" not in text and "1961" not in text
    assert "Zyxwvutsrq" not in server.log()


def test_a_find_is_audited_as_an_operation_for_its_patient(server: ServerProcess) -> None:
    patient = new_patient(server, "Finder")
    response = web.get(f"{server.base}/Appointment/$find", params={
        "start": "2030-01-07T09:00:00Z", "end": "2030-01-07T17:00:00Z", "patient": patient},
        headers={**h(READER, server, "system/*.rs"), "x-request-id": "audit-find"})
    assert response.status_code == 200, response.text
    found = events(server, lambda e: request_id(e) == "audit-find")
    assert len(found) == 1
    assert found[0]["subtype"][0]["code"] == "$find"
    assert found[0]["type"]["code"] == "rest" and found[0]["action"] == "E"
    assert patient in refs(found[0])


def test_an_hl7v2_message_is_audited_as_an_import_by_its_sender(server: ServerProcess) -> None:
    port = int(server.env["FHIR_SCHED_MLLP_PORT"])
    peer = RawPeer(port)
    try:
        assert msa(peer.send(s12(7100)))[1] == "AA"
    finally:
        peer.close()
    found = events(server, lambda e: e["subtype"][0]["code"] == "hl7v2/SIU^S12")
    assert found, "no audit for the SIU message"
    event = found[0]
    assert event["type"]["code"] == "110107"
    assert event["outcome"] == "0"
    assert any("hl7v2/CLINIC/NORTH" in json.dumps(a["who"]) for a in event["agent"])


def test_tokens_issued_and_refused_are_audited_as_authentication_without_the_assertion(
        server: ServerProcess) -> None:
    token_url = f"{server.base.removesuffix('/fhir')}/auth/token"
    get_token(server.base, READER, "system/Slot.rs")
    forged = BackendClient.new("audit-reader", "ES384").assertion(token_url)
    refused = web.post(token_url, data=token_form(READER, token_url, "system/Slot.rs") | {
        "client_assertion": forged})
    assert refused.status_code in (400, 401)
    def reader_token(outcome: str) -> Callable[[dict[str, Any]], bool]:
        return lambda e: e["outcome"] == outcome and any(
            "audit-reader" in json.dumps(a["who"]) for a in e["agent"])

    refusals = events(server, reader_token("4"), subtype="auth/token")
    issued = events(server, reader_token("0"), subtype="auth/token")
    found = refusals + issued
    assert issued and refusals
    assert all(e["type"]["code"] == "110114" for e in found)
    assert "client_credentials: system/Slot.rs" in issued[0]["outcomeDesc"]
    assert "invalid_client" in refusals[0]["outcomeDesc"]
    assert forged not in json.dumps(found) and forged.split(".")[2] not in json.dumps(found)


def test_an_unreadable_hl7v2_frame_is_audited_as_a_refused_import(server: ServerProcess) -> None:
    port = int(server.env["FHIR_SCHED_MLLP_PORT"])
    peer = RawPeer(port)
    try:
        assert msa(peer.send(b"this is not HL7 at all"))[1] == "AR"
    finally:
        peer.close()
    found = events(server, lambda e: e["subtype"][0]["code"] == "hl7v2/unreadable")
    assert found, "no audit for the unreadable frame"
    assert found[0]["type"]["code"] == "110107" and found[0]["outcome"] == "4"
    assert "not HL7" not in json.dumps(found[0])  # what was sent is not repeated


def test_a_frame_refused_as_too_large_is_audited_by_its_sender_without_content(
        server: ServerProcess) -> None:
    port = int(server.env["FHIR_SCHED_MLLP_PORT"])
    big = s12(1, control="BIG1").replace(b"Doe^Jane1", b"Doe^" + b"Bulky" * FRAME_LIMIT)
    peer = RawPeer(port)
    try:
        assert msa(peer.send(big))[1:3] == ["AR", "BIG1"]
    finally:
        peer.close()
    found = events(server, lambda e: e["subtype"][0]["code"] == "hl7v2/too-large")
    assert found, "no audit for the refused frame"
    event = found[0]
    assert event["type"]["code"] == "110107" and event["outcome"] == "4"
    assert any("hl7v2/CLINIC/NORTH" in json.dumps(a["who"]) for a in event["agent"])
    assert str(len(big)) in json.dumps(event)
    assert "Bulky" not in json.dumps(event) and "Doe" not in json.dumps(event)


def _bookable(server: ServerProcess, admin: dict[str, str], sid: str, capacity: int = 1
              ) -> str:
    """A practitioner with a Schedule open every day, 08:00-18:00 UTC."""
    doctor = f"Practitioner/{sid}-dr"
    assert web.put(f"{server.base}/{doctor}", headers=admin, json={
        "resourceType": "Practitioner", "id": f"{sid}-dr"}).status_code in (200, 201)
    body = schedule(sid, doctor, template("UTC", hours(EVERY_DAY, "08:00:00", "18:00:00"),
                                          capacity=capacity))
    assert web.put(f"{server.base}/Schedule/{sid}", headers=admin,
                   json=body).status_code in (200, 201)
    return doctor


def test_hold_and_book_are_audited_as_operations_for_their_patient(
        server: ServerProcess) -> None:
    admin = h(ADMIN, server, "system/*.cruds")
    doctor = _bookable(server, admin, "audit-ops")
    patient = new_patient(server, "Booked")
    option = {"resourceType": "Appointment", "status": "proposed",
              "start": "2031-03-04T09:00:00Z", "end": "2031-03-04T09:30:00Z",
              "participant": [{"actor": {"reference": doctor}, "status": "needs-action"},
                              {"actor": {"reference": patient}, "status": "needs-action"}]}
    held = web.post(f"{server.base}/Appointment/$hold", headers={
        **admin, "x-request-id": "audit-hold"}, json=parameters(("appt-resource", option)))
    assert held.status_code == 200, held.text
    appt = next(e["resource"] for e in held.json()["entry"]
                if e["resource"]["resourceType"] == "Appointment")
    booked = web.post(f"{server.base}/Appointment/{appt['id']}/$book", headers={
        **admin, "x-request-id": "audit-book"}, json={"resourceType": "Parameters"})
    assert booked.status_code == 200, booked.text
    for rid, name, writes in (("audit-hold", "$hold", "create"), ("audit-book", "$book",
                                                                 "update")):
        found = events(server, lambda e, rid=rid: request_id(e) == rid)
        codes = sorted(e["subtype"][0]["code"] for e in found)
        assert codes == sorted([name, writes]), (rid, codes)
        op = next(e for e in found if e["subtype"][0]["code"] == name)
        assert op["subtype"][0]["system"] != "http://hl7.org/fhir/restful-interaction"
        assert {f"Appointment/{appt['id']}", patient} <= refs(op)


def test_a_booking_with_the_front_desk_override_is_audited_as_overbook(
        server: ServerProcess) -> None:
    admin, desk = h(ADMIN, server, "system/*.cruds"), h(DESK, server,
                                                        "system/*.cruds fhir-sched/overbook")
    doctor = _bookable(server, admin, "audit-ob")
    visit = {"resourceType": "Appointment", "status": "booked",
             "start": "2031-03-05T09:00:00Z", "end": "2031-03-05T09:30:00Z",
             "participant": [{"actor": {"reference": doctor}, "status": "accepted"}]}
    first = web.post(f"{server.base}/Appointment", headers={
        **admin, "x-request-id": "audit-plain"}, json=visit)
    assert first.status_code == 201
    extra = {**visit, "extension": [{"url": OVERBOOKED, "valueBoolean": True}]}
    forced = web.post(f"{server.base}/Appointment", headers={
        **desk, "x-request-id": "audit-overbook"}, json=extra)
    assert forced.status_code == 201, forced.text
    found = events(server, lambda e: request_id(e) == "audit-overbook")
    override = [e for e in found if e["subtype"][0]["code"] == "overbook"]
    assert len(override) == 1, found
    assert f"Appointment/{forced.json()['id']}" in refs(override[0])
    assert {"identifier": {"value": DESK.client_id}} in [a["who"] for a in override[0]["agent"]]
    # the plain booking before it used no override: the only overbook entry is the forced one
    listed = web.get(f"{server.base}/AuditEvent", params={"subtype": "overbook"},
                     headers=h(AUDITOR, server, "system/AuditEvent.rs")).json()
    assert [e["resource"]["id"] for e in listed["entry"]] == [override[0]["id"]]


def test_the_audit_trail_needs_a_scope_naming_auditevent(server: ServerProcess) -> None:
    wildcard = web.get(f"{server.base}/AuditEvent", headers=h(READER, server, "system/*.rs"))
    assert wildcard.status_code == 403
    named = web.get(f"{server.base}/AuditEvent",
                    headers=h(AUDITOR, server, "system/AuditEvent.rs"))
    assert named.status_code == 200


def test_audit_events_cannot_be_written_through_the_api(server: ServerProcess) -> None:
    admin = h(ADMIN, server, "system/*.cruds")
    some = events(server, lambda e: True)
    assert some
    target = f"{server.base}/AuditEvent/{some[0]['id']}"
    assert web.put(target, json=some[0], headers=admin).status_code == 405
    assert web.delete(target, headers=admin).status_code == 405
    assert web.post(f"{server.base}/AuditEvent", json=some[0],
                    headers=admin).status_code == 405
    assert web.get(target, headers=h(AUDITOR, server, "system/AuditEvent.rs")).json() == \
        some[0]


def test_audit_search_by_patient_and_date_and_paging(server: ServerProcess) -> None:
    patient = new_patient(server, "Paged")
    reader = h(READER, server, "system/*.rs")
    for n in range(3):
        assert web.get(f"{server.base}/{patient}", headers={
            **reader, "x-request-id": f"audit-page-{n}"}).status_code == 200
    found = events(server, lambda e: (request_id(e) or "").startswith("audit-page-"),
                   patient=patient)
    deadline = time.monotonic() + 5
    while len(found) < 3 and time.monotonic() < deadline:
        found = events(server, lambda e: (request_id(e) or "").startswith("audit-page-"),
                       patient=patient)
    assert len(found) == 3
    auditor = h(AUDITOR, server, "system/AuditEvent.rs")
    page = web.get(f"{server.base}/AuditEvent", params={"patient": patient, "_count": "2"},
                   headers=auditor).json()
    assert len(page["entry"]) == 2
    nxt = next(lk["url"] for lk in page["link"] if lk["relation"] == "next")
    rest = web.get(nxt, headers=auditor).json()
    seen = [e["resource"]["id"] for e in page["entry"] + rest.get("entry", [])]
    assert len(seen) == len(set(seen)) >= 4  # the create and three reads
    future = web.get(f"{server.base}/AuditEvent", params={"date": "ge2999-01-01"},
                     headers=auditor).json()
    assert future.get("entry", []) == []
