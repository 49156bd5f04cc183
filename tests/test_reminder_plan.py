"""The pure parts of reminders (issue 15, item 2): when a reminder is due, whom it reaches by
which channel, the server's lead-time setting, signed links and webhook signatures."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from standardwebhooks.webhooks import Webhook

from fhir_sched.engage.channels import webhook_signature
from fhir_sched.engage.links import Signer
from fhir_sched.engage.reminders import (
    OPT_OUT_URL,
    address,
    outside_quiet,
    plan,
    quiet_hours,
    reachable,
)
from fhir_sched.scheduling.notices import parse_leads

NY = ZoneInfo("America/New_York")
QUIET = (time(21, 0), time(8, 0))


def _local(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=NY)


def test_a_reminder_due_in_the_quiet_hours_goes_out_the_minute_before_they_begin() -> None:
    due = _local(2031, 5, 5, 7, 0)  # 07:00, before quiet hours end at 08:00
    assert outside_quiet(due, NY, QUIET) == _local(2031, 5, 4, 20, 59)


def test_a_reminder_due_late_in_the_evening_goes_out_before_the_quiet_hours() -> None:
    assert outside_quiet(_local(2031, 5, 5, 22, 30), NY, QUIET) == _local(2031, 5, 5, 20, 59)


def test_a_reminder_due_in_the_day_keeps_its_time() -> None:
    due = _local(2031, 5, 5, 12, 0)
    assert outside_quiet(due, NY, QUIET) == due


def test_quiet_hours_within_one_day_are_honoured_too() -> None:
    lunch = (time(12, 0), time(13, 0))
    assert outside_quiet(_local(2031, 5, 5, 12, 30), NY, lunch) == _local(2031, 5, 5, 11, 59)
    assert outside_quiet(_local(2031, 5, 5, 13, 0), NY, lunch) == _local(2031, 5, 5, 13, 0)


def test_quiet_hours_are_judged_in_the_patients_zone_not_utc() -> None:
    due = datetime(2031, 5, 5, 1, 0, tzinfo=UTC)  # 21:00 the evening before in New York
    assert outside_quiet(due, NY, QUIET) == _local(2031, 5, 4, 20, 59)
    assert outside_quiet(due, ZoneInfo("Asia/Tokyo"), QUIET) == due  # 10:00 in Tokyo


def test_unreadable_quiet_hours_are_refused() -> None:
    with pytest.raises(ValueError):
        quiet_hours("9pm to 8am")
    assert quiet_hours("") is None


def test_only_leads_still_to_come_are_planned() -> None:
    start = datetime(2031, 5, 10, 14, 0, tzinfo=UTC)
    now = start - timedelta(hours=30)
    appt = {"status": "booked", "start": "2031-05-10T14:00:00Z"}
    planned = plan("a1", appt, (timedelta(hours=72), timedelta(hours=24)), ("email", "sms"),
                   NY, None, now)
    assert [(p.key, p.channels, p.due) for p in planned] == [
        ("a1/1440m", ("email", "sms"), start - timedelta(hours=24))]


def test_a_booking_that_is_not_booked_is_owed_nothing() -> None:
    appt = {"status": "pending", "start": "2031-05-10T14:00:00Z"}
    assert plan("a1", appt, (timedelta(hours=24),), ("email",), NY, None,
                datetime(2031, 5, 1, tzinfo=UTC)) == []


def test_the_best_ranked_current_address_is_used() -> None:
    patient = {"telecom": [
        {"system": "email", "value": "old@example.org", "use": "old"},
        {"system": "email", "value": "second@example.org", "rank": 2},
        {"system": "email", "value": "first@example.org", "rank": 1},
        {"system": "email", "value": "ended@example.org", "rank": 0,
         "period": {"end": "2020-01-01"}},
        {"system": "phone", "value": "+15550001", "use": "home"},
        {"system": "phone", "value": "+15550002", "use": "mobile"}]}
    assert address(patient, "email") == "first@example.org"
    assert address(patient, "sms") == "+15550002"  # a landline gets no texts
    assert address({"telecom": []}, "sms") is None


def test_opting_out_of_all_leaves_no_channel() -> None:
    patient = {"telecom": [{"system": "email", "value": "a@example.org"}],
               "extension": [{"url": OPT_OUT_URL, "valueCode": "all"}]}
    assert reachable(patient, ("email", "webhook"), ()) == []
    assert reachable({**patient, "extension": []}, ("email", "sms", "webhook"), ()) == [
        "email", "webhook"]


def test_a_visit_type_can_narrow_the_channels() -> None:
    patient = {"telecom": [{"system": "email", "value": "a@example.org"},
                           {"system": "sms", "value": "+15550003"}]}
    assert reachable(patient, ("email", "sms", "webhook"), ("sms",)) == ["sms"]


def test_the_server_lead_setting_reads_minutes_hours_and_days() -> None:
    assert parse_leads("72h, 24h,90m,2d") == (timedelta(hours=72), timedelta(days=2),
                                              timedelta(hours=24), timedelta(minutes=90))
    assert parse_leads("") == ()
    for bad in ("72", "24 hours", "-1h", "0m", "400d"):
        with pytest.raises(ValueError):
            parse_leads(bad)


def test_a_signed_link_opens_until_it_expires_and_not_after() -> None:
    signer = Signer(b"k" * 32)
    now = datetime(2031, 1, 1, tzinfo=UTC)
    token = signer.token("appt-1", "pat-1", now + timedelta(hours=1))
    link = signer.verify(token, now)
    assert link is not None and (link.appointment, link.patient) == ("appt-1", "pat-1")
    assert signer.verify(token, now + timedelta(hours=2)) is None
    assert Signer(b"x" * 32).verify(token, now) is None  # another server's key


def test_a_link_altered_anywhere_is_refused() -> None:
    signer = Signer(b"k" * 32)
    now = datetime(2031, 1, 1, tzinfo=UTC)
    token = signer.token("appt-1", "pat-1", now + timedelta(hours=1))
    for i in range(len(token)):
        if token[i] == ".":
            continue
        altered = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
        assert signer.verify(altered, now) is None, i


def test_our_webhook_signature_is_the_one_standard_webhooks_computes() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"id":"n1","kind":"reminder"}'
    stamp = 1_900_000_000
    theirs = Webhook(secret).sign("n1", datetime.fromtimestamp(stamp, UTC), body.decode())
    assert webhook_signature(secret, "n1", stamp, body) == theirs
