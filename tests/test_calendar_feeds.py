"""iCalendar feeds (issue 15, item 4): ``$calendar-link`` makes a secret, revocable feed URL
for a practitioner, location or patient; the feed is RFC 5545, in the owner's zone across DST,
current with the schedule, read back by icalendar and by ical.js (npm). Against a real server
on both stores."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import pytest

from tests.support import web
from tests.support.server import ServerProcess, served
from tests.test_ics import ICALJS, _icaljs_installed

FHIR_JSON = {"content-type": "application/fhir+json"}
TZ_URL = "http://hl7.org/fhir/StructureDefinition/timezone"
NY = "America/New_York"


@pytest.fixture(scope="module")
def server(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    with served(store_kind, mongo_uri, "fhir_sched_feeds", {"FHIR_SCHED_AUTH": "none"}) as proc:
        yield proc


def _utc(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _clock_change() -> datetime:
    """The next day New York changes its clocks, a week or more from now (feeds hold a year
    ahead, so the test never ages out of the window)."""
    zone = ZoneInfo(NY)
    day = datetime.now(zone).replace(hour=9, minute=0, second=0, microsecond=0)
    day += timedelta(days=7)
    while (day + timedelta(days=1)).utcoffset() == day.utcoffset():
        day += timedelta(days=1)
    return day + timedelta(days=1)


def _day(n: int, hour: int = 14) -> tuple[str, str]:
    """A half hour ``n`` days from now, at ``hour`` UTC."""
    start = (datetime.now(UTC) + timedelta(days=n)).replace(hour=hour, minute=0, second=0,
                                                             microsecond=0)
    return _utc(start), _utc(start + timedelta(minutes=30))


def _make(server: ServerProcess, body: dict[str, Any]) -> str:
    r = web.post(f"{server.base}/{body['resourceType']}", headers=FHIR_JSON, json=body)
    assert r.status_code == 201, r.text
    return f"{body['resourceType']}/{r.json()['id']}"


def _world(server: ServerProcess) -> tuple[str, str, str]:
    doctor = _make(server, {"resourceType": "Practitioner", "extension": [
        {"url": TZ_URL, "valueCode": NY}], "name": [{"prefix": ["Dr."], "family": "Feed"}]})
    room = _make(server, {"resourceType": "Location", "name": "Room 7"})
    patient = _make(server, {"resourceType": "Patient", "name": [{"given": ["Secret"],
                                                                  "family": "Name"}]})
    return doctor, room, patient


def _book(server: ServerProcess, doctor: str, room: str, patient: str, start: str, end: str
          ) -> dict[str, Any]:
    r = web.post(f"{server.base}/Appointment", headers=FHIR_JSON, json={
        "resourceType": "Appointment", "status": "booked", "description": "Follow-up",
        "start": start, "end": end, "participant": [
            {"actor": {"reference": ref}, "status": "accepted"} for ref in (doctor, room,
                                                                              patient)]})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _link(server: ServerProcess, owner: str, **inputs: str) -> dict[str, Any]:
    params = {"resourceType": "Parameters", "parameter": [
        {"name": k, "valueString": v} for k, v in inputs.items()]}
    r = web.post(f"{server.base}/{owner}/$calendar-link", headers=FHIR_JSON, json=params)
    assert r.status_code == 200, r.text
    return {p["name"]: p.get("valueUri", p.get("valueInteger"))
            for p in r.json()["parameter"]}


def _events(feed: bytes) -> list[icalendar.Event]:
    return list(icalendar.Calendar.from_ical(feed).walk("VEVENT"))


def test_a_practitioners_feed_shows_their_visits_at_local_time_across_dst(
        server: ServerProcess) -> None:
    doctor, room, patient = _world(server)
    change = _clock_change()  # 09:00 local on the first day after the change
    week_before = change - timedelta(days=7)
    before = _book(server, doctor, room, patient, _utc(week_before),
                   _utc(week_before + timedelta(minutes=30)))
    after = _book(server, doctor, room, patient, _utc(change),
                  _utc(change + timedelta(minutes=30)))
    url = _link(server, doctor)["url"]
    assert doctor.split("/")[1] not in url  # the URL names nobody
    r = web.get(url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/calendar")
    events = {str(e["UID"]).split("@")[0]: e for e in _events(r.content)}
    for appt in (before, after):
        event = events[f"Appointment-{appt['id']}"]
        assert event["DTSTART"].params["TZID"] == NY
        assert event.decoded("DTSTART").hour == 9  # 09:00 in New York both weeks
    assert "Room 7" in str(events[f"Appointment-{after['id']}"]["LOCATION"])


def test_a_staff_feed_never_names_the_patient(server: ServerProcess) -> None:
    doctor, room, patient = _world(server)
    _book(server, doctor, room, patient, *_day(20))
    for owner in (doctor, room):
        body = web.get(_link(server, owner)["url"]).content
        assert _events(body) and b"Secret" not in body


def test_a_patients_own_feed_lists_their_visits(server: ServerProcess) -> None:
    doctor, room, patient = _world(server)
    appt = _book(server, doctor, room, patient, *_day(21))
    events = _events(web.get(_link(server, patient)["url"]).content)
    assert [str(e["UID"]).split("@")[0] for e in events] == [f"Appointment-{appt['id']}"]


def test_the_feed_follows_a_reschedule_and_shows_a_cancellation(server: ServerProcess) -> None:
    doctor, room, patient = _world(server)
    appt = _book(server, doctor, room, patient, *_day(22))
    url = _link(server, doctor)["url"]
    first = _events(web.get(url).content)[0]
    start, end = _day(23, hour=15)
    moved = {**appt, "start": start, "end": end}
    r = web.put(f"{server.base}/Appointment/{appt['id']}", headers=FHIR_JSON, json=moved)
    assert r.status_code == 200, r.text
    second = _events(web.get(url).content)[0]
    assert second.decoded("DTSTART").astimezone(UTC) == datetime.fromisoformat(start)
    assert str(second["DTSTART"].params["TZID"]) == NY
    assert int(second["SEQUENCE"]) > int(first["SEQUENCE"]) and second["UID"] == first["UID"]
    r = web.put(f"{server.base}/Appointment/{appt['id']}", headers=FHIR_JSON,
                json={**r.json(), "status": "cancelled"})
    assert r.status_code == 200, r.text
    third = _events(web.get(url).content)[0]
    assert str(third["STATUS"]) == "CANCELLED"


def test_an_unchanged_feed_is_a_304_for_its_etag(server: ServerProcess) -> None:
    doctor, room, patient = _world(server)
    _book(server, doctor, room, patient, *_day(24))
    url = _link(server, doctor)["url"]
    first = web.get(url)
    again = web.get(url, headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    _book(server, doctor, room, patient, *_day(25))
    changed = web.get(url, headers={"if-none-match": first.headers["etag"]})
    assert changed.status_code == 200 and len(_events(changed.content)) == 2


def test_a_revoked_feed_url_stops_working_and_the_others_do_not(server: ServerProcess) -> None:
    doctor, _room, _patient = _world(server)
    one, two = _link(server, doctor)["url"], _link(server, doctor)["url"]
    assert one != two
    assert _link(server, doctor, revoke=one) == {"revoked": 1}
    assert web.get(one).status_code == 404
    assert web.get(two).status_code == 200
    three = _link(server, doctor)["url"]
    assert _link(server, doctor, revoke="all") == {"revoked": 2}
    assert web.get(two).status_code == 404 and web.get(three).status_code == 404


def test_an_unknown_feed_url_is_a_plain_404(server: ServerProcess) -> None:
    r = web.get(f"{server.base.removesuffix('/fhir')}/ics/not-a-real-token.ics")
    assert r.status_code == 404 and "calendar" not in r.text


def test_a_feed_link_for_a_resource_that_does_not_exist_is_a_404(server: ServerProcess) -> None:
    r = web.post(f"{server.base}/Practitioner/nobody-here/$calendar-link", headers=FHIR_JSON,
                 json={"resourceType": "Parameters"})
    assert r.status_code == 404, r.text


def test_ical_js_reads_the_feed_as_icalendar_does(server: ServerProcess, tmp_path: Path) -> None:
    node = _icaljs_installed()
    doctor, room, patient = _world(server)
    change = _clock_change()
    appt = _book(server, doctor, room, patient, _utc(change),
                 _utc(change + timedelta(minutes=30)))
    path = tmp_path / "feed.ics"
    path.write_bytes(web.get(_link(server, doctor)["url"]).content)
    proc = subprocess.run([str(node), str(ICALJS / "read.mjs"), str(path)],
                          env={**os.environ, "TZ": "Asia/Kolkata"}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout)
    assert seen["method"] == "PUBLISH"
    [event] = seen["events"]
    assert event["uid"].startswith(f"Appointment-{appt['id']}@")
    assert (event["start_utc"], event["end_utc"], event["tzid"]) == (
        _utc(change).replace("Z", ".000Z"),
        _utc(change + timedelta(minutes=30)).replace("Z", ".000Z"), NY)
    assert event["summary"] == "Follow-up" and event["status"] == "CONFIRMED"
