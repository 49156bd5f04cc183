"""Hostile and malformed requests against a real server on both stores: each gets a 4xx with an
OperationOutcome naming what is wrong, never a 500, and the server keeps serving.

Each case is also bounded in what it costs the server: CPU seconds and peak memory while it
runs (``bounded_work``).

The cases issue 13 lists (a participant given as a number, an extension nested 500 deep, a
contained resource of no FHIR type, a version number past int64, a JSON Patch pointer with a
bad escape, an id of ``..``), their families (digits ``int()`` refuses, huge page tokens and
ETags), and the narrative rules FHIR sets (the status value set, txt-1's element and attribute
lists, no script URLs, txt-2). A valid rich narrative and an instant with 12 fraction digits
(legal in R4) are accepted: the checks must not refuse what FHIR allows.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import web
from tests.support.server import ServerProcess, cleanup_dir, store_url

FHIR_JSON = {"content-type": "application/fhir+json"}
XHTML = "http://www.w3.org/1999/xhtml"


@pytest.fixture(scope="module")
def server(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_hostile")
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "none"}).start()
    yield proc
    proc.stop()
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


# The work one hostile request may cost the server: CPU seconds (all its threads) and peak
# resident memory while it runs. Not wall-clock time: a busy CI machine slows a case down
# without making it cost more.
MAX_CPU_SECONDS = 10.0
MAX_PEAK_RSS_MB = 768


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(autouse=True)
def bounded_work(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every case here: at most MAX_CPU_SECONDS of server CPU and MAX_PEAK_RSS_MB of peak
    memory (the peak is reset before the case: ``clear_refs`` 5)."""
    if "server" not in request.fixturenames:
        yield
        return
    server: ServerProcess = request.getfixturevalue("server")
    assert server.proc is not None
    pid = server.proc.pid
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")
    cpu = _cpu_seconds(pid)
    yield
    used, peak = _cpu_seconds(pid) - cpu, _peak_rss_mb(pid)
    assert used <= MAX_CPU_SECONDS, f"the case cost {used:.1f} s of server CPU"
    assert peak <= MAX_PEAK_RSS_MB, f"the server's memory peaked at {peak:.0f} MB"


def outcome(response: Any, status: int, *mentions: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    text = json.dumps(body)
    for m in mentions:
        assert m in text, (m, text[:300])
    return dict(body)


def raw(server: ServerProcess, request: bytes) -> tuple[int, bytes]:
    """One request written as given (no client normalises its path), the status and body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def patient(server: ServerProcess, **extra: Any) -> Any:
    return web.post(f"{server.base}/Patient", headers=FHIR_JSON,
                    json={"resourceType": "Patient", **extra})


def narrative(div: str, status: str = "generated") -> dict[str, Any]:
    return {"text": {"status": status, "div": div}}


def test_a_participant_given_as_a_number_is_a_422_naming_the_element(
        server: ServerProcess) -> None:
    response = web.post(f"{server.base}/Appointment", headers=FHIR_JSON, json={
        "resourceType": "Appointment", "status": "proposed", "participant": 5})
    outcome(response, 422, "Appointment.participant")


def test_an_extension_nested_500_deep_is_a_422_not_a_recursion_error(
        server: ServerProcess) -> None:
    inner = '{"url": "http://example.org/x", "valueString": "v"}'
    for _ in range(500):
        inner = '{"url": "http://example.org/x", "extension": [' + inner + "]}"
    response = web.post(f"{server.base}/Patient", headers=FHIR_JSON,
                        content='{"resourceType": "Patient", "extension": [' + inner + "]}")
    outcome(response, 422, "deeper than 64 levels")


def test_a_contained_resource_of_no_fhir_type_is_a_422_naming_it(server: ServerProcess) -> None:
    response = patient(server, contained=[{"resourceType": "Bogus", "id": "a"}])
    outcome(response, 422, "Patient.contained[0].resourceType", "Bogus")
    response = patient(server, contained=[{"id": "a"}])
    outcome(response, 422, "Patient.contained[0]", "resourceType")


def test_a_version_past_int64_is_not_found_not_an_overflow(server: ServerProcess) -> None:
    id_ = patient(server).json()["id"]
    response = web.get(f"{server.base}/Patient/{id_}/_history/99999999999999999999")
    outcome(response, 404, "no version")


def test_a_version_of_digits_int_refuses_is_not_found(server: ServerProcess) -> None:
    id_ = patient(server).json()["id"]
    status, body = raw(server, f"GET /fhir/Patient/{id_}/_history/%C2%B9 HTTP/1.1\r\n"
                               "Host: localhost\r\nConnection: close\r\n\r\n".encode())
    assert status == 404 and b"OperationOutcome" in body


def test_a_history_page_token_past_int64_is_a_400(server: ServerProcess) -> None:
    response = web.get(f"{server.base}/Patient/_history",
                       params={"_page": "99999999999999999999"})
    outcome(response, 400, "_page")


def test_a_count_of_digits_int_refuses_is_a_400(server: ServerProcess) -> None:
    outcome(web.get(f"{server.base}/Patient", params={"_count": "¹"}), 400, "_count")
    outcome(web.get(f"{server.base}/Patient/_history", params={"_count": "²"}), 400, "_count")


def test_an_if_match_past_int64_is_a_412_not_an_overflow(server: ServerProcess) -> None:
    id_ = patient(server).json()["id"]
    response = web.put(f"{server.base}/Patient/{id_}", json={"resourceType": "Patient",
                                                            "id": id_},
                       headers={**FHIR_JSON, "if-match": 'W/"99999999999999999999"'})
    outcome(response, 412)


def test_a_json_patch_pointer_with_a_bad_escape_is_a_400(server: ServerProcess) -> None:
    id_ = patient(server).json()["id"]
    response = web.patch(f"{server.base}/Patient/{id_}",
                         headers={"content-type": "application/json-patch+json"},
                         json=[{"op": "replace", "path": "/~2", "value": 1}])
    outcome(response, 400, "JSON Patch")


@pytest.mark.parametrize("bad_id", ["..", "."])
def test_an_id_that_is_a_path_segment_is_refused(server: ServerProcess, bad_id: str) -> None:
    body = json.dumps({"resourceType": "Patient", "id": bad_id}).encode()
    status, answer = raw(server, f"PUT /fhir/Patient/{bad_id} HTTP/1.1\r\nHost: localhost\r\n"
                                 f"Content-Type: application/fhir+json\r\n"
                                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                                 .encode() + body)
    assert 400 <= status < 500 and b"OperationOutcome" in answer, (status, answer[:200])


def test_a_narrative_status_outside_its_value_set_is_a_422(server: ServerProcess) -> None:
    response = patient(server, **narrative(f'<div xmlns="{XHTML}">x</div>', status="bogus"))
    outcome(response, 422, "Patient.text.status", "bogus")


@pytest.mark.parametrize(("div", "says"), [
    (f'<div xmlns="{XHTML}"><script>alert(1)</script></div>', "<script>"),
    (f'<div xmlns="{XHTML}"><p onclick="steal()">hi</p></div>', "onclick"),
    (f'<div xmlns="{XHTML}"><a href="javascript:steal()">hi</a></div>', "script URL"),
    (f'<div xmlns="{XHTML}"><iframe src="https://evil.example"/>x</div>', "<iframe>"),
    (f'<div xmlns="{XHTML}"><form><p>x</p></form></div>', "<form>"),
    ('<div>no namespace</div>', "XHTML"),
    (f'<p xmlns="{XHTML}">not a div</p>', "<div>"),
    (f'<div xmlns="{XHTML}"><p>unclosed</div>', "well-formed"),
    (f'<div xmlns="{XHTML}">   </div>', "txt-2"),
    (f'<!DOCTYPE d [<!ENTITY e "x">]><div xmlns="{XHTML}">&e;</div>', "well-formed"),
])
def test_narrative_xhtml_outside_the_fhir_rules_is_a_422(server: ServerProcess, div: str,
                                                         says: str) -> None:
    outcome(patient(server, **narrative(div)), 422, "Patient.text.div", says)


def test_a_contained_resources_narrative_is_held_to_the_same_rules(
        server: ServerProcess) -> None:
    response = patient(server, contained=[{
        "resourceType": "Organization", "id": "o1", "name": "North",
        **narrative(f'<div xmlns="{XHTML}"><script>x</script></div>')}])
    outcome(response, 422, "Patient.contained[0].text.div")


def test_a_rich_narrative_within_the_rules_is_accepted(server: ServerProcess) -> None:
    div = (f'<div xmlns="{XHTML}" lang="en" xml:lang="en"><h3>Visit</h3><table class="grid">'
           '<tr><th>When</th><td style="color: red">Monday</td></tr></table>'
           '<p>See <a href="https://example.org/info">details</a> '
           '<img src="#pic" alt="map"/></p><ul><li><b>bold</b> <i>it</i></li></ul></div>')
    response = patient(server, **narrative(div, status="additional"))
    assert response.status_code == 201, response.text


def test_an_instant_with_twelve_fraction_digits_is_accepted_and_booked(
        server: ServerProcess) -> None:
    response = web.post(f"{server.base}/Appointment", headers=FHIR_JSON, json={
        "resourceType": "Appointment", "status": "booked",
        "start": "2030-01-01T10:00:00.123456789012Z", "end": "2030-01-01T10:30:00Z",
        "participant": [{"actor": {"display": "Dr Who"}, "status": "accepted"}]})
    assert response.status_code == 201, response.text
    found = web.get(f"{server.base}/Appointment", params={"date": "2030-01-01"}).json()
    assert any(e["resource"]["id"] == response.json()["id"] for e in found.get("entry", []))


def test_the_server_still_serves_after_the_hostile_cases(server: ServerProcess) -> None:
    assert web.get(f"{server.base}/metadata").status_code == 200
    assert "Traceback" not in server.log()


def test_server_assigned_ids_are_random_not_counted(server: ServerProcess) -> None:
    ids = [patient(server).json()["id"] for _ in range(20)]
    assert len(set(ids)) == 20
    assert all(len(i) == 44 and int(i, 16) >= 0 for i in ids)
    # creation milliseconds, in order, then 128 random bits that no two ids share any part of
    # (a counter would share all but its last digits)
    assert all(abs(int(i[:12], 16) / 1000 - time.time()) < 600 for i in ids)
    assert len({i[12:28] for i in ids}) == 20 and len({i[28:] for i in ids}) == 20
    request_ids = {web.get(f"{server.base}/metadata").headers["x-request-id"] for _ in range(5)}
    assert len({r[:16] for r in request_ids}) == 5


@pytest.mark.parametrize("given", ["3f2c9a1e-8b7d-4c2a-9e1f-0a1b2c3d4e5f", "trace.01:span-2"])
def test_a_short_plain_request_id_is_kept(server: ServerProcess, given: str) -> None:
    response = web.get(f"{server.base}/metadata", headers={"x-request-id": given})
    assert response.headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["Jane Doe 1980-01-01", "x" * 65, "a\"b", "<script>",
                                   "caf\u00e9"])
def test_a_request_id_that_is_long_or_not_plain_is_replaced(server: ServerProcess,
                                                            given: str) -> None:
    response = web.get(f"{server.base}/metadata",
                       headers={"x-request-id": given.encode("utf-8")})
    answered = response.headers["x-request-id"]
    assert answered != given and len(answered) == 32


def test_a_host_outside_the_allow_list_is_a_400_and_plants_no_url(server: ServerProcess) -> None:
    status, body = raw(server, b"GET /fhir/Patient HTTP/1.1\r\nHost: evil.example\r\n"
                               b"Connection: close\r\n\r\n")
    assert status == 400 and b"--allowed-hosts" in body and b"evil.example/fhir" not in body
    status, body = raw(server, b"GET /fhir/metadata HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status == 400  # HTTP/1.1 without a Host


@pytest.mark.parametrize("host", [b"localhost", b"127.0.0.1:9", b"[::1]:8080", b"LOCALHOST"])
def test_the_loopback_names_are_allowed_by_default(server: ServerProcess, host: bytes) -> None:
    status, body = raw(server, b"GET /fhir/metadata HTTP/1.1\r\nHost: " + host +
                       b"\r\nConnection: close\r\n\r\n")
    assert status == 200, body[:200]


def test_allowed_hosts_and_base_url_decide_the_links(store_kind: str, mongo_uri: str | None
                                                     ) -> None:
    url = store_url(store_kind, mongo_uri, "fhir_sched_hosts")
    listed = ServerProcess(url, env={"FHIR_SCHED_AUTH": "none",
                                     "FHIR_SCHED_ALLOWED_HOSTS": "127.0.0.1,.clinic.example"}
                           ).start()
    try:
        status, _ = raw(listed, b"POST /fhir/Patient HTTP/1.1\r\nHost: fhir.clinic.example"
                           b"\r\nContent-Type: application/fhir+json\r\nContent-Length: 26\r\n"
                           b"Connection: close\r\n\r\n{\"resourceType\":\"Patient\"}")
        assert status == 201
        assert raw(listed, b"GET /fhir/metadata HTTP/1.1\r\nHost: localhost\r\n"
                           b"Connection: close\r\n\r\n")[0] == 400  # the list replaces the default
    finally:
        listed.stop()
    based = ServerProcess(url, env={"FHIR_SCHED_AUTH": "none",
                                    "FHIR_SCHED_BASE_URL": "https://fhir.clinic.example/fhir"}
                          ).start()
    try:
        with socket.create_connection(("127.0.0.1", based.port), timeout=10) as sock:
            sock.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: evil.example\r\n"
                         b"Content-Type: application/fhir+json\r\nContent-Length: 26\r\n"
                         b"Connection: close\r\n\r\n{\"resourceType\":\"Patient\"}")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert b" 201 " in data.split(b"\r\n", 1)[0]
        assert b"location: https://fhir.clinic.example/fhir/patient/" in data.lower()
        assert b"evil.example" not in data
    finally:
        based.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


# --- bounded work: refused before the search runs -----------------------------------------------
def test_an_id_list_past_the_limit_is_a_400_naming_it(server: ServerProcess) -> None:
    response = web.get(f"{server.base}/Patient",
                       params={"_id": ",".join(f"p{i}" for i in range(5000))})
    outcome(response, 400, "_id", "at most 100 values")
    ok = web.get(f"{server.base}/Patient", params={"_id": ",".join(f"p{i}" for i in range(100))})
    assert ok.status_code == 200


def test_too_many_sort_keys_is_a_400(server: ServerProcess) -> None:
    response = web.get(f"{server.base}/Appointment", params={"_sort": ",".join(["date"] * 200)})
    outcome(response, 400, "_sort", "at most 5 sort keys")


def test_too_many_parameters_is_a_400(server: ServerProcess) -> None:
    response = web.get(f"{server.base}/Patient", params=[("name", f"n{i}") for i in range(60)])
    outcome(response, 400, "at most 50 parameters")


def test_a_repeated_include_is_run_once_and_distinct_ones_are_bounded(
        server: ServerProcess) -> None:
    once = web.get(f"{server.base}/Appointment", params=[("_include", "Appointment:actor")])
    repeated = web.get(f"{server.base}/Appointment",
                       params=[("_include", "Appointment:actor")] * 1000)
    assert repeated.status_code == 200
    assert len(repeated.json().get("entry", [])) == len(once.json().get("entry", []))
    distinct = [("_include", f"Appointment:{p}") for p in (
        "actor", "patient", "practitioner", "location", "slot", "based-on",
        "reason-reference", "supporting-info")]
    distinct += [("_include:iterate", "Patient:general-practitioner"),
                 ("_include:iterate", "Patient:organization"),
                 ("_revinclude", "Provenance:target")]
    outcome(web.get(f"{server.base}/Appointment", params=distinct), 400, "at most 10")


def test_the_capability_statement_states_the_limits(server: ServerProcess) -> None:
    rest = web.get(f"{server.base}/metadata").json()["rest"][0]
    limits = {e["url"]: e["valueInteger"] for x in rest["extension"]
              if x["url"].endswith("/request-limits") for e in x["extension"]}
    assert limits["max-values-per-parameter"] == 100 and limits["max-includes"] == 10
    assert limits["max-nesting-depth"] == 64 and limits["max-body-bytes"] > 0
    assert "max-values-per-parameter 100" in rest["documentation"]


def _booked(start: str, end: str) -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": "booked", "start": start, "end": end,
            "participant": [{"actor": {"display": "Dr Who"}, "status": "accepted"}]}


def test_a_booking_ten_years_long_is_refused_before_anything_is_claimed(
        server: ServerProcess) -> None:
    response = web.post(f"{server.base}/Appointment", headers=FHIR_JSON,
                        json=_booked("2030-01-01T09:00:00Z", "2040-01-01T09:00:00Z"))
    outcome(response, 422, "Appointment.end", "at most 24 hours")
    day = web.post(f"{server.base}/Appointment", headers=FHIR_JSON,
                   json=_booked("2030-02-01T00:00:00Z", "2030-02-02T00:00:00Z"))
    assert day.status_code == 201, day.text  # a whole day is still a booking


def test_a_ten_year_wish_is_not_a_booking_and_is_kept(server: ServerProcess) -> None:
    response = web.post(f"{server.base}/Appointment", headers=FHIR_JSON, json={
        "resourceType": "Appointment", "status": "proposed",
        "requestedPeriod": [{"start": "2030-01-01T09:00:00Z", "end": "2040-01-01T09:00:00Z"}],
        "participant": [{"actor": {"display": "Dr Who"}, "status": "needs-action"}]})
    assert response.status_code == 201, response.text


# --- encodings --------------------------------------------------------------------------------
def test_a_gzip_body_is_accepted(server: ServerProcess) -> None:
    body = gzip.compress(b'{"resourceType": "Patient", "name": [{"family": "Zipped"}]}')
    response = web.post(f"{server.base}/Patient", content=body,
                        headers={**FHIR_JSON, "content-encoding": "gzip"})
    assert response.status_code == 201, response.text
    assert response.json()["name"][0]["family"] == "Zipped"


def test_a_gzip_bomb_is_refused_as_soon_as_it_grows_past_the_limit(
        server: ServerProcess) -> None:
    bomb = gzip.compress(b'{"resourceType": "Patient", "x": "' + b"a" * 50_000_000 + b'"}')
    assert len(bomb) < 100_000
    response = web.post(f"{server.base}/Patient", content=bomb,
                        headers={**FHIR_JSON, "content-encoding": "gzip"})
    outcome(response, 413, "once decompressed")


@pytest.mark.parametrize(("headers", "body", "status", "says"), [
    ({"content-encoding": "gzip"}, b"not gzip at all", 400, "not valid gzip"),
    ({"content-encoding": "br"}, b"{}", 415, "Content-Encoding"),
    ({"content-type": "application/fhir+json; charset=utf-16"},
     '{"resourceType": "Patient"}'.encode("utf-16"), 415, "UTF-8"),
    ({}, '{"resourceType": "Patient"}'.encode("utf-16"), 415, "UTF-16"),
])
def test_bodies_in_encodings_we_do_not_read_are_refused_clearly(
        server: ServerProcess, headers: dict[str, str], body: bytes, status: int,
        says: str) -> None:
    response = web.post(f"{server.base}/Patient", content=body, headers={**FHIR_JSON, **headers})
    outcome(response, status, says)


def test_a_utf8_byte_order_mark_is_tolerated(server: ServerProcess) -> None:
    response = web.post(f"{server.base}/Patient", headers=FHIR_JSON,
                        content=b'\xef\xbb\xbf{"resourceType": "Patient"}')
    assert response.status_code == 201, response.text


def test_responses_are_compressed_when_asked(server: ServerProcess) -> None:
    plain = web.get(f"{server.base}/metadata", headers={"accept-encoding": "identity"})
    zipped = web.get(f"{server.base}/metadata", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.json()["resourceType"] == "CapabilityStatement"  # httpx inflates it


def test_a_batch_of_more_entries_than_the_limit_is_refused_before_any_runs(
        server: ServerProcess) -> None:
    search = {"request": {"method": "GET", "url": "Patient?name=x"}}
    response = web.post(server.base, headers=FHIR_JSON, json={
        "resourceType": "Bundle", "type": "batch", "entry": [search] * 1001})
    outcome(response, 400, "too-costly", "at most 1000 entries", "Bundle.entry")
