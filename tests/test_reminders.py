"""Reminders (issue 15, item 2): a booking is owed CommunicationRequests by its visit type's
rules, moved when it is rescheduled and revoked when it is cancelled; a delivery worker sends
due ones by email (with an iCalendar invitation), SMS through an HTTP gateway and a signed
webhook, records each as a Communication, and honours opt-outs; the patient answers from a
signed link. Against a real server on both stores, with a real SMTP server (aiosmtpd) and
real HTTP receivers; webhook signatures are checked by the Standard Webhooks library."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import icalendar
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from tests.support import web
from tests.support.scheduling import visit_type
from tests.support.server import ServerProcess, served
from tests.support.sinks import Hit, HttpSink, Mail, SmtpSink

FHIR_JSON = {"content-type": "application/fhir+json"}
SYSTEM = "https://clinic.example/visit-types"
SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtcmVtaW5kZXItdGVzdHM="
TZ_URL = "http://hl7.org/fhir/StructureDefinition/timezone"
OPT_OUT = "https://fhir-sched.org/fhir/StructureDefinition/notice-opt-out"
LEAD = timedelta(minutes=60)  # the server default in these tests
SOON = timedelta(seconds=2)  # how far ahead of now a "due soon" reminder is placed


# The receivers are made per store (each depends on store_kind), so one server's messages
# never stand in for the other's.
@pytest.fixture(scope="module")
def smtp(store_kind: str) -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


_SEEN: dict[str, int] = {}


def _flaky_webhook(hit: Hit, n: int) -> int:
    """The first two attempts at each notice about a "Flaky" visit fail with a 503."""
    if b"Flaky" not in hit.body:
        return 200
    key = hit.headers.get("webhook-id", "")
    _SEEN[key] = _SEEN.get(key, 0) + 1
    return 503 if _SEEN[key] < 3 else 200


@pytest.fixture(scope="module")
def hook(store_kind: str) -> Iterator[HttpSink]:
    with HttpSink(_flaky_webhook) as sink:
        yield sink


@pytest.fixture(scope="module")
def sms(store_kind: str) -> Iterator[HttpSink]:
    with HttpSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def server(store_kind: str, mongo_uri: str | None, smtp: SmtpSink, hook: HttpSink,
           sms: HttpSink) -> Iterator[ServerProcess]:
    with served(store_kind, mongo_uri, "fhir_sched_reminders", {
            "FHIR_SCHED_AUTH": "none", "FHIR_SCHED_SMTP_HOST": "127.0.0.1",
            "FHIR_SCHED_SMTP_PORT": str(smtp.port), "FHIR_SCHED_SMTP_SECURITY": "none",
            "FHIR_SCHED_SMTP_FROM": "reminders@clinic.example",
            "FHIR_SCHED_WEBHOOK_URL": hook.url, "FHIR_SCHED_WEBHOOK_SECRET": SECRET,
            "FHIR_SCHED_SMS_URL": sms.url, "FHIR_SCHED_SMS_TOKEN": "sms-token",
            "FHIR_SCHED_SMS_FROM": "+15550000000", "FHIR_SCHED_REMINDERS": "60m",
            "FHIR_SCHED_QUIET_HOURS": "", "FHIR_SCHED_DELIVERY_RETRY_SECONDS": "1",
            "FHIR_SCHED_TELEHEALTH_URL_TEMPLATE": "https://meet.example.org/clinic-{room}"}
            ) as proc:
        for code, extra in (("checkup", [{"url": "reminder", "valueDuration": {
                "value": 72, "unit": "h", "system": "http://unitsofmeasure.org", "code": "h"}},
                {"url": "reminder", "valueDuration": {
                    "value": 1, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"}},
                {"url": "reminderChannel", "valueCode": "email"},
                {"url": "reminderChannel", "valueCode": "sms"}]),
                ("quiet", [{"url": "reminder", "valueBoolean": False}]),
                ("video", [{"url": "virtual", "valueBoolean": True}])):
            vt = visit_type(SYSTEM, code, 30)
            service = {"resourceType": "HealthcareService", "id": f"clinic-{code}",
                       "extension": [{**vt, "extension": [*vt["extension"], *extra]}]}
            r = web.put(f"{proc.base}/HealthcareService/clinic-{code}", headers=FHIR_JSON,
                        json=service)
            assert r.status_code in (200, 201), r.text
        yield proc


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _patient(server: ServerProcess, name: str, *, email: str | None = None,
             phone: str | None = None, zone: str | None = None,
             opt_out: tuple[str, ...] = ()) -> str:
    telecom = []
    if email:
        telecom.append({"system": "email", "value": email})
    if phone:
        telecom.append({"system": "phone", "use": "mobile", "value": phone})
    ext = [{"url": TZ_URL, "valueCode": zone}] if zone else []
    ext += [{"url": OPT_OUT, "valueCode": c} for c in opt_out]
    body: dict[str, Any] = {"resourceType": "Patient", "name": [{"given": [name],
                                                                  "family": "Test"}],
                            "telecom": telecom}
    if ext:
        body["extension"] = ext
    r = web.post(f"{server.base}/Patient", headers=FHIR_JSON, json=body)
    assert r.status_code == 201, r.text
    return f"Patient/{r.json()['id']}"


def _booking(patient: str, start: datetime, code: str | None = None,
             description: str = "Annual check-up") -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Appointment", "status": "booked", "description": description,
        "start": _iso(start), "end": _iso(start + timedelta(minutes=30)),
        "participant": [
            {"actor": {"reference": "Practitioner/rem-practitioner"}, "status": "accepted"},
            {"actor": {"reference": "Location/rem-location"}, "status": "accepted"},
            {"actor": {"reference": patient}, "status": "accepted"}]}
    if code:
        body["appointmentType"] = {"coding": [{"system": SYSTEM, "code": code}]}
        body["participant"].append({"actor": {"reference": f"HealthcareService/clinic-{code}"},
                                    "status": "accepted"})
    return body


def _book(server: ServerProcess, patient: str, start: datetime, code: str | None = None,
          description: str = "Annual check-up") -> dict[str, Any]:
    body = _booking(patient, start, code, description)
    for kind, name in (("Practitioner", {"name": [{"prefix": ["Dr."], "given": ["Ada"],
                                                    "family": "Lovelace"}]}),
                       ("Location", {"name": "Room 3, Floor 2"})):
        made = web.post(f"{server.base}/{kind}", headers=FHIR_JSON,
                        json={"resourceType": kind, **name})
        assert made.status_code == 201, made.text
        for p in body["participant"]:
            if p["actor"]["reference"] == f"{kind}/rem-{kind.lower()}":
                p["actor"]["reference"] = f"{kind}/{made.json()['id']}"
    r = web.post(f"{server.base}/Appointment", headers=FHIR_JSON, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _requests(server: ServerProcess, appt_id: str, status: str | None = None
              ) -> list[dict[str, Any]]:
    q = f"based-on=Appointment/{appt_id}" + (f"&status={status}" if status else "")
    bundle = web.get(f"{server.base}/CommunicationRequest?{q}&_count=100").json()
    return [e["resource"] for e in bundle.get("entry", [])]


def _wait(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _channels(req: dict[str, Any]) -> set[str]:
    return {c["code"] for m in req["medium"] for c in m["coding"]
            if c["system"].endswith("notice-channel")}


def _due_soon() -> datetime:
    """A start whose default (60 min) reminder is due in a moment."""
    return datetime.now(UTC).replace(microsecond=0) + LEAD + SOON + timedelta(seconds=1)


def _communications(server: ServerProcess, request_id: str, channel: str
                    ) -> list[dict[str, Any]]:
    """The delivery records of one request by one channel (one per channel it was for)."""
    bundle = web.get(f"{server.base}/Communication?based-on=CommunicationRequest/"
                     f"{request_id}").json()
    return [e["resource"] for e in bundle.get("entry", [])
            if _channels(e["resource"]) == {channel}]


def _link(mail: Mail) -> str:
    text = mail.part("text/plain").get_content()
    found = re.search(r"(http://\S+/r/\S+)", text)
    assert found, text
    return found.group(1)


# -- planning ------------------------------------------------------------------------------


def test_a_booking_is_owed_one_reminder_per_lead_by_the_channels_of_its_visit_type(
        server: ServerProcess) -> None:
    patient = _patient(server, "Plan", email="plan@example.org", phone="+15551230001",
                       zone="America/New_York")
    start = datetime(2031, 3, 20, 13, 0, tzinfo=UTC)
    appt = _book(server, patient, start, "checkup")
    found = _wait(lambda: _requests(server, appt["id"]) if len(
        _requests(server, appt["id"])) >= 2 else None)
    assert found, "no reminders were planned"
    assert sorted(r["occurrenceDateTime"][:19] for r in found) == sorted(
        _iso(start - lead)[:19] for lead in (timedelta(hours=72), timedelta(hours=24)))
    assert all(_channels(r) == {"email", "sms"} for r in found)  # not the webhook: the type
    time.sleep(0.5)
    assert len(_requests(server, appt["id"])) == 2
    for r in found:
        assert r["status"] == "active"
        assert r["subject"] == {"reference": patient}
        assert r["basedOn"] == [{"reference": f"Appointment/{appt['id']}"}]


def test_a_visit_type_can_turn_reminders_off(server: ServerProcess) -> None:
    patient = _patient(server, "Off", email="off@example.org")
    appt = _book(server, patient, datetime(2031, 3, 21, 13, 0, tzinfo=UTC), "quiet")
    marker = _book(server, patient, datetime(2031, 3, 22, 13, 0, tzinfo=UTC))
    assert _wait(lambda: _requests(server, marker["id"])), "the planner did not run"
    assert _requests(server, appt["id"]) == []


def test_a_reminder_is_not_planned_for_an_opted_out_channel(server: ServerProcess) -> None:
    patient = _patient(server, "Choosy", email="choosy@example.org", phone="+15551230002",
                       opt_out=("email",))
    appt = _book(server, patient, datetime(2031, 3, 23, 13, 0, tzinfo=UTC))
    found = _wait(lambda: _requests(server, appt["id"]))
    assert found
    time.sleep(0.5)
    assert [_channels(r) for r in _requests(server, appt["id"])] == [{"sms", "webhook"}]


def test_a_reschedule_moves_the_reminders_to_the_new_time(server: ServerProcess) -> None:
    patient = _patient(server, "Mover", email="mover@example.org")
    start = datetime(2031, 4, 1, 14, 0, tzinfo=UTC)
    appt = _book(server, patient, start, "checkup")
    before = _wait(lambda: _requests(server, appt["id"], "active"))
    assert len(before) == 2
    later = start + timedelta(days=2, hours=1)
    moved = {**appt, "start": _iso(later), "end": _iso(later + timedelta(minutes=30))}
    r = web.put(f"{server.base}/Appointment/{appt['id']}", headers=FHIR_JSON, json=moved)
    assert r.status_code == 200, r.text

    def moved_ones() -> list[dict[str, Any]] | None:
        now = _requests(server, appt["id"], "active")
        return now if {x["occurrenceDateTime"][:19] for x in now} == {
            _iso(later - timedelta(hours=72))[:19], _iso(later - timedelta(hours=24))[:19]
        } else None

    after = _wait(moved_ones)
    assert after, _requests(server, appt["id"])
    assert {x["id"] for x in after} == {x["id"] for x in before}  # moved, not replaced


def test_a_cancellation_revokes_the_reminders_still_to_come(server: ServerProcess) -> None:
    patient = _patient(server, "Canceller", email="canceller@example.org")
    appt = _book(server, patient, datetime(2031, 4, 3, 14, 0, tzinfo=UTC), "checkup")
    assert len(_wait(lambda: _requests(server, appt["id"], "active"))) == 2
    r = web.put(f"{server.base}/Appointment/{appt['id']}", headers=FHIR_JSON,
                json={**appt, "status": "cancelled"})
    assert r.status_code == 200, r.text
    revoked = _wait(lambda: [x for x in _requests(server, appt["id"])
                             if x["status"] == "revoked"] if not _requests(
        server, appt["id"], "active") else None)
    assert revoked and len(revoked) == 2


def test_a_bad_reminder_setting_on_a_visit_type_is_refused_with_its_path(
        server: ServerProcess) -> None:
    vt = visit_type(SYSTEM, "typo", 30)
    vt["extension"].append({"url": "reminder", "valueDuration": {
        "value": 72, "system": "http://unitsofmeasure.org", "code": "hours"}})
    r = web.put(f"{server.base}/HealthcareService/typo", headers=FHIR_JSON, json={
        "resourceType": "HealthcareService", "id": "typo", "extension": [vt]})
    assert r.status_code == 422, r.text
    assert "valueDuration" in r.text and "UCUM" in r.text


# -- delivery ------------------------------------------------------------------------------


def test_a_due_reminder_arrives_by_email_with_a_calendar_invitation(
        server: ServerProcess, smtp: SmtpSink) -> None:
    patient = _patient(server, "Mailer", email="mailer@example.org", zone="Europe/Paris")
    start = _due_soon()
    appt = _book(server, patient, start)
    mails = smtp.wait_for("mailer@example.org")
    assert len(mails) == 1, "no reminder email came"
    mail = mails[0]
    assert mail.message["Subject"].startswith("Reminder: Annual check-up")
    text = mail.part("text/plain").get_content().replace("\r\n", "\n")
    assert "Dr. Ada Lovelace" in text and "Room 3, Floor 2" in text
    assert "(Europe/Paris)" in text
    invite = mail.part("text/calendar")
    assert invite is not None and invite.get_param("method") == "REQUEST"
    cal = icalendar.Calendar.from_ical(invite.get_content())
    assert str(cal["METHOD"]) == "REQUEST"
    event = next(iter(cal.walk("VEVENT")))
    assert event.decoded("DTSTART").astimezone(UTC) == start
    assert str(event["UID"]).startswith(f"Appointment-{appt['id']}@")
    assert "mailto:mailer@example.org" in str(event["ATTENDEE"]).lower()
    [request] = _requests(server, appt["id"])
    done = _wait(lambda: _communications(server, request["id"], "email"))
    assert done and done[0]["status"] == "completed"
    assert done[0]["payload"][0]["contentString"] == text
    assert _wait(lambda: _requests(server, appt["id"], "completed"))
    assert mail.message["Message-ID"] == f"<{request['id']}@clinic.example>"


def test_a_due_reminder_goes_to_the_sms_gateway_with_its_token(
        server: ServerProcess, sms: HttpSink) -> None:
    patient = _patient(server, "Texter", phone="+15551230003")
    _book(server, patient, _due_soon())
    hits = sms.wait_for(lambda hs: any(b"+15551230003" in h.body for h in hs))
    mine = [h for h in hits if b"+15551230003" in h.body]
    assert len(mine) == 1
    body = orjson.loads(mine[0].body)
    assert mine[0].headers["authorization"] == "Bearer sms-token"
    assert body["to"] == "+15551230003" and body["from"] == "+15550000000"
    assert body["text"].startswith("Reminder: Annual check-up") and "/r/" in body["text"]


def test_the_webhook_is_signed_and_retried_with_one_id_until_accepted(
        server: ServerProcess, hook: HttpSink) -> None:
    patient = _patient(server, "Hooked")
    appt = _book(server, patient, _due_soon(), description="Flaky check-up")
    ref = f"Appointment/{appt['id']}".encode()

    def three(hs: list[Hit]) -> bool:
        return len([h for h in hs if ref in h.body]) >= 3

    mine = [h for h in hook.wait_for(three, timeout=30) if ref in h.body]
    assert len(mine) == 3, [h.headers for h in mine]
    assert len({h.headers["webhook-id"] for h in mine}) == 1
    verifier = Webhook(SECRET)
    for h in mine:
        payload = verifier.verify(h.body, h.headers)
        assert payload["appointment"] == f"Appointment/{appt['id']}"
        assert payload["kind"] == "reminder"
    [request] = _requests(server, appt["id"])
    done = _wait(lambda: _communications(server, request["id"], "webhook"))
    assert done and done[0]["status"] == "completed"
    assert "attempt 3" in done[0]["note"][0]["text"]


def test_a_forged_webhook_signature_does_not_verify(server: ServerProcess,
                                                    hook: HttpSink) -> None:
    """The check above could pass vacuously if the verifier accepted anything."""
    hit = _wait(lambda: hook.hits[0] if hook.hits else None)
    assert hit is not None
    forged = {**hit.headers, "webhook-signature": "v1,AAAA" + hit.headers[
        "webhook-signature"][7:]}
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(hit.body, forged)


def test_an_opt_out_made_after_planning_is_honoured_when_the_reminder_falls_due(
        server: ServerProcess, smtp: SmtpSink) -> None:
    patient = _patient(server, "Late", email="late@example.org")
    start = datetime.now(UTC).replace(microsecond=0) + LEAD + timedelta(seconds=5)
    appt = _book(server, patient, start)
    assert _wait(lambda: [r for r in _requests(server, appt["id"])
                          if "email" in _channels(r)])
    body = web.get(f"{server.base}/{patient}").json()
    body["extension"] = [{"url": OPT_OUT, "valueCode": "all"}]
    assert web.put(f"{server.base}/{patient}", headers=FHIR_JSON, json=body).status_code == 200
    [request] = _requests(server, appt["id"])
    for channel in ("email", "webhook"):
        done = _wait(lambda c=channel: _communications(server, request["id"], c), timeout=30)
        assert done and done[0]["status"] == "not-done", channel
        assert "opted out" in done[0]["statusReason"]["text"]
    assert smtp.to("late@example.org") == []
    assert web.get(f"{server.base}/CommunicationRequest/{request['id']}").json()[
        "status"] == "revoked"


def test_a_cancellation_after_the_invitation_sends_a_calendar_cancel(
        server: ServerProcess, smtp: SmtpSink) -> None:
    patient = _patient(server, "Undo", email="undo@example.org")
    appt = _book(server, patient, _due_soon())
    first = smtp.wait_for("undo@example.org")
    assert len(first) == 1
    assert _wait(lambda: _requests(server, appt["id"], "completed"))
    current = web.get(f"{server.base}/Appointment/{appt['id']}").json()
    r = web.put(f"{server.base}/Appointment/{appt['id']}", headers=FHIR_JSON,
                json={**current, "status": "cancelled"})
    assert r.status_code == 200, r.text
    mails = smtp.wait_for("undo@example.org", 2)
    assert len(mails) == 2, "no cancellation came"
    cancel = mails[1]
    assert cancel.message["Subject"].startswith("Cancelled:")
    invite = cancel.part("text/calendar")
    assert invite.get_param("method") == "CANCEL"
    old = next(iter(icalendar.Calendar.from_ical(first[0].part("text/calendar").get_content())
                    .walk("VEVENT")))
    new = next(iter(icalendar.Calendar.from_ical(invite.get_content()).walk("VEVENT")))
    assert str(new["STATUS"]) == "CANCELLED" and new["UID"] == old["UID"]
    assert int(new["SEQUENCE"]) > int(old["SEQUENCE"])


# -- answers from the link -----------------------------------------------------------------


def _linked(server: ServerProcess, smtp: SmtpSink, name: str
            ) -> tuple[dict[str, Any], str, str]:
    address = f"{name.lower()}@example.org"
    patient = _patient(server, name, email=address)
    appt = _book(server, patient, _due_soon())
    mails = smtp.wait_for(address)
    assert mails, "no reminder came"
    return appt, patient, _link(mails[0])


def test_opening_the_link_shows_the_visit_and_changes_nothing(
        server: ServerProcess, smtp: SmtpSink) -> None:
    appt, _patient_ref, link = _linked(server, smtp, "Looker")
    before = web.get(f"{server.base}/Appointment/{appt['id']}").json()["meta"]["versionId"]
    page = web.get(link)
    assert page.status_code == 200 and "Annual check-up" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    after = web.get(f"{server.base}/Appointment/{appt['id']}").json()["meta"]["versionId"]
    assert after == before


def test_confirming_from_the_link_records_an_appointment_response_and_the_status(
        server: ServerProcess, smtp: SmtpSink) -> None:
    appt, patient, link = _linked(server, smtp, "Confirmer")
    r = web.post(link, data={"action": "confirm"})
    assert r.status_code == 200 and "confirmed" in r.text
    current = web.get(f"{server.base}/Appointment/{appt['id']}").json()
    mine = next(p for p in current["participant"] if p["actor"]["reference"] == patient)
    assert mine["status"] == "accepted" and current["status"] == "booked"
    answers = web.get(f"{server.base}/AppointmentResponse?appointment=Appointment/"
                      f"{appt['id']}").json()["entry"]
    assert [a["resource"]["participantStatus"] for a in answers] == ["accepted"]
    assert answers[0]["resource"]["actor"] == {"reference": patient}


def test_cancelling_from_the_link_cancels_the_visit_as_the_patient(
        server: ServerProcess, smtp: SmtpSink) -> None:
    appt, _patient_ref, link = _linked(server, smtp, "Dropper")
    r = web.post(link, data={"action": "cancel"})
    assert r.status_code == 200, r.text
    current = web.get(f"{server.base}/Appointment/{appt['id']}").json()
    assert current["status"] == "cancelled"
    assert current["cancelationReason"]["coding"][0]["code"] == "pat"
    answers = web.get(f"{server.base}/AppointmentResponse?appointment=Appointment/"
                      f"{appt['id']}").json()["entry"]
    assert answers[0]["resource"]["participantStatus"] == "declined"


def test_stopping_emails_from_the_link_sets_the_opt_out_on_the_patient(
        server: ServerProcess, smtp: SmtpSink) -> None:
    _appt, patient, link = _linked(server, smtp, "Stopper")
    r = web.post(link, data={"action": "stop-email"})
    assert r.status_code == 200, r.text
    body = web.get(f"{server.base}/{patient}").json()
    assert {"url": OPT_OUT, "valueCode": "email"} in body["extension"]


def test_an_altered_or_made_up_link_opens_nothing(server: ServerProcess,
                                                  smtp: SmtpSink) -> None:
    appt, _patient_ref, link = _linked(server, smtp, "Prober")
    head, _, mac = link.rpartition(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for bad in (f"{head}.{flipped}", link.rsplit("/", 1)[0] + "/nonsense"):
        assert web.get(bad).status_code == 404
        assert web.post(bad, data={"action": "cancel"}).status_code == 404
    assert web.get(f"{server.base}/Appointment/{appt['id']}").json()["status"] == "booked"


# -- telehealth (item 5) -------------------------------------------------------------------

VIRTUAL = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService"


def _join(appt: dict[str, Any]) -> str | None:
    for ext in appt.get("extension", []):
        if ext["url"] == VIRTUAL:
            return next(s["valueUrl"] for s in ext["extension"] if s["url"] == "address")
    return None


def test_a_virtual_visit_gets_an_unguessable_join_link_when_booked(
        server: ServerProcess) -> None:
    patient = _patient(server, "Remote", email="remote@example.org")
    one = _book(server, patient, datetime(2031, 6, 2, 14, 0, tzinfo=UTC), "video")
    two = _book(server, patient, datetime(2031, 6, 3, 14, 0, tzinfo=UTC), "video")
    links = [_join(one), _join(two)]
    assert all(link and link.startswith("https://meet.example.org/clinic-") for link in links)
    assert links[0] != links[1]
    assert all(len(str(link).rsplit("clinic-", 1)[1]) >= 22 for link in links)  # 128 bits
    plain = _book(server, patient, datetime(2031, 6, 4, 14, 0, tzinfo=UTC), "checkup")
    assert _join(plain) is None


def test_a_virtual_visit_keeps_its_link_when_moved_and_loses_it_when_cancelled(
        server: ServerProcess) -> None:
    patient = _patient(server, "Remote2", email="remote2@example.org")
    appt = _book(server, patient, datetime(2031, 6, 5, 14, 0, tzinfo=UTC), "video")
    link = _join(appt)
    moved = {**appt, "start": "2031-06-05T15:00:00Z", "end": "2031-06-05T15:30:00Z"}
    r = web.put(f"{server.base}/Appointment/{appt['id']}", headers=FHIR_JSON, json=moved)
    assert r.status_code == 200 and _join(r.json()) == link
    r = web.put(f"{server.base}/Appointment/{appt['id']}", headers=FHIR_JSON,
                json={**r.json(), "status": "cancelled"})
    assert r.status_code == 200 and _join(r.json()) is None


def test_the_join_link_travels_in_the_reminder_and_its_invitation(
        server: ServerProcess, smtp: SmtpSink, sms: HttpSink) -> None:
    patient = _patient(server, "Remote3", email="remote3@example.org", phone="+15551230009")
    start = _due_soon()
    body = _booking(patient, start, "video")
    body["participant"] = [p for p in body["participant"]
                           if not p["actor"]["reference"].startswith(("Practitioner", "Location"))]
    r = web.post(f"{server.base}/Appointment", headers=FHIR_JSON, json=body)
    assert r.status_code == 201, r.text
    link = _join(r.json())
    assert link
    # the visit type names no reminders of its own: the server default (60 min) applies
    mail = smtp.wait_for("remote3@example.org")
    assert mail, "no reminder came"
    assert link in mail[0].part("text/plain").get_content()
    event = next(iter(icalendar.Calendar.from_ical(
        mail[0].part("text/calendar").get_content()).walk("VEVENT")))
    assert str(event["URL"]) == link and link in str(event["DESCRIPTION"])
    hits = sms.wait_for(lambda hs: any(b"+15551230009" in h.body for h in hs))
    text = next(orjson.loads(h.body)["text"] for h in hits if b"+15551230009" in h.body)
    assert link in text
