"""RFC 5545 output of fhir_sched.engage.ics, read back with icalendar's parser and with ical.js
(tests/peers/icaljs, installed with npm from its lock file on first use), a parser nobody here
wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import pytest

from fhir_sched.engage.ics import Event, Person, appointment_event, calendar, cancelled

ICALJS = Path(__file__).parent / "peers" / "icaljs"
NY = "America/New_York"
SPECIAL = "Dr. Müller; Room 3, Floor 2"
STAMP = datetime(2031, 2, 1, 12, tzinfo=UTC)
# 2031-03-09 is the US spring-forward Sunday: the same 09:00 is 14:00Z before it, 13:00Z after.
BEFORE_DST = "2031-03-03T09:00:00-05:00"
AFTER_DST = "2031-03-10T13:00:00Z"


def _appointment(id_: str = "123", start: str = AFTER_DST, **extra: Any) -> dict[str, Any]:
    begin = datetime.fromisoformat(start.replace("Z", "+00:00"))
    return {
        "resourceType": "Appointment",
        "id": id_,
        "meta": {"versionId": "1", "lastUpdated": "2031-02-01T12:00:00.000Z"},
        "status": "booked",
        "start": start,
        "end": (begin + timedelta(minutes=30)).isoformat(),
        "participant": [
            {"actor": {"reference": "Patient/p-4711", "display": "Ana Lima"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/7"}, "status": "accepted"},
            {"actor": {"reference": "Location/3", "display": "Main clinic"}, "status": "accepted"},
        ],
        **extra,
    }


def _event(appointment: dict[str, Any], **kwargs: Any) -> Event:
    event = appointment_event(appointment, uid_domain="fhir-sched.example", zone=NY,
                              names={"Practitioner/7": SPECIAL}, **kwargs)
    assert event is not None
    return event


def _dst_pair() -> list[Event]:
    return [_event(_appointment("1", BEFORE_DST)), _event(_appointment("2", AFTER_DST))]


def _vevents(ics: bytes) -> list[icalendar.Event]:
    return list(icalendar.Calendar.from_ical(ics).events)


def test_dst_pair_shows_0900_local_time_with_tzid() -> None:
    ics = calendar(_dst_pair())
    assert b"DTSTART;TZID=America/New_York:20310303T090000\r\n" in ics
    assert b"DTSTART;TZID=America/New_York:20310310T090000\r\n" in ics


def test_vtimezone_holds_standard_and_daylight_parts() -> None:
    (vtimezone,) = icalendar.Calendar.from_ical(calendar(_dst_pair())).timezones
    assert vtimezone["TZID"] == NY
    assert {c.name for c in vtimezone.subcomponents} == {"STANDARD", "DAYLIGHT"}


def test_dst_pair_reads_back_as_the_appointments_instants() -> None:
    starts = [e.start for e in _vevents(calendar(_dst_pair()))]
    assert all(isinstance(s, datetime) and s.tzinfo is not None for s in starts)
    given = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in (BEFORE_DST, AFTER_DST)]
    assert [s.astimezone(UTC) for s in starts if isinstance(s, datetime)] == [
        g.astimezone(UTC) for g in given]


def test_method_request_appears_when_asked() -> None:
    assert b"\r\nMETHOD:REQUEST\r\n" in calendar(_dst_pair(), method="REQUEST")


def test_feed_has_no_method() -> None:
    assert b"METHOD" not in calendar(_dst_pair())


def test_cancel_carries_status_cancelled_and_a_higher_sequence() -> None:
    event = _event(_appointment())
    ics = calendar([cancelled(event, stamp=STAMP)], method="CANCEL")
    (vevent,) = _vevents(ics)
    assert b"\r\nMETHOD:CANCEL\r\n" in ics
    assert vevent["STATUS"] == "CANCELLED"
    assert vevent.sequence > event.sequence
    assert vevent["UID"] == event.uid


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError):
        calendar(_dst_pair(), method="REPLY")


def test_uid_is_stable_across_versions() -> None:
    v1 = _event(_appointment())
    v2 = _event({**_appointment(start=BEFORE_DST), "meta": {"versionId": "2"}})
    assert v1.uid == v2.uid == "Appointment-123@fhir-sched.example"


def test_sequence_follows_version_id() -> None:
    event = _event({**_appointment(), "meta": {"versionId": "5"}})
    (vevent,) = _vevents(calendar([event]))
    assert event.sequence == vevent.sequence == 5


def test_sequence_is_zero_without_a_numeric_version_id() -> None:
    assert _event({**_appointment(), "meta": {"versionId": "v-abc"}}).sequence == 0


@pytest.mark.parametrize(("fhir", "ical"), [
    ("booked", "CONFIRMED"), ("arrived", "CONFIRMED"), ("fulfilled", "CONFIRMED"),
    ("checked-in", "CONFIRMED"), ("proposed", "TENTATIVE"), ("pending", "TENTATIVE"),
    ("waitlist", "TENTATIVE"), ("cancelled", "CANCELLED"), ("noshow", "CANCELLED"),
    ("entered-in-error", "CANCELLED"),
])
def test_status_maps_from_the_appointment_status(fhir: str, ical: str) -> None:
    assert _event(_appointment(status=fhir)).status == ical


def test_special_text_round_trips_through_the_parser() -> None:
    text = f"{SPECIAL}\nsecond line, with; everything: ünïcødé ✓"
    event = replace(_event(_appointment()), summary=SPECIAL, location=text, description=text)
    (vevent,) = _vevents(calendar([event]))
    assert (vevent["SUMMARY"], vevent["LOCATION"], vevent["DESCRIPTION"]) == (SPECIAL, text, text)


def test_lines_are_crlf_terminated_and_at_most_75_octets() -> None:
    long = "Bring your insurance card; Müller, Straße 5 — ✓ " * 10
    event = replace(_event(_appointment()), description=long, summary=long)
    ics = calendar([event], name=long, refresh=timedelta(hours=1))
    assert ics.endswith(b"\r\n")
    assert b"\n" not in ics.replace(b"\r\n", b"")
    assert b"\r" not in ics.replace(b"\r\n", b"")
    lines = ics.split(b"\r\n")[:-1]
    assert max(len(line) for line in lines) <= 75
    assert any(line.startswith(b" ") for line in lines)  # folding did happen
    for line in lines:
        line.decode("utf-8")  # folds never split a multi-byte character


def test_feed_has_one_vtimezone_per_zone() -> None:
    start = datetime(2031, 1, 6, 14, tzinfo=UTC)
    events = [replace(_event(_appointment(str(i))), start=start + timedelta(days=i),
                      end=start + timedelta(days=i, hours=1),
                      zone="Europe/Berlin" if i % 3 == 0 else NY) for i in range(60)]
    timezones = icalendar.Calendar.from_ical(calendar(events)).timezones
    assert sorted(tz.tz_name for tz in timezones) == ["America/New_York", "Europe/Berlin"]


def test_appointment_without_start_gives_none() -> None:
    appointment = _appointment()
    del appointment["start"]
    assert appointment_event(appointment, uid_domain="x.example", zone=NY) is None


def test_summary_falls_back_to_service_type_then_appointment() -> None:
    typed = _appointment(serviceType=[{"coding": [{"display": "Physiotherapy"}]}])
    assert _event(typed).summary == "Physiotherapy"
    assert _event(_appointment()).summary == "Appointment"
    assert _event(_appointment(description="Check-up")).summary == "Check-up"
    assert _event(_appointment(description="Check-up"), summary="Visit").summary == "Visit"


def test_location_and_description_come_from_participants_and_notes() -> None:
    event = _event(_appointment(comment="Fasting", patientInstruction="Arrive early"),
                   join_url="https://meet.example/j/1")
    assert event.location == "Main clinic"
    assert event.description == (
        f"With: {SPECIAL}\nFasting\nArrive early\nJoin: https://meet.example/j/1")
    assert event.url == "https://meet.example/j/1"
    assert event.attendees == (Person("Ana Lima"),)


def test_patient_identifiers_never_appear() -> None:
    appointment = _appointment()
    appointment["participant"][0]["actor"]["identifier"] = {"value": "MRN-99"}
    ics = calendar([_event(appointment)], method="REQUEST")
    assert b"p-4711" not in ics
    assert b"MRN-99" not in ics


def test_attendees_without_email_are_left_out_and_with_email_are_named() -> None:
    event = replace(_event(_appointment()), organizer=Person("Clinic", "desk@clinic.example"),
                    attendees=(Person("Ana Lima"), Person("Bo Li", "bo@example.org")))
    (vevent,) = _vevents(calendar([event], method="REQUEST"))
    assert [(str(a), a.params["CN"]) for a in vevent.attendees] == [
        ("mailto:bo@example.org", "Bo Li")]
    assert vevent["ORGANIZER"].params["CN"] == "Clinic"


def test_feed_carries_name_and_refresh_interval() -> None:
    ics = calendar(_dst_pair(), name="Dr. Müller", refresh=timedelta(hours=1))
    assert b"\r\nREFRESH-INTERVAL;VALUE=DURATION:PT1H\r\n" in ics
    assert b"\r\nX-PUBLISHED-TTL:PT1H\r\n" in ics
    parsed = icalendar.Calendar.from_ical(ics)
    assert parsed["NAME"] == parsed["X-WR-CALNAME"] == "Dr. Müller"


def test_dtstamp_is_written_in_utc() -> None:
    event = _event(_appointment(), stamp=datetime(2031, 2, 1, 7, tzinfo=ZoneInfo(NY)))
    assert b"\r\nDTSTAMP:20310201T120000Z\r\n" in calendar([event])


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        replace(_event(_appointment()), start=datetime(2031, 3, 10, 9))


def _icaljs_installed() -> Path:
    """The Node peer, installed from its lock file when missing (npm registry needed once)."""
    node = shutil.which("node")
    assert node, "node is needed for the ical.js peer test"
    if not (ICALJS / "node_modules" / "ical.js").is_dir():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install the ical.js peer"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=ICALJS, check=True, capture_output=True, timeout=300)
    return Path(node)


def test_icaljs_reads_the_same_instants_text_and_versions(tmp_path: Path) -> None:
    node = _icaljs_installed()
    before = _event({**_appointment("1", BEFORE_DST), "meta": {"versionId": "3"}},
                    summary=SPECIAL)
    after = cancelled(_event(_appointment("2", AFTER_DST), summary=SPECIAL), stamp=STAMP)
    path = tmp_path / "pair.ics"
    path.write_bytes(calendar([before, after], method="REQUEST"))
    # A zone ical.js failed to resolve would fall back to floating time in the process's own TZ.
    env = {**os.environ, "TZ": "Asia/Kolkata"}
    proc = subprocess.run([str(node), str(ICALJS / "read.mjs"), str(path)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout)
    assert seen["method"] == "REQUEST"
    assert [(e["uid"], e["summary"], e["status"], e["sequence"], e["tzid"])
            for e in seen["events"]] == [
        (before.uid, SPECIAL, "CONFIRMED", 3, NY), (after.uid, SPECIAL, "CANCELLED", 2, NY)]
    assert [(e["start_utc"], e["end_utc"]) for e in seen["events"]] == [
        ("2031-03-03T14:00:00.000Z", "2031-03-03T14:30:00.000Z"),
        ("2031-03-10T13:00:00.000Z", "2031-03-10T13:30:00.000Z")]
    assert [(e["location"], e["description"]) for e in seen["events"]] == [
        ("Main clinic", f"With: {SPECIAL}")] * 2
