"""Subscriptions (issue 15, item 3), per the Subscriptions R5 Backport IG 1.1.0 for R4: topics
for appointments booked, changed and cancelled and time freed; rest-hook with handshake and
heartbeat; id-only and full-resource payloads; filters; ``$status`` and ``$events``; event
numbers with no gaps across a restart; retries and the error state. Against a real server on
both stores and a real HTTP receiver."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.support import web
from tests.support.server import ServerProcess, cleanup_dir, store_url
from tests.support.sinks import Hit, HttpSink

FHIR_JSON = {"content-type": "application/fhir+json"}
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://fhir-sched.org/fhir/SubscriptionTopic/"
ENV = {"FHIR_SCHED_AUTH": "none", "FHIR_SCHED_SUBSCRIPTION_ENDPOINTS": "http://127.0.0.1",
       "FHIR_SCHED_SUBSCRIPTION_MAX_ATTEMPTS": "3", "FHIR_SCHED_SUBSCRIPTION_RETRY_SECONDS": "1"}


def _refuse_broken(hit: Hit, n: int) -> int:
    return 500 if hit.path.startswith("/broken") else 200


@pytest.fixture(scope="module")
def hook(store_kind: str) -> Iterator[HttpSink]:
    with HttpSink(_refuse_broken) as sink:
        yield sink


@pytest.fixture(scope="module")
def store(store_kind: str, mongo_uri: str | None) -> Iterator[str]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_subscriptions")
    yield url
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@pytest.fixture(scope="module")
def server(store: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(store, env=ENV).start()
    yield proc
    proc.stop()


def _patient(server: ServerProcess) -> str:
    r = web.post(f"{server.base}/Patient", headers=FHIR_JSON, json={"resourceType": "Patient"})
    assert r.status_code == 201, r.text
    return f"Patient/{r.json()['id']}"


def _subscription(topic: str, endpoint: str, *, filters: tuple[str, ...] = (),
                  content: str = "id-only", heartbeat: int | None = None,
                  headers: tuple[str, ...] = ()) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint,
                               "payload": "application/fhir+json",
                               "_payload": {"extension": [{"url": BACKPORT +
                                                           "backport-payload-content",
                                                           "valueCode": content}]}}
    if heartbeat is not None:
        channel["extension"] = [{"url": BACKPORT + "backport-heartbeat-period",
                                 "valueUnsignedInt": heartbeat}]
    if headers:
        channel["header"] = list(headers)
    body: dict[str, Any] = {"resourceType": "Subscription", "status": "requested",
                            "reason": "test", "criteria": TOPIC + topic, "channel": channel}
    if filters:
        body["_criteria"] = {"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                            "valueString": f} for f in filters]}
    return body


def _subscribe(server: ServerProcess, hook: HttpSink, topic: str, path: str, **kw: Any
               ) -> dict[str, Any]:
    r = web.post(f"{server.base}/Subscription", headers=FHIR_JSON,
                 json=_subscription(topic, f"http://127.0.0.1:{hook.port}/{path}", **kw))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    params = bundle["entry"][0]["resource"]["parameter"]
    out: dict[str, Any] = {"events": []}
    for p in params:
        if p["name"] == "notification-event":
            out["events"].append({q["name"]: next(v for k, v in q.items() if k != "name")
                                  for q in p["part"]})
        else:
            out[p["name"]] = next(v for k, v in p.items() if k != "name")
    return out


def _at(hook: HttpSink, path: str, kind: str | None = None, n: int = 1,
        timeout: float = 15.0) -> list[dict[str, Any]]:
    def mine(hits: list[Hit]) -> list[dict[str, Any]]:
        found = [orjson.loads(h.body) for h in hits if h.path == f"/{path}"]
        return [b for b in found if kind is None or _status_of(b)["type"] == kind]

    hook.wait_for(lambda hits: len(mine(hits)) >= n, timeout)
    return mine(hook.hits)


def _active(server: ServerProcess, sub_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        body = web.get(f"{server.base}/Subscription/{sub_id}").json()
        if body["status"] != "requested" or time.monotonic() > deadline:
            return dict(body)
        time.sleep(0.1)


def _book(server: ServerProcess, patient: str, start: str = "2031-07-01T14:00:00Z",
          end: str = "2031-07-01T14:30:00Z") -> dict[str, Any]:
    r = web.post(f"{server.base}/Appointment", headers=FHIR_JSON, json={
        "resourceType": "Appointment", "status": "booked", "start": start, "end": end,
        "participant": [{"actor": {"reference": patient}, "status": "accepted"}]})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_new_subscription_is_activated_by_a_successful_handshake(
        server: ServerProcess, hook: HttpSink) -> None:
    sub = _subscribe(server, hook, "appointment-booked", "handshake")
    assert sub["status"] == "requested"
    [handshake] = _at(hook, "handshake", "handshake")
    assert handshake["type"] == "history"
    status = _status_of(handshake)
    assert status["topic"] == TOPIC + "appointment-booked"
    assert status["subscription"]["reference"].endswith(f"Subscription/{sub['id']}")
    assert status["events-since-subscription-start"] == "0"
    assert _active(server, sub["id"])["status"] == "active"


def test_a_booking_notifies_a_subscription_filtered_to_its_patient_only(
        server: ServerProcess, hook: HttpSink) -> None:
    mine, other = _patient(server), _patient(server)
    sub = _subscribe(server, hook, "appointment-booked", "filtered",
                     filters=(f"Appointment?patient={mine}",), content="full-resource")
    assert _active(server, sub["id"])["status"] == "active"
    _book(server, other)
    appt = _book(server, mine, "2031-07-02T14:00:00Z", "2031-07-02T14:30:00Z")
    [note] = _at(hook, "filtered", "event-notification")
    status = _status_of(note)
    assert [e["event-number"] for e in status["events"]] == ["1"]
    assert status["events"][0]["focus"]["reference"].endswith(f"Appointment/{appt['id']}")
    focus = note["entry"][1]
    assert focus["resource"]["id"] == appt["id"] and focus["resource"]["status"] == "booked"
    assert focus["fullUrl"].endswith(f"Appointment/{appt['id']}")
    time.sleep(0.5)
    assert len(_at(hook, "filtered", "event-notification")) == 1  # not the other patient's


def test_an_id_only_notification_names_the_focus_without_its_content(
        server: ServerProcess, hook: HttpSink) -> None:
    patient = _patient(server)
    sub = _subscribe(server, hook, "appointment-booked", "idonly",
                     filters=(f"Appointment?patient={patient}",))
    _active(server, sub["id"])
    appt = _book(server, patient)
    [note] = _at(hook, "idonly", "event-notification")
    assert note["entry"][1]["fullUrl"].endswith(f"Appointment/{appt['id']}")
    assert "resource" not in note["entry"][1]


def test_a_cancellation_is_told_to_cancelled_and_time_freed_subscribers(
        server: ServerProcess, hook: HttpSink) -> None:
    patient = _patient(server)
    for topic in ("appointment-cancelled", "slot-freed", "appointment-changed"):
        _active(server, _subscribe(server, hook, topic, topic,
                                   filters=(f"Appointment?patient={patient}",))["id"])
    appt = _book(server, patient)
    moved = {**appt, "start": "2031-07-03T15:00:00Z", "end": "2031-07-03T15:30:00Z"}
    r = web.put(f"{server.base}/Appointment/{appt['id']}", headers=FHIR_JSON, json=moved)
    assert r.status_code == 200, r.text
    assert len(_at(hook, "appointment-changed", "event-notification")) == 1
    r = web.put(f"{server.base}/Appointment/{appt['id']}", headers=FHIR_JSON,
                json={**r.json(), "status": "cancelled"})
    assert r.status_code == 200, r.text
    assert len(_at(hook, "appointment-cancelled", "event-notification")) == 1
    freed = _at(hook, "slot-freed", "event-notification", n=2)  # moved away, then cancelled
    assert [_status_of(b)["events"][0]["event-number"] for b in freed] == ["1", "2"]


def test_a_heartbeat_is_sent_when_nothing_happens(server: ServerProcess,
                                                  hook: HttpSink) -> None:
    sub = _subscribe(server, hook, "appointment-booked", "heartbeat", heartbeat=1,
                     filters=("Appointment?patient=Patient/nobody",))
    _active(server, sub["id"])
    beats = _at(hook, "heartbeat", "heartbeat", n=2, timeout=10)
    assert len(beats) >= 2
    assert _status_of(beats[0])["status"] == "active"


def test_channel_headers_are_sent_with_each_notification(server: ServerProcess,
                                                         hook: HttpSink) -> None:
    sub = _subscribe(server, hook, "appointment-booked", "headers",
                     headers=("Authorization: Bearer receiver-secret",))
    _active(server, sub["id"])
    hit = next(h for h in hook.hits if h.path == "/headers")
    assert hit.headers["authorization"] == "Bearer receiver-secret"
    assert hit.headers["content-type"] == "application/fhir+json"


def test_an_endpoint_that_keeps_failing_puts_the_subscription_in_error(
        server: ServerProcess, hook: HttpSink) -> None:
    sub = _subscribe(server, hook, "appointment-booked", "broken")
    deadline = time.monotonic() + 20
    while (body := web.get(f"{server.base}/Subscription/{sub['id']}").json())[
            "status"] != "error" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert body["status"] == "error" and "HTTP 500" in body["error"]
    assert len([h for h in hook.hits if h.path == "/broken"]) == 3  # the attempts allowed


def test_status_and_events_report_what_was_numbered(server: ServerProcess,
                                                    hook: HttpSink) -> None:
    patient = _patient(server)
    sub = _subscribe(server, hook, "appointment-booked", "queried",
                     filters=(f"Appointment?patient={patient}",))
    _active(server, sub["id"])
    appts = [_book(server, patient, f"2031-08-0{d}T14:00:00Z", f"2031-08-0{d}T14:30:00Z")
             for d in (1, 2, 3)]
    _at(hook, "queried", "event-notification", n=1)
    deadline = time.monotonic() + 10
    while True:
        status = web.get(f"{server.base}/Subscription/{sub['id']}/$status").json()
        if status["entry"][0]["resource"]["parameter"][4]["valueString"] == "3" or (
                time.monotonic() > deadline):
            break
        time.sleep(0.1)
    assert status["type"] == "searchset"
    assert _status_of(status)["type"] == "query-status"
    assert _status_of(status)["events-since-subscription-start"] == "3"
    got = web.get(f"{server.base}/Subscription/{sub['id']}/$events?eventsSinceNumber=2"
                  "&content=full-resource").json()
    events = _status_of(got)["events"]
    assert [e["event-number"] for e in events] == ["2", "3"]
    assert [e["resource"]["id"] for e in got["entry"][1:]] == [a["id"] for a in appts[1:]]


def test_a_subscription_the_server_cannot_honour_is_refused_with_the_element(
        server: ServerProcess) -> None:
    good = _subscription("appointment-booked", "http://127.0.0.1:9/x")
    cases = [
        ({**good, "criteria": TOPIC + "no-such-topic"}, "Subscription.criteria"),
        ({**good, "channel": {**good["channel"], "type": "email"}}, "Subscription.channel.type"),
        ({**good, "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                              "valueString": "Appointment?colour=red"}]}},
         "Subscription._criteria.extension[0]"),
        ({**good, "channel": {**good["channel"], "endpoint": "http://10.1.2.3/hook"}},
         "Subscription.channel.endpoint"),
    ]
    for body, where in cases:
        r = web.post(f"{server.base}/Subscription", headers=FHIR_JSON, json=body)
        assert r.status_code == 422, (where, r.text)
        assert where in r.text, (where, r.text)


def test_event_numbers_continue_without_a_gap_across_a_restart(store: str, server: ServerProcess,
                                                               hook: HttpSink) -> None:
    patient = _patient(server)
    sub = _subscribe(server, hook, "appointment-booked", "restart",
                     filters=(f"Appointment?patient={patient}",))
    _active(server, sub["id"])
    _book(server, patient, "2031-09-01T14:00:00Z", "2031-09-01T14:30:00Z")
    _at(hook, "restart", "event-notification", n=1)
    server.stop()
    server.start()
    _book(server, patient, "2031-09-02T14:00:00Z", "2031-09-02T14:30:00Z")
    _book(server, patient, "2031-09-03T14:00:00Z", "2031-09-03T14:30:00Z")

    def numbers() -> list[str]:
        return [e["event-number"] for b in _at(hook, "restart", "event-notification")
                for e in _status_of(b)["events"]]

    deadline = time.monotonic() + 15
    while len(numbers()) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert numbers() == ["1", "2", "3"]


def test_the_capability_statement_declares_every_topic_and_the_backport(
        server: ServerProcess) -> None:
    cs = web.get(f"{server.base}/metadata").json()
    assert ("http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/"
            "backport-subscription-server-r4") in cs["instantiates"]
    entry = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Subscription")
    topics = {e["valueCanonical"] for e in entry["extension"]
              if e["url"].endswith("capabilitystatement-subscriptiontopic-canonical")}
    assert topics == {TOPIC + t for t in ("appointment-booked", "appointment-changed",
                                          "appointment-cancelled", "slot-freed",
                                          "waitlist-offer")}
    assert {o["name"] for o in entry["operation"]} >= {"status", "events"}
