"""The engagement surfaces with auth on (issue 15 on issue 12's SMART): calendar links are
made only by callers who may read that calendar, a patient only for themself; the signed
message links and the feed URLs open with no token (they are their own credential); a patient
token cannot subscribe. Against a real server on both stores, with a real SMTP server."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support import web
from tests.support.launch import REDIRECT, Browser, add_user, pkce
from tests.support.server import ServerProcess, cleanup_dir, store_url
from tests.support.sinks import SmtpSink
from tests.support.smart import BackendClient, get_token, register, register_backend

PASSWORD = "engage-password-1"
ADMIN = BackendClient.new("engage-admin")


@dataclass
class World:
    url: str
    keys: Any
    server: ServerProcess
    admin: dict[str, str]
    patient_token: dict[str, str]
    alice: str
    bob: str
    smtp: SmtpSink


@pytest.fixture(scope="module")
def world(store_kind: str, mongo_uri: str | None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_engage_smart")
    keys = tmp_path_factory.mktemp("engage")
    register_backend(url, ADMIN, "system/*.cruds", keys)
    assert register(url, "engage-app", "launch/patient patient/*.cruds", "--redirect-uri",
                    REDIRECT, "--public").returncode == 0
    with SmtpSink() as smtp:
        proc = ServerProcess(url, env={
            "FHIR_SCHED_AUTH": "smart", "FHIR_SCHED_SMTP_HOST": "127.0.0.1",
            "FHIR_SCHED_SMTP_PORT": str(smtp.port), "FHIR_SCHED_SMTP_SECURITY": "none",
            "FHIR_SCHED_SMTP_FROM": "desk@clinic.example", "FHIR_SCHED_REMINDERS": "60m",
            "FHIR_SCHED_QUIET_HOURS": ""}).start()
        try:
            admin = {"authorization": f"Bearer {get_token(proc.base, ADMIN, 'system/*.cruds')}"}

            def make(body: dict[str, Any]) -> str:
                r = web.post(f"{proc.base}/{body['resourceType']}", json=body, headers=admin)
                assert r.status_code == 201, r.text
                return f"{body['resourceType']}/{r.json()['id']}"

            alice = make({"resourceType": "Patient", "telecom": [
                {"system": "email", "value": "alice@example.org"}]})
            bob = make({"resourceType": "Patient"})
            add_user(url, "alice", PASSWORD, alice)
            verifier, challenge = pkce()
            b = Browser(proc.base.removesuffix("/fhir"), proc.base)
            code = b.code("engage-app", "launch/patient patient/*.cruds", challenge, "alice",
                          PASSWORD)
            token = b.exchange("engage-app", code, verifier).json()["access_token"]
            yield World(url, keys, proc, admin, {"authorization": f"Bearer {token}"}, alice,
                        bob, smtp)
        finally:
            proc.stop()
            if url.startswith("sqlite"):
                cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def _calendar_link(world: World, owner: str, who: dict[str, str]) -> Any:
    return web.post(f"{world.server.base}/{owner}/$calendar-link", json={
        "resourceType": "Parameters"}, headers={**who, "content-type": "application/fhir+json"})


def test_a_patient_makes_a_calendar_link_for_themself_and_it_opens_without_a_token(
        world: World) -> None:
    r = _calendar_link(world, world.alice, world.patient_token)
    assert r.status_code == 200, r.text
    feed = web.get(r.json()["parameter"][0]["valueUri"])
    assert feed.status_code == 200 and feed.text.startswith("BEGIN:VCALENDAR")


def test_a_patient_cannot_make_a_calendar_link_for_someone_else(world: World) -> None:
    assert _calendar_link(world, world.bob, world.patient_token).status_code == 403


def test_a_calendar_link_needs_a_token(world: World) -> None:
    assert _calendar_link(world, world.alice, {}).status_code == 401


def test_a_patient_token_cannot_subscribe(world: World) -> None:
    r = web.post(f"{world.server.base}/Subscription", headers={
        **world.patient_token, "content-type": "application/fhir+json"}, json={
        "resourceType": "Subscription", "status": "requested", "reason": "mine",
        "criteria": "https://fhir-sched.org/fhir/SubscriptionTopic/appointment-booked",
        "channel": {"type": "rest-hook", "endpoint": "https://app.example/hook"}})
    assert r.status_code == 403, r.text


def test_a_patient_token_cannot_read_someone_elses_subscription(world: World) -> None:
    r = web.post(f"{world.server.base}/Subscription", headers={
        **world.admin, "content-type": "application/fhir+json"}, json={
        "resourceType": "Subscription", "status": "requested", "reason": "bob's visits",
        "criteria": "https://fhir-sched.org/fhir/SubscriptionTopic/appointment-booked",
        "_criteria": {"extension": [{
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                   "backport-filter-criteria",
            "valueString": f"Appointment?patient={world.bob}"}]},
        "channel": {"type": "rest-hook", "endpoint": "https://desk.example/bob"}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    base, who = world.server.base, world.patient_token
    assert web.get(f"{base}/Subscription/{sid}", headers=who).status_code == 403
    assert web.get(f"{base}/Subscription/{sid}/$status", headers=who).status_code == 403
    found = web.get(f"{base}/Subscription", headers=who)
    assert found.status_code == 200
    assert sid not in {e["resource"]["id"] for e in found.json().get("entry", [])}
    assert web.get(f"{base}/Subscription/{sid}", headers=world.admin).status_code == 200


def test_subscribing_needs_read_access_to_what_the_topic_reports(world: World) -> None:
    reader = BackendClient.new("engage-subscriber-only")
    register_backend(world.url, reader, "system/Subscription.cruds", world.keys)
    token = get_token(world.server.base, reader, "system/Subscription.cruds")
    body = {"resourceType": "Subscription", "status": "requested", "reason": "board",
            "criteria": "https://fhir-sched.org/fhir/SubscriptionTopic/appointment-booked",
            "channel": {"type": "rest-hook", "endpoint": "https://desk.example/hook"}}
    r = web.post(f"{world.server.base}/Subscription", json=body, headers={
        "authorization": f"Bearer {token}", "content-type": "application/fhir+json"})
    assert r.status_code == 403 and "read access to every Appointment" in r.text, r.text
    r = web.post(f"{world.server.base}/Subscription", json=body, headers={
        **world.admin, "content-type": "application/fhir+json"})
    assert r.status_code == 201, r.text


def test_a_reminders_link_opens_and_acts_without_a_token(world: World) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=60, seconds=3)
    r = web.post(f"{world.server.base}/Appointment", headers={
        **world.admin, "content-type": "application/fhir+json"}, json={
        "resourceType": "Appointment", "status": "booked",
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
        "participant": [{"actor": {"reference": world.alice}, "status": "accepted"}]})
    assert r.status_code == 201, r.text
    appt = r.json()["id"]
    mails = world.smtp.wait_for("alice@example.org")
    assert mails, "no reminder came"
    link = re.search(r"(http://\S+/r/\S+)", mails[0].part("text/plain").get_content())
    assert link
    assert web.get(link.group(1)).status_code == 200
    assert web.post(link.group(1), data={"action": "confirm"}).status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        body = web.get(f"{world.server.base}/Appointment/{appt}", headers=world.admin).json()
        if body["participant"][0]["status"] == "accepted":
            break
        time.sleep(0.1)
    assert body["participant"][0]["status"] == "accepted"
