"""Subscriptions over the websocket channel (Subscriptions R5 Backport IG 1.1.0, R4 form):
``$get-ws-binding-token``, ``bind-with-token`` on ``{base}/$subscription-ws``, the handshake,
event notifications numbered as for rest-hook, filters, heartbeats, refused tokens, two
processes on one store each delivering to their own sockets, and the token's authorization
with auth on. Against real servers on both stores, with the third-party ``websockets``
client."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from fhir_sched.engage.socket_hub import Socket
from tests.support import web
from tests.support.launch import REDIRECT, Browser, add_user, pkce
from tests.support.server import ServerProcess, cleanup_dir, served, servers, store_url
from tests.support.smart import BackendClient, get_token, register, register_backend

FHIR_JSON = {"content-type": "application/fhir+json"}
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://fhir-sched.org/fhir/SubscriptionTopic/"
TOKEN_SECONDS = 3
ENV = {"FHIR_SCHED_AUTH": "none", "FHIR_SCHED_WEBSOCKET_TOKEN_SECONDS": str(TOKEN_SECONDS)}
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


@pytest.fixture(scope="module")
def store(store_kind: str, mongo_uri: str | None) -> Iterator[str]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_sub_ws")
    yield url
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


@pytest.fixture(scope="module")
def server(store: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(store, env=ENV).start()
    yield proc
    proc.stop()


def _patient(base: str, headers: dict[str, str] | None = None) -> str:
    r = web.post(f"{base}/Patient", headers={**FHIR_JSON, **(headers or {})},
                 json={"resourceType": "Patient"})
    assert r.status_code == 201, r.text
    return f"Patient/{r.json()['id']}"


def _subscription(topic: str, *, filters: tuple[str, ...] = (), content: str = "id-only",
                  heartbeat: int | None = None) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "websocket", "payload": "application/fhir+json",
                               "_payload": {"extension": [{"url": BACKPORT +
                                                           "backport-payload-content",
                                                           "valueCode": content}]}}
    if heartbeat is not None:
        channel["extension"] = [{"url": BACKPORT + "backport-heartbeat-period",
                                 "valueUnsignedInt": heartbeat}]
    body: dict[str, Any] = {"resourceType": "Subscription", "status": "requested",
                            "reason": "test", "criteria": TOPIC + topic, "channel": channel}
    if filters:
        body["_criteria"] = {"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                            "valueString": f} for f in filters]}
    return body


def _subscribe(base: str, topic: str = "appointment-booked",
               headers: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    r = web.post(f"{base}/Subscription", headers={**FHIR_JSON, **(headers or {})},
                 json=_subscription(topic, **kw))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _binding(base: str, sub_id: str, headers: dict[str, str] | None = None
             ) -> dict[str, Any]:
    r = web.get(f"{base}/Subscription/{sub_id}/$get-ws-binding-token", headers=headers or {})
    assert r.status_code == 200, r.text
    return {p["name"]: next(v for k, v in p.items() if k != "name")
            for p in r.json()["parameter"]}


@contextlib.contextmanager
def _bound(base: str, sub_id: str, headers: dict[str, str] | None = None
           ) -> Iterator[tuple[ClientConnection, dict[str, Any]]]:
    """A socket bound to ``sub_id``, and its handshake."""
    binding = _binding(base, sub_id, headers)
    with connect(binding["websocket-url"], open_timeout=10) as ws:
        ws.send(f"bind-with-token {binding['token']}")
        yield ws, _frame(ws)


def _frame(ws: ClientConnection, timeout: float = 15.0) -> dict[str, Any]:
    return dict(orjson.loads(ws.recv(timeout=timeout)))


def _status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"events": []}
    for p in bundle["entry"][0]["resource"]["parameter"]:
        if p["name"] == "notification-event":
            out["events"].append({q["name"]: next(v for k, v in q.items() if k != "name")
                                  for q in p["part"]})
        else:
            out[p["name"]] = next(v for k, v in p.items() if k != "name")
    return out


def _next_of(ws: ClientConnection, kind: str, timeout: float = 15.0) -> dict[str, Any]:
    """The next frame of ``kind``, past any heartbeat."""
    deadline = time.monotonic() + timeout
    while True:
        frame = _frame(ws, max(0.1, deadline - time.monotonic()))
        if _status_of(frame)["type"] == kind:
            return frame


def _book(base: str, patient: str, day: int = 1,
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = web.post(f"{base}/Appointment", headers={**FHIR_JSON, **(headers or {})}, json={
        "resourceType": "Appointment", "status": "booked",
        "start": f"2032-03-{day:02d}T14:00:00Z", "end": f"2032-03-{day:02d}T14:30:00Z",
        "participant": [{"actor": {"reference": patient}, "status": "accepted"}]})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _refused(ws: ClientConnection) -> tuple[dict[str, Any], int]:
    """The error frame a refusal sends, and the close code after it."""
    frame = _frame(ws)
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    return frame, closed.value.rcvd.code


# -- the channel -------------------------------------------------------------------------------


def test_a_websocket_subscription_is_active_on_creation(server: ServerProcess) -> None:
    sub = _subscribe(server.base)
    assert sub["status"] == "active"
    assert "endpoint" not in sub["channel"]


def test_a_websocket_channel_with_an_endpoint_is_refused(server: ServerProcess) -> None:
    body = _subscription("appointment-booked")
    body["channel"]["endpoint"] = "https://app.example/hook"
    r = web.post(f"{server.base}/Subscription", headers=FHIR_JSON, json=body)
    assert r.status_code == 422 and "Subscription.channel.endpoint" in r.text, r.text


def test_the_binding_token_names_the_subscription_and_the_socket_url(
        server: ServerProcess) -> None:
    sub = _subscribe(server.base)
    binding = _binding(server.base, sub["id"])
    assert len(binding["token"]) >= 40
    assert binding["subscription"] == f"Subscription/{sub['id']}"
    assert binding["websocket-url"] == (f"ws://127.0.0.1:{server.port}/fhir/"
                                        "$subscription-ws")
    assert binding["expiration"].endswith("Z")


def test_the_capability_statement_names_the_websocket_url(server: ServerProcess) -> None:
    rest = web.get(f"{server.base}/metadata").json()["rest"][0]
    [url] = [e["valueUri"] for e in rest["extension"] if e["url"] ==
             "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket"]
    assert url == f"ws://127.0.0.1:{server.port}/fhir/$subscription-ws"
    entry = next(r for r in rest["resource"] if r["type"] == "Subscription")
    assert "get-ws-binding-token" in {o["name"] for o in entry["operation"]}


def test_a_rest_hook_subscription_gets_no_binding_token(server: ServerProcess) -> None:
    body = {**_subscription("appointment-booked"), "channel": {
        "type": "rest-hook", "endpoint": "https://app.example/hook"}}
    r = web.post(f"{server.base}/Subscription", headers=FHIR_JSON, json=body)
    assert r.status_code == 201, r.text
    r = web.post(f"{server.base}/Subscription/{r.json()['id']}/$get-ws-binding-token",
                 headers=FHIR_JSON, json={"resourceType": "Parameters"})
    assert r.status_code == 422 and "websocket" in r.text, r.text


def test_binding_answers_with_a_handshake_for_the_subscription(server: ServerProcess) -> None:
    sub = _subscribe(server.base)
    with _bound(server.base, sub["id"]) as (_ws, handshake):
        assert handshake["resourceType"] == "Bundle" and handshake["type"] == "history"
        status = _status_of(handshake)
        assert status["type"] == "handshake"
        assert status["topic"] == TOPIC + "appointment-booked"
        assert status["subscription"]["reference"].endswith(f"Subscription/{sub['id']}")
        assert status["events-since-subscription-start"] == "0"


def test_a_booking_arrives_as_a_numbered_event_notification(server: ServerProcess) -> None:
    patient = _patient(server.base)
    sub = _subscribe(server.base, filters=(f"Appointment?patient={patient}",),
                     content="full-resource")
    with _bound(server.base, sub["id"]) as (ws, _):
        appt = _book(server.base, patient)
        note = _next_of(ws, "event-notification")
        status = _status_of(note)
        assert status["topic"] == TOPIC + "appointment-booked"
        assert [e["event-number"] for e in status["events"]] == ["1"]
        assert status["events"][0]["focus"]["reference"].endswith(f"Appointment/{appt['id']}")
        assert note["entry"][1]["resource"]["id"] == appt["id"]
        _book(server.base, patient, 2)
        assert [e["event-number"] for e in _status_of(
            _next_of(ws, "event-notification"))["events"]] == ["2"]


def test_events_on_the_socket_carry_the_numbers_that_events_reports(
        server: ServerProcess) -> None:
    patient = _patient(server.base)
    sub = _subscribe(server.base, filters=(f"Appointment?patient={patient}",))
    with _bound(server.base, sub["id"]) as (ws, _):
        appt = _book(server.base, patient, 3)
        got = _status_of(_next_of(ws, "event-notification"))["events"][0]
    kept = web.get(f"{server.base}/Subscription/{sub['id']}/$events").json()
    [event] = _status_of(kept)["events"]
    assert event["event-number"] == got["event-number"] == "1"
    assert event["focus"]["reference"].endswith(f"Appointment/{appt['id']}")


def test_a_filtered_socket_is_not_told_of_other_patients_bookings(
        server: ServerProcess) -> None:
    mine, other = _patient(server.base), _patient(server.base)
    sub = _subscribe(server.base, filters=(f"Appointment?patient={mine}",))
    with _bound(server.base, sub["id"]) as (ws, _):
        _book(server.base, other, 4)
        appt = _book(server.base, mine, 5)
        note = _next_of(ws, "event-notification")
        assert note["entry"][1]["fullUrl"].endswith(f"Appointment/{appt['id']}")
        assert "resource" not in note["entry"][1]  # id-only
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.0)


def test_several_subscriptions_bind_on_one_socket(server: ServerProcess) -> None:
    patient = _patient(server.base)
    booked = _subscribe(server.base, filters=(f"Appointment?patient={patient}",))
    cancelled = _subscribe(server.base, "appointment-cancelled",
                           filters=(f"Appointment?patient={patient}",))
    with _bound(server.base, booked["id"]) as (ws, _):
        ws.send(f"bind-with-token {_binding(server.base, cancelled['id'])['token']}")
        second = _frame(ws)
        assert _status_of(second)["subscription"]["reference"].endswith(cancelled["id"])
        appt = _book(server.base, patient, 6)
        r = web.put(f"{server.base}/Appointment/{appt['id']}", headers=FHIR_JSON,
                    json={**appt, "status": "cancelled"})
        assert r.status_code == 200, r.text
        told = {_status_of(_next_of(ws, "event-notification"))["topic"] for _ in range(2)}
        assert told == {TOPIC + "appointment-booked", TOPIC + "appointment-cancelled"}


def test_a_heartbeat_arrives_on_a_quiet_socket(server: ServerProcess) -> None:
    sub = _subscribe(server.base, heartbeat=1, filters=("Appointment?patient=Patient/nobody",))
    with _bound(server.base, sub["id"]) as (ws, _):
        beat = _next_of(ws, "heartbeat", timeout=10)
        assert _status_of(beat)["status"] == "active"


def test_an_unknown_token_is_refused_with_a_policy_close(server: ServerProcess) -> None:
    with connect(f"ws://127.0.0.1:{server.port}/fhir/$subscription-ws") as ws:
        ws.send("bind-with-token 1234567890.not-a-token-this-server-made")
        frame, code = _refused(ws)
    assert frame["resourceType"] == "OperationOutcome"
    assert code == POLICY_VIOLATION


def test_a_used_token_is_refused(server: ServerProcess) -> None:
    sub = _subscribe(server.base)
    binding = _binding(server.base, sub["id"])
    url = binding["websocket-url"]
    with connect(url) as first:
        first.send(f"bind-with-token {binding['token']}")
        assert _status_of(_frame(first))["type"] == "handshake"
        with connect(url) as second:
            second.send(f"bind-with-token {binding['token']}")
            code = _refused(second)[1]
    assert code == POLICY_VIOLATION


def test_an_expired_token_is_refused(server: ServerProcess) -> None:
    sub = _subscribe(server.base)
    binding = _binding(server.base, sub["id"])
    time.sleep(TOKEN_SECONDS + 1.5)
    with connect(binding["websocket-url"]) as ws:
        ws.send(f"bind-with-token {binding['token']}")
        frame, code = _refused(ws)
    assert "expired" in frame["issue"][0]["diagnostics"] and code == POLICY_VIOLATION


def test_a_message_other_than_bind_with_token_is_refused(server: ServerProcess) -> None:
    with connect(f"ws://127.0.0.1:{server.port}/fhir/$subscription-ws") as ws:
        ws.send("subscribe me to everything")
        frame, code = _refused(ws)
    assert "bind-with-token" in frame["issue"][0]["diagnostics"] and code == POLICY_VIOLATION


def test_an_oversized_message_closes_the_socket(server: ServerProcess) -> None:
    with connect(f"ws://127.0.0.1:{server.port}/fhir/$subscription-ws") as ws:
        ws.send("bind-with-token " + "x" * 100_000)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # too big


# -- limits ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    with served(store_kind, mongo_uri, "fhir_sched_sub_ws_limits", {
            "FHIR_SCHED_AUTH": "none", "FHIR_SCHED_WEBSOCKET_MAX": "1",
            "FHIR_SCHED_WEBSOCKET_MAX_BINDINGS": "1"}) as proc:
        yield proc


def test_past_the_socket_limit_a_new_socket_is_closed_with_try_again_later(
        limited: ServerProcess) -> None:
    url = f"ws://127.0.0.1:{limited.port}/fhir/$subscription-ws"
    with connect(url), connect(url) as second, pytest.raises(ConnectionClosed) as closed:
        second.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == TRY_AGAIN_LATER


def test_past_the_binding_limit_a_bind_is_refused(limited: ServerProcess) -> None:
    first, second = _subscribe(limited.base), _subscribe(limited.base)
    with _bound(limited.base, first["id"]) as (ws, _):
        ws.send(f"bind-with-token {_binding(limited.base, second['id'])['token']}")
        frame, code = _refused(ws)
    assert "at most 1" in frame["issue"][0]["diagnostics"] and code == POLICY_VIOLATION


def test_a_socket_whose_queue_is_full_is_dropped_not_waited_for() -> None:
    async def offer_past_the_queue() -> Socket:
        sock = Socket(asyncio.Queue(2))
        assert sock.offer({"n": 1}) and sock.offer({"n": 2})
        assert not sock.offer({"n": 3})  # returns at once: the hub never waits on a socket
        return sock

    sock = asyncio.run(offer_past_the_queue())
    assert sock.ended.is_set() and sock.code == TRY_AGAIN_LATER


# -- several processes -------------------------------------------------------------------------


def test_two_processes_on_one_store_each_deliver_to_their_own_socket(
        store_kind: str, mongo_uri: str | None) -> None:
    url = store_url(store_kind, mongo_uri, "fhir_sched_sub_ws_two")
    with servers(url, 2, {"FHIR_SCHED_AUTH": "none"}) as (a, b):
        patient = _patient(a.base)
        sub = _subscribe(a.base, filters=(f"Appointment?patient={patient}",))
        with _bound(a.base, sub["id"]) as (ws_a, _), _bound(b.base, sub["id"]) as (ws_b, _):
            for n, writer in enumerate((a, b, a)):
                _book(writer.base, patient, 10 + n)
            for ws in (ws_a, ws_b):
                numbers: list[str] = []
                while len(numbers) < 3:  # one notification may carry several events
                    numbers += [e["event-number"] for e in _status_of(
                        _next_of(ws, "event-notification"))["events"]]
                assert numbers == ["1", "2", "3"]


# -- auth on -----------------------------------------------------------------------------------

ADMIN = BackendClient.new("ws-admin")
READER = BackendClient.new("ws-appointments-only")
PASSWORD = "ws-password-1"


@pytest.fixture(scope="module")
def smart(store_kind: str, mongo_uri: str | None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_sub_ws_smart")
    keys = tmp_path_factory.mktemp("ws")
    register_backend(url, ADMIN, "system/*.cruds", keys)
    register_backend(url, READER, "system/Appointment.rs", keys)
    assert register(url, "ws-app", "launch/patient patient/*.cruds", "--redirect-uri",
                    REDIRECT, "--public").returncode == 0
    proc = ServerProcess(url, env={"FHIR_SCHED_AUTH": "smart"}).start()
    try:
        admin = {"authorization": f"Bearer {get_token(proc.base, ADMIN, 'system/*.cruds')}"}
        reader = {"authorization": "Bearer "
                  f"{get_token(proc.base, READER, 'system/Appointment.rs')}"}
        alice, bob = _patient(proc.base, admin), _patient(proc.base, admin)
        add_user(url, "ws-alice", PASSWORD, alice)
        verifier, challenge = pkce()
        browser = Browser(proc.base.removesuffix("/fhir"), proc.base)
        code = browser.code("ws-app", "launch/patient patient/*.cruds", challenge, "ws-alice",
                            PASSWORD)
        token = browser.exchange("ws-app", code, verifier).json()["access_token"]
        yield {"server": proc, "admin": admin, "reader": reader, "alice": alice, "bob": bob,
               "patient": {"authorization": f"Bearer {token}"}}
    finally:
        proc.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def test_with_auth_on_a_bound_socket_needs_no_bearer_header(smart: dict[str, Any]) -> None:
    base = smart["server"].base
    sub = _subscribe(base, headers=smart["admin"],
                     filters=(f"Appointment?patient={smart['alice']}",))
    with _bound(base, sub["id"], smart["admin"]) as (ws, handshake):
        assert _status_of(handshake)["type"] == "handshake"
        appt = _book(base, smart["alice"], 20, smart["admin"])
        note = _next_of(ws, "event-notification")
        assert note["entry"][1]["fullUrl"].endswith(f"Appointment/{appt['id']}")


def test_a_binding_token_needs_read_access_to_the_subscription(smart: dict[str, Any]) -> None:
    base = smart["server"].base
    sub = _subscribe(base, headers=smart["admin"])
    r = web.get(f"{base}/Subscription/{sub['id']}/$get-ws-binding-token",
                headers=smart["reader"])
    assert r.status_code == 403, r.text
    r = web.get(f"{base}/Subscription/{sub['id']}/$get-ws-binding-token")
    assert r.status_code == 401, r.text


def test_a_patient_cannot_get_a_token_for_another_patients_subscription(
        smart: dict[str, Any]) -> None:
    base = smart["server"].base
    bobs = _subscribe(base, headers=smart["admin"],
                      filters=(f"Appointment?patient={smart['bob']}",))
    r = web.get(f"{base}/Subscription/{bobs['id']}/$get-ws-binding-token",
                headers=smart["patient"])
    assert r.status_code == 403, r.text


def test_a_patient_gets_a_token_for_their_own_subscription(smart: dict[str, Any]) -> None:
    base = smart["server"].base
    alices = _subscribe(base, headers=smart["admin"],
                        filters=(f"Appointment?patient={smart['alice']}",))
    with _bound(base, alices["id"], smart["patient"]) as (_ws, handshake):
        assert _status_of(handshake)["type"] == "handshake"
