"""Operating the server: Prometheus metrics at ``/metrics`` and one JSON log line per request,
against a real server process on both adapters.

The metrics count requests by interaction, type and status (labels bounded whatever the
client sends), booking refusals by rule, pending holds, store latency and HL7 v2 ACK codes;
with auth on they need the static scrape token. The request log names the route template and
never the path or query values, so the patient names and birth dates a client searches by or
submits do not reach any log line, tracebacks included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.support import web
from tests.support.server import ServerProcess, cleanup_dir, free_port, served, store_url

FHIR_JSON = {"content-type": "application/fhir+json"}
SCRAPE = "s3cret-scrape-token"
NAME, BIRTH = "Quizzlewick", "1961-07-23"


@pytest.fixture(scope="module")
def server(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    env = {"FHIR_SCHED_AUTH": "none", "FHIR_SCHED_LOG_LEVEL": "info",
           "FHIR_SCHED_LOG_FORMAT": "json", "FHIR_SCHED_MLLP_PORT": str(free_port())}
    with served(store_kind, mongo_uri, "fhir_sched_observe", env) as proc:
        yield proc


def root(server: ServerProcess) -> str:
    return server.base.removesuffix("/fhir")


def samples(server: ServerProcess, headers: dict[str, str] | None = None) -> dict[str, float]:
    response = web.get(f"{root(server)}/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def count(s: dict[str, float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in s.items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        have = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if p)
        if all(have.get(k) == f'"{v}"' for k, v in labels.items()):
            total += value
    return total


def log_lines(server: ServerProcess) -> list[dict[str, object]]:
    out = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def lines_of(server: ServerProcess, request_id: str) -> list[dict[str, object]]:
    """The log lines of one request, waited for: the line is written after the response, by
    the log thread."""
    deadline = time.monotonic() + 10
    while True:
        mine = [ln for ln in log_lines(server) if ln.get("request_id") == request_id]
        if mine or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


def test_requests_are_counted_by_interaction_type_and_status(server: ServerProcess) -> None:
    before = samples(server)
    created = web.post(f"{server.base}/Patient", headers=FHIR_JSON,
                       json={"resourceType": "Patient", "name": [{"family": "Counted"}]})
    assert created.status_code == 201
    pid = created.json()["id"]
    assert web.get(f"{server.base}/Patient/{pid}").status_code == 200
    assert web.get(f"{server.base}/Patient/{pid}").status_code == 200
    after = samples(server)
    name = "fhir_sched_http_requests_total"
    assert count(after, name, interaction="read", type="Patient", status="200") - count(
        before, name, interaction="read", type="Patient", status="200") == 2
    assert count(after, name, interaction="create", type="Patient", status="201") - count(
        before, name, interaction="create", type="Patient", status="201") == 1
    assert count(after, "fhir_sched_http_request_duration_seconds_count",
                 interaction="read") >= 2
    assert count(after, "fhir_sched_store_operation_duration_seconds_count",
                 operation="atomic") >= 1


def test_made_up_types_and_paths_do_not_grow_the_label_set(server: ServerProcess) -> None:
    for n in range(5):
        web.get(f"{server.base}/Made{n}Up/1")
        web.get(f"{root(server)}/scan/{n}/wp-login.php")
    after = samples(server)
    assert not any("Made" in key or "wp-login" in key for key in after)
    assert count(after, "fhir_sched_http_requests_total", interaction="read", type="other",
                 status="404") >= 5
    assert count(after, "fhir_sched_http_requests_total", interaction="other",
                 status="404") >= 5


def test_a_refused_double_booking_is_counted_by_its_rule(server: ServerProcess) -> None:
    practitioner = web.post(f"{server.base}/Practitioner", headers=FHIR_JSON,
                            json={"resourceType": "Practitioner"}).json()["id"]

    def book() -> int:
        return web.post(f"{server.base}/Appointment", headers=FHIR_JSON, json={
            "resourceType": "Appointment", "status": "booked",
            "start": "2031-03-03T09:00:00Z", "end": "2031-03-03T09:30:00Z",
            "participant": [{"actor": {"reference": f"Practitioner/{practitioner}"},
                             "status": "accepted"}]}).status_code

    before = count(samples(server), "fhir_sched_booking_conflicts_total", rule="capacity",
                   outcome="refused")
    assert book() == 201
    assert book() == 409
    after = count(samples(server), "fhir_sched_booking_conflicts_total", rule="capacity",
                  outcome="refused")
    assert after - before == 1


def test_pending_holds_are_read_at_scrape_time(server: ServerProcess) -> None:
    before = count(samples(server), "fhir_sched_holds_pending")
    held = web.post(f"{server.base}/Appointment", headers=FHIR_JSON, json={
        "resourceType": "Appointment", "status": "pending",
        "start": "2031-04-04T09:00:00Z", "end": "2031-04-04T09:30:00Z",
        "participant": [{"actor": {"display": "Dr Hold"}, "status": "accepted"}]})
    assert held.status_code == 201, held.text
    assert count(samples(server), "fhir_sched_holds_pending") == before + 1


def test_hl7v2_messages_are_counted_by_event_and_ack_code(server: ServerProcess) -> None:
    before = samples(server)
    garbage = web.post(f"{root(server)}/hl7v2", content=b"MSH|^~\\&|A|B|C|D|2024||SIU^S12|1|"
                       b"P|2.5\rSCH|", headers={"content-type": "x-application/hl7-v2+er7"})
    assert garbage.status_code == 200
    after = samples(server)
    name = "fhir_sched_hl7v2_messages_total"
    assert count(after, name, door="http", event="S12") - count(
        before, name, door="http", event="S12") == 1


def test_each_request_is_one_json_line_with_its_route_template(server: ServerProcess) -> None:
    response = web.get(f"{server.base}/Patient", params={"family": NAME},
                       headers={"x-request-id": "trace-me-42"})
    assert response.status_code == 200
    lines = lines_of(server, "trace-me-42")
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["logger"] == "fhir_sched.access" and line["level"] == "INFO"
    assert line["method"] == "GET" and line["route"] == "/fhir/{type}"
    assert line["status"] == 200 and line["interaction"] == "search-type"
    assert isinstance(line["duration_ms"], float)


def test_no_log_line_holds_the_names_and_birth_dates_clients_sent(
        server: ServerProcess) -> None:
    web.get(f"{server.base}/Patient", params={"family": NAME, "birthdate": BIRTH})
    web.post(f"{server.base}/Patient", headers=FHIR_JSON, json={
        "resourceType": "Patient", "name": [{"family": NAME}], "birthDate": BIRTH})
    web.post(f"{server.base}/Patient", headers=FHIR_JSON, json={  # refused: a bad date
        "resourceType": "Patient", "name": [{"family": NAME}], "birthDate": f"{BIRTH}x"})
    web.get(f"{server.base}/Patient/{NAME}")
    web.post(f"{root(server)}/hl7v2", headers={"content-type": "x-application/hl7-v2+er7"},
             content=f"MSH|^~\\&|A|B|C|D|2024||SIU^S12|9|P|2.5\rPID|1||1||{NAME}^Ann||"
                     f"{BIRTH.replace('-', '')}\r".encode())
    web.get(f"{server.base}/metadata", headers={"x-request-id": "phi-end"})
    assert lines_of(server, "phi-end")  # everything before it has been written
    text = server.log()
    assert "Traceback" not in text
    assert NAME not in text and BIRTH not in text and BIRTH.replace("-", "") not in text


def test_metrics_need_the_scrape_token_when_auth_is_on(store_kind: str,
                                                       mongo_uri: str | None) -> None:
    url = store_url(store_kind, mongo_uri, "fhir_sched_observe_auth")
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart",
                                   "FHIR_SCHED_METRICS_TOKEN": SCRAPE}).start()
    try:
        denied = web.get(f"{root(proc)}/metrics")
        assert denied.status_code == 401 and "bearer" in denied.headers["www-authenticate"
                                                                        ].lower()
        assert web.get(f"{root(proc)}/metrics", headers={
            "authorization": "Bearer wrong"}).status_code == 401
        got = samples(proc, {"authorization": f"Bearer {SCRAPE}"})
        assert "process_resident_memory_bytes" in got
    finally:
        proc.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def test_without_a_scrape_token_metrics_say_which_setting_opens_them(
        store_kind: str, mongo_uri: str | None) -> None:
    url = store_url(store_kind, mongo_uri, "fhir_sched_observe_closed")
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart"}).start()
    try:
        denied = web.get(f"{root(proc)}/metrics")
        assert denied.status_code == 401 and "FHIR_SCHED_METRICS_TOKEN" in denied.text
    finally:
        proc.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def test_a_client_that_disconnects_mid_body_is_an_info_line_not_an_error(
        server: ServerProcess) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/fhir+json\r\nContent-Length: 5000\r\n"
                     b"X-Request-Id: gone-away-7\r\n\r\n{\"resourceType\":")
        time.sleep(0.3)
    mine = lines_of(server, "gone-away-7")
    assert [(ln["level"], ln["msg"]) for ln in mine] == [("INFO", "client disconnected")]
    assert not [ln for ln in log_lines(server) if ln["level"] == "ERROR"]


def test_the_event_loop_lag_is_measured(server: ServerProcess) -> None:
    deadline = time.monotonic() + 10
    lag = 0.0
    while time.monotonic() < deadline and lag < 3:
        lag = count(samples(server), "fhir_sched_event_loop_lag_seconds_count")
        time.sleep(0.2)
    assert lag >= 3  # ten samples a second
    assert count(samples(server), "fhir_sched_event_loop_lag_seconds_bucket", le="+Inf") >= 3
