"""Exactly one message per reminder (issue 15, item 2), with several workers and a crash:
1,000 due messages, the server killed with SIGKILL mid-delivery and started again; and two
server processes delivering from one store at once. A real SMTP server (aiosmtpd) counts what
arrived, by Message-ID (the notice's id, the same on every attempt).

On the MongoDB test server (SecantusDB, a Python server that commits about 30 such records a
second) the crash test uses 300 messages, to keep the suite's time; SQLite takes the 1,000."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import web
from tests.support.scheduling import uid
from tests.support.server import ServerProcess, cleanup_dir, servers, store_url
from tests.support.sinks import SmtpSink

FHIR_JSON = {"content-type": "application/fhir+json"}
MEDIUM = [{"coding": [{"system": "https://fhir-sched.org/fhir/CodeSystem/notice-channel",
                       "code": "email"}]}]


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


def _env(smtp: SmtpSink) -> dict[str, str]:
    return {"FHIR_SCHED_AUTH": "none", "FHIR_SCHED_SMTP_HOST": "127.0.0.1",
            "FHIR_SCHED_SMTP_PORT": str(smtp.port), "FHIR_SCHED_SMTP_SECURITY": "none",
            "FHIR_SCHED_SMTP_FROM": "clinic@clinic.example",
            # a dead server's claims pass to the next after 10 s (default 60)
            "FHIR_SCHED_DELIVERY_LEASE_SECONDS": "10"}


def _due_messages(base: str, n: int, patients: int = 50) -> list[str]:
    """``n`` due staff-made messages (CommunicationRequests with a text) for ``patients``."""
    tag = uid()[:8]
    refs = []
    for p in range(patients):
        r = web.post(f"{base}/Patient", headers=FHIR_JSON, json={
            "resourceType": "Patient", "telecom": [
                {"system": "email", "value": f"p{p}-{tag}@example.org"}]})
        assert r.status_code == 201, r.text
        refs.append(f"Patient/{r.json()['id']}")
    ids = [f"msg-{tag}-{i}" for i in range(n)]
    for chunk in range(0, n, 250):
        entries = [{"resource": {
            "resourceType": "CommunicationRequest", "id": id_, "status": "active",
            "medium": MEDIUM, "subject": {"reference": refs[i % patients]},
            "recipient": [{"reference": refs[i % patients]}],
            "occurrenceDateTime": "2026-01-01T00:00:00Z",
            "payload": [{"contentString": f"Your flu shot is due ({i})."}]},
            "request": {"method": "PUT", "url": f"CommunicationRequest/{id_}"}}
            for i, id_ in enumerate(ids[chunk:chunk + 250], start=chunk)]
        r = web.post(base, headers=FHIR_JSON, timeout=120, json={
            "resourceType": "Bundle", "type": "transaction", "entry": entries})
        assert r.status_code == 200, r.text[:500]
    return ids


def _count(base: str, query: str) -> int:
    return int(web.get(f"{base}/{query}&_summary=count").json()["total"])


def _communications(base: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    url: str | None = f"{base}/Communication?_count=1000"
    while url:
        bundle = web.get(url, timeout=60).json()
        out += [e["resource"] for e in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle.get("link", [])
                    if link["relation"] == "next"), None)
    return out


def _message_ids(smtp: SmtpSink) -> Counter[str]:
    with smtp.lock:
        return Counter(str(m.message["Message-ID"]).strip("<>").split("@")[0]
                       for m in smtp.mails)


def _wait_until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_server_killed_mid_delivery_sends_each_reminder_once_as_recorded(
        store_kind: str, mongo_uri: str | None, smtp: SmtpSink) -> None:
    url = store_url(store_kind, mongo_uri, "fhir_sched_crash")
    total = 1000 if store_kind == "sqlite" else 300
    try:
        quiet = ServerProcess(url, env={"FHIR_SCHED_AUTH": "none"}).start()  # no channel
        try:
            ids = _due_messages(quiet.base, total)
        finally:
            quiet.stop()
        sender = ServerProcess(url, env=_env(smtp)).start()
        try:
            _wait_until(lambda: len(smtp.mails) >= total * 3 // 10, 60)
        finally:
            sender.kill()  # SIGKILL: sends in flight, records not yet committed
        at_kill = len(_message_ids(smtp))
        assert at_kill < total, "everything went out before the kill; nothing was tested"
        again = ServerProcess(url, env=_env(smtp)).start()
        try:
            _wait_until(lambda: _count(again.base, "CommunicationRequest?status=active") == 0,
                        120)
            records = _communications(again.base)
        finally:
            again.stop()
        received = _message_ids(smtp)
        assert set(received) == set(ids), "a reminder never arrived"
        by_request = Counter(c["basedOn"][0]["reference"].split("/", 1)[1] for c in records)
        assert set(by_request) == set(ids) and set(by_request.values()) == {1}
        assert all(c["status"] == "completed" for c in records)
        repeated = {k for k, n in received.items() if n > 1}
        assert all(n <= 2 for n in received.values())
        doubted = {c["basedOn"][0]["reference"].split("/", 1)[1] for c in records
                   if any("in doubt" in note["text"] for note in c.get("note", []))}
        # every message that came twice was one whose first send was in doubt at the kill
        assert repeated <= doubted
        assert len(doubted) <= 32, "more in doubt than one step claims (8 senders x 4)"
    finally:
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def test_two_server_processes_on_one_store_send_each_reminder_once(
        store_kind: str, mongo_uri: str | None, smtp: SmtpSink) -> None:
    url = store_url(store_kind, mongo_uri, "fhir_sched_two_senders")
    with servers(url, 2, _env(smtp)) as (one, two):
        ids = _due_messages(one.base, 300, patients=20)
        _wait_until(lambda: _count(two.base, "CommunicationRequest?status=active") == 0, 90)
        records = _communications(two.base)
    received = _message_ids(smtp)
    assert set(received) == set(ids) and set(received.values()) == {1}
    assert len(records) == 300
    assert len({c["basedOn"][0]["reference"] for c in records}) == 300
