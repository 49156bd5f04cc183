"""Automatic waitlist offers (issue 15, item 1): freed time is held for the best waiting
patient (priority, then waiting time, then preference) with an offer by email; accepting
books it through the guard and closes the entry; an offer that expires or is declined moves
to the next patient; one freed time never carries two live offers, even with two server
processes. Against real servers on both stores and a real SMTP server."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support import web
from tests.support.scheduling import hours, need, schedule, template, uid, visit_type
from tests.support.server import ServerProcess, cleanup_dir, store_url
from tests.support.sinks import HttpSink, SmtpSink

FHIR_JSON = {"content-type": "application/fhir+json"}
SYSTEM = "https://clinic.example/visit-types"
ALL_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OFFER_URL = "https://fhir-sched.org/fhir/StructureDefinition/waitlist-offer"


def _env(smtp: SmtpSink, offer_seconds: int) -> dict[str, str]:
    return {"FHIR_SCHED_AUTH": "none", "FHIR_SCHED_SMTP_HOST": "127.0.0.1",
            "FHIR_SCHED_SMTP_PORT": str(smtp.port), "FHIR_SCHED_SMTP_SECURITY": "none",
            "FHIR_SCHED_SMTP_FROM": "desk@clinic.example", "FHIR_SCHED_REMINDERS": "",
            "FHIR_SCHED_WAITLIST_OFFER_SECONDS": str(offer_seconds),
            "FHIR_SCHED_SWEEP_SECONDS": "1"}


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def url(store_kind: str, mongo_uri: str | None) -> Iterator[str]:
    found = store_url(store_kind, mongo_uri, "fhir_sched_waitlist")
    yield found
    if found.startswith("sqlite"):
        cleanup_dir(found.removeprefix("sqlite:///").rsplit("/", 1)[0])


def _put(base: str, body: dict[str, Any]) -> None:
    r = web.put(f"{base}/{body['resourceType']}/{body['id']}", headers=FHIR_JSON, json=body)
    assert r.status_code in (200, 201), r.text


def _clinic(base: str) -> str:
    """A doctor open all day every day, and a 30-minute consult that needs them."""
    tag = uid()
    doctor = f"Practitioner/wl-{tag}"
    _put(base, {"resourceType": "Practitioner", "id": f"wl-{tag}",
                "name": [{"prefix": ["Dr."], "family": "Wait"}]})
    _put(base, schedule(f"wl-{tag}", doctor, template("UTC", hours(ALL_WEEK, "00:00:00",
                                                                    "23:59:00"))))
    _put(base, {"resourceType": "HealthcareService", "id": f"wl-{tag}", "extension": [
        visit_type(SYSTEM, f"consult-{tag}", 30, need("Practitioner"))]})
    return tag


def _patient(base: str, name: str) -> str:
    r = web.post(f"{base}/Patient", headers=FHIR_JSON, json={
        "resourceType": "Patient", "name": [{"given": [name]}],
        "telecom": [{"system": "email", "value": f"{name.lower()}@example.org"}]})
    assert r.status_code == 201, r.text
    return f"Patient/{r.json()['id']}"


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _booking(base: str, tag: str, patient: str, start: datetime) -> dict[str, Any]:
    r = web.post(f"{base}/Appointment", headers=FHIR_JSON, json={
        "resourceType": "Appointment", "status": "booked", "start": _iso(start),
        "end": _iso(start + timedelta(minutes=30)),
        "appointmentType": {"coding": [{"system": SYSTEM, "code": f"consult-{tag}"}]},
        "participant": [{"actor": {"reference": f"Practitioner/wl-{tag}"}, "status": "accepted"},
                        {"actor": {"reference": f"HealthcareService/wl-{tag}"},
                         "status": "accepted"},
                        {"actor": {"reference": patient}, "status": "accepted"}]})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _wait_entry(base: str, tag: str, patient: str, *, priority: int | None = None,
                created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Appointment", "status": "waitlist", "created": created,
        "appointmentType": {"coding": [{"system": SYSTEM, "code": f"consult-{tag}"}]},
        "participant": [{"actor": {"reference": patient}, "status": "needs-action"}],
        "requestedPeriod": [{"start": _iso(datetime.now(UTC)),
                             "end": _iso(datetime.now(UTC) + timedelta(days=30))}]}
    if priority is not None:
        body["priority"] = priority
    r = web.post(f"{base}/Appointment", headers=FHIR_JSON, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _cancel(base: str, appt: dict[str, Any]) -> None:
    current = web.get(f"{base}/Appointment/{appt['id']}").json()
    r = web.put(f"{base}/Appointment/{appt['id']}", headers=FHIR_JSON,
                json={**current, "status": "cancelled"})
    assert r.status_code == 200, r.text


def _offers(base: str, entry: dict[str, Any]) -> list[dict[str, Any]]:
    bundle = web.get(f"{base}/Appointment?status=pending,booked,cancelled&_count=200").json()
    out = []
    for e in bundle.get("entry", []):
        for ext in e["resource"].get("extension", []):
            if ext["url"] == OFFER_URL and any(
                    s.get("valueReference", {}).get("reference") == f"Appointment/{entry['id']}"
                    for s in ext["extension"]):
                out.append(e["resource"])
    return out


def _wait(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _link(smtp: SmtpSink, address: str) -> str:
    mails = smtp.wait_for(address)
    assert mails, f"no offer reached {address}"
    text = mails[-1].part("text/plain").get_content()
    found = re.search(r"(http://\S+/r/\S+)", text)
    assert found, text
    return found.group(1)


def test_a_cancellation_is_offered_to_the_first_in_line_who_accepts_and_is_booked(
        url: str, smtp: SmtpSink) -> None:
    with_server = ServerProcess(url, env=_env(smtp, 600)).start()
    try:
        base = with_server.base
        tag = _clinic(base)
        start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=10, minute=0, second=0,
                                                               microsecond=0)
        booked = _booking(base, tag, _patient(base, "Holder"), start)
        later = _wait_entry(base, tag, _patient(base, "Later"), created="2026-03-01T00:00:00Z")
        urgent = _wait_entry(base, tag, _patient(base, "Urgent"), priority=1,
                             created="2026-06-01T00:00:00Z")
        earlier = _wait_entry(base, tag, _patient(base, "Earlier"),
                              created="2026-02-01T00:00:00Z")
        _cancel(base, booked)
        offers = _wait(lambda: _offers(base, urgent))
        assert offers, "the priority-1 entry got no offer"
        assert [_offers(base, e) for e in (later, earlier)] == [[], []]
        offer = offers[0]
        assert offer["status"] == "pending"
        assert datetime.fromisoformat(offer["start"]) == start
        link = _link(smtp, "urgent@example.org")
        assert "opened" in smtp.to("urgent@example.org")[0].message["Subject"]
        page = web.get(link)
        assert page.status_code == 200 and "Accept this time" in page.text
        r = web.post(link, data={"action": "accept"})
        assert r.status_code == 200, r.text
        assert web.get(f"{base}/Appointment/{offer['id']}").json()["status"] == "booked"
        closed = _wait(lambda: (b := web.get(f"{base}/Appointment/{urgent['id']}").json())[
            "status"] == "cancelled" and b)
        assert closed and closed["cancelationReason"]["coding"][0]["code"] == "booked"
        assert web.get(f"{base}/Appointment/{later['id']}").json()["status"] == "waitlist"
    finally:
        with_server.stop()


def test_an_offer_is_told_to_waitlist_offer_subscribers(url: str, smtp: SmtpSink) -> None:
    with HttpSink() as hook:
        env = {**_env(smtp, 600), "FHIR_SCHED_SUBSCRIPTION_ENDPOINTS": "http://127.0.0.1"}
        proc = ServerProcess(url, env=env).start()
        try:
            base = proc.base
            tag = _clinic(base)
            r = web.post(f"{base}/Subscription", headers=FHIR_JSON, json={
                "resourceType": "Subscription", "status": "requested", "reason": "desk board",
                "criteria": "https://fhir-sched.org/fhir/SubscriptionTopic/waitlist-offer",
                "channel": {"type": "rest-hook", "endpoint": hook.url}})
            assert r.status_code == 201, r.text
            sub = r.json()["id"]
            assert _wait(lambda: web.get(f"{base}/Subscription/{sub}").json()[
                "status"] == "active")
            start = (datetime.now(UTC) + timedelta(days=6)).replace(hour=8, minute=0,
                                                                   second=0, microsecond=0)
            booked = _booking(base, tag, _patient(base, "Holder5"), start)
            entry = _wait_entry(base, tag, _patient(base, "Watched"))
            _cancel(base, booked)
            offers = _wait(lambda: _offers(base, entry))
            assert offers
            told = hook.wait_for(lambda hs: any(offers[0]["id"].encode() in h.body
                                                for h in hs))
            assert any(offers[0]["id"].encode() in h.body for h in told)
        finally:
            proc.stop()


def test_an_offer_that_expires_moves_to_the_next_in_line(url: str, smtp: SmtpSink) -> None:
    proc = ServerProcess(url, env=_env(smtp, 3)).start()
    try:
        base = proc.base
        tag = _clinic(base)
        start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=11, minute=0, second=0,
                                                               microsecond=0)
        booked = _booking(base, tag, _patient(base, "Holder2"), start)
        first = _wait_entry(base, tag, _patient(base, "First"), created="2026-01-01T00:00:00Z")
        second = _wait_entry(base, tag, _patient(base, "Second"),
                             created="2026-02-01T00:00:00Z")
        _cancel(base, booked)
        assert _wait(lambda: _offers(base, first)), "the first in line got no offer"
        moved = _wait(lambda: _offers(base, second), timeout=30)
        assert moved, "the offer did not move on when it expired"
        assert [o["status"] for o in _offers(base, first)] == ["cancelled"]
        assert moved[0]["status"] == "pending"
        assert datetime.fromisoformat(moved[0]["start"]) == start
        assert smtp.wait_for("second@example.org"), "the second in line was not told"
        assert web.get(f"{base}/Appointment/{first['id']}").json()["status"] == "waitlist"
    finally:
        proc.stop()


def test_a_declined_offer_moves_to_the_next_in_line(url: str, smtp: SmtpSink) -> None:
    proc = ServerProcess(url, env=_env(smtp, 600)).start()
    try:
        base = proc.base
        tag = _clinic(base)
        start = (datetime.now(UTC) + timedelta(days=4)).replace(hour=9, minute=0, second=0,
                                                               microsecond=0)
        booked = _booking(base, tag, _patient(base, "Holder3"), start)
        first = _wait_entry(base, tag, _patient(base, "Decliner"),
                            created="2026-01-01T00:00:00Z")
        second = _wait_entry(base, tag, _patient(base, "Taker"), created="2026-02-01T00:00:00Z")
        _cancel(base, booked)
        r = web.post(_link(smtp, "decliner@example.org"), data={"action": "decline"})
        assert r.status_code == 200, r.text
        assert _wait(lambda: _offers(base, second)), "the offer did not move on"
        assert [o["status"] for o in _offers(base, first)] == ["cancelled"]
        assert web.get(f"{base}/Appointment/{first['id']}").json()["status"] == "waitlist"
    finally:
        proc.stop()


def test_two_servers_make_one_offer_for_one_freed_time(url: str, smtp: SmtpSink) -> None:
    one = ServerProcess(url, env=_env(smtp, 600)).start()
    two = ServerProcess(url, env=_env(smtp, 600)).start()
    try:
        base = one.base
        tag = _clinic(base)
        start = (datetime.now(UTC) + timedelta(days=5)).replace(hour=15, minute=0, second=0,
                                                               microsecond=0)
        booked = _booking(base, tag, _patient(base, "Holder4"), start)
        entries = [_wait_entry(base, tag, _patient(base, f"Racer{n}"),
                               created=f"2026-0{n + 1}-01T00:00:00Z") for n in range(3)]
        _cancel(base, booked)
        assert _wait(lambda: _offers(base, entries[0]))
        time.sleep(2)  # time for a second offer, were one to be made
        live = [o for e in entries for o in _offers(two.base, e) if o["status"] == "pending"]
        assert len(live) == 1
    finally:
        one.stop()
        two.stop()
