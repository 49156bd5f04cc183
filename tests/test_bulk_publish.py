"""SMART Scheduling Links publishing (issue 16, item 4): ``GET /$bulk-publish`` and its NDJSON
files, against real servers on both stores. The published data is checked against the
specification's manifest rules and the Location, Schedule and Slot profiles
(``tests/support/scheduling_links.py``, the invariants evaluated by fhirpathpy) and against
the official R4 JSON schema; slots are free or busy exactly as the booking guard decides."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from tests.support import web
from tests.support.scheduling import hours, template, uid
from tests.support.scheduling_links import (
    CAPACITY,
    DEEP_LINK,
    PHONE,
    manifest_errors,
    profile_errors,
)
from tests.support.server import ServerProcess, servers, store_url

NY = ZoneInfo("America/New_York")
LINK = "https://clinic.example/book?schedule={schedule}&start={start}&slot={slot}"
ENV = {"FHIR_SCHED_AUTH": "none", "FHIR_SCHED_PUBLISH": "all",
       "FHIR_SCHED_PUBLISH_REFRESH_SECONDS": "1", "FHIR_SCHED_PUBLISH_DAYS": "14",
       "FHIR_SCHED_BOOKING_LINK": LINK, "FHIR_SCHED_BOOKING_PHONE": "+1-617-555-0100"}


@dataclass
class Servers:
    open: ServerProcess  # auth none, publishing everything
    secured: ServerProcess  # auth on (the default), publishing one Location's Schedules
    off: ServerProcess  # auth none, publishing nothing
    location: str  # what ``secured`` publishes


@pytest.fixture(scope="module")
def world(store_kind: str, mongo_uri: str | None) -> Iterator[Servers]:
    url = store_url(store_kind, mongo_uri, "fhir_sched_publish")
    location = f"loc-{uid()}"
    secured_env = {"FHIR_SCHED_AUTH": "smart", "FHIR_SCHED_PUBLISH": f"Location/{location}",
                   "FHIR_SCHED_PUBLISH_REFRESH_SECONDS": "1"}
    with (servers(url, 1, ENV) as (first,), servers(url, 1, secured_env) as (secured,),
          servers(url, 1, {"FHIR_SCHED_AUTH": "none"}) as (off,)):
        yield Servers(first, secured, off, location)


def _put(server: ServerProcess, res: dict[str, Any]) -> None:
    r = web.put(f"{server.base}/{res['resourceType']}/{res['id']}", json=res,
                headers={"content-type": "application/fhir+json"})
    assert r.status_code in (200, 201), r.text


def _location(server: ServerProcess, lid: str, state: str = "MA", phone: bool = True) -> str:
    loc: dict[str, Any] = {"resourceType": "Location", "id": lid, "status": "active",
                           "name": f"Clinic {lid}",
                           "address": {"line": ["1 Main St"], "city": "Boston", "state": state,
                                       "postalCode": "02110"}}
    if phone:
        loc["telecom"] = [{"system": "phone", "value": "+1-617-555-0199"},
                          {"system": "url", "value": "https://clinic.example"}]
    _put(server, loc)
    return f"Location/{lid}"


def _calendar(server: ServerProcess, location: str | None, *, capacity: int | None = None,
              actor_location: bool = True) -> tuple[str, str]:
    """A practitioner with a weekday 09:00-12:00 New York Schedule of 30-minute slots;
    (practitioner reference, schedule id)."""
    key = uid()
    pid, sid = f"pr-{key}", f"sc-{key}"
    _put(server, {"resourceType": "Practitioner", "id": pid, "name": [{"family": f"Doc {key}"}]})
    actors = [{"reference": f"Practitioner/{pid}"}]
    if location and actor_location:
        actors.append({"reference": location})
    _put(server, {"resourceType": "Schedule", "id": sid, "active": True, "actor": actors,
                  "serviceType": [{"coding": [{
                      "system": "http://terminology.hl7.org/CodeSystem/service-type",
                      "code": "124", "display": "General Practice"}]}],
                  "extension": [template("America/New_York",
                                         hours(("mon", "tue", "wed", "thu", "fri"),
                                               "09:00:00", "12:00:00"),
                                         slot=30, capacity=capacity)]})
    return f"Practitioner/{pid}", sid


def _next_weekday_slot(hour: int = 10) -> tuple[datetime, datetime]:
    day = datetime.now(NY) + timedelta(days=2)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    start = day.replace(hour=hour, minute=0, second=0, microsecond=0)
    return start, start + timedelta(minutes=30)


def _book(server: ServerProcess, practitioner: str, start: datetime, end: datetime) -> None:
    r = web.post(f"{server.base}/Appointment", headers={"content-type": "application/fhir+json"},
                 json={"resourceType": "Appointment", "status": "booked",
                       "start": start.isoformat(), "end": end.isoformat(),
                       "participant": [{"actor": {"reference": practitioner},
                                        "status": "accepted"}]})
    assert r.status_code == 201, r.text


def _manifest(server: ServerProcess, **params: str) -> dict[str, Any]:
    r = web.get(f"{server.base}/$bulk-publish", params=params)
    assert r.status_code == 200, r.text
    manifest: dict[str, Any] = r.json()
    return manifest


def _fresh(server: ServerProcess, after: datetime) -> dict[str, Any]:
    """The first manifest made after ``after`` (the test server remakes one each second)."""
    deadline = time.monotonic() + 30
    while True:
        manifest = _manifest(server)
        made = datetime.fromisoformat(manifest["transactionTime"].replace("Z", "+00:00"))
        if made > after:
            return manifest
        if time.monotonic() > deadline:
            newest = web.get(f"{server.base}/_history", params={"_count": "1"}).json()
            pytest.fail(f"no publication made after {after.isoformat()} within 30 s: still "
                        f"{manifest['transactionTime']}; newest change "
                        f"{[e.get('resource', {}).get('meta') for e in newest.get('entry', [])]}"
                        f"; server log:\n{server.log()[-3000:]}")
        time.sleep(0.3)


def _lines(url: str) -> list[dict[str, Any]]:
    r = web.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+ndjson")
    return [orjson.loads(line) for line in r.content.splitlines() if line]


def _published(manifest: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [res for item in manifest["output"] if item["type"] == type_
            for res in _lines(item["url"])]


def _slots_of(manifest: dict[str, Any], sid: str) -> list[dict[str, Any]]:
    return [s for s in _published(manifest, "Slot")
            if s["schedule"]["reference"] == f"Schedule/{sid}"]


def _at(slots: list[dict[str, Any]], start: datetime) -> dict[str, Any]:
    found = [s for s in slots if datetime.fromisoformat(s["start"]) == start]
    assert len(found) == 1, f"{len(found)} slots start at {start}"
    return found[0]


def _ext(slot: dict[str, Any], url: str) -> Any:
    return next((next(v for k, v in e.items() if k.startswith("value"))
                 for e in slot.get("extension", []) if e["url"] == url), None)


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- conformance


def test_manifest_follows_the_bulk_publication_manifest_rules(world: Servers) -> None:
    _calendar(world.open, _location(world.open, f"loc-{uid()}"))
    manifest = _fresh(world.open, _now())
    url = f"{world.open.base}/$bulk-publish"
    assert manifest_errors(manifest, url) == []
    assert manifest["request"] == url
    assert {"Location", "Schedule", "Slot"} <= {o["type"] for o in manifest["output"]}
    assert all(o["url"].startswith(url + "/") for o in manifest["output"])


def test_every_published_resource_meets_its_profile_and_r4(world: Servers,
                                                           fhir_schema: Any) -> None:
    location = _location(world.open, f"loc-{uid()}")
    _calendar(world.open, location)
    _calendar(world.open, _location(world.open, f"loc-{uid()}"), capacity=3)
    manifest = _fresh(world.open, _now())
    checked = 0
    for type_ in ("Location", "Schedule", "Slot"):
        for res in _published(manifest, type_):
            if type_ == "Location" and res.get("telecom") is None:
                continue  # a test publishes a Location with gaps on purpose
            assert profile_errors(res) == [], res
            assert fhir_schema.errors(res) == [], res
            checked += 1
    assert checked > 20


def test_a_location_missing_what_the_profile_needs_is_named_in_the_error_file(
        world: Servers) -> None:
    lid = f"loc-{uid()}"
    _calendar(world.open, _location(world.open, lid, phone=False))
    manifest = _fresh(world.open, _now())
    errors = [o for o in manifest["error"] if o["type"] == "OperationOutcome"]
    assert len(errors) == 1
    texts = [i["diagnostics"] for oo in _lines(errors[0]["url"]) for i in oo["issue"]]
    assert any(f"Location/{lid} lacks telecom" in t for t in texts), texts


def test_manifest_and_files_answer_without_accept_and_with_the_spec_types(
        world: Servers) -> None:
    _calendar(world.open, _location(world.open, f"loc-{uid()}"))
    manifest = _fresh(world.open, _now())
    url = f"{world.open.base}/$bulk-publish"
    for accept in (None, "application/json", "*/*"):
        r = httpx.get(url, headers={"accept": accept} if accept else {})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    slot_url = next(o["url"] for o in manifest["output"] if o["type"] == "Slot")
    for accept in (None, "application/fhir+ndjson"):
        r = httpx.get(slot_url, headers={"accept": accept} if accept else {})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/fhir+ndjson")


# --------------------------------------------------------------------------- free and busy


def test_template_time_is_published_as_slots_in_the_locations_zone(world: Servers) -> None:
    _pr, sid = _calendar(world.open, _location(world.open, f"loc-{uid()}"))
    start, end = _next_weekday_slot()
    slots = _slots_of(_fresh(world.open, _now()), sid)
    slot = _at(slots, start)
    assert slot["status"] == "free"
    assert slot["end"] == end.isoformat()
    assert slot["start"].endswith(start.strftime("%z")[:3] + ":" + start.strftime("%z")[3:])
    # 09:00-12:00 in 30-minute slots: six a weekday, none at the weekend
    days = {datetime.fromisoformat(s["start"]).date() for s in slots}
    assert all(d.weekday() < 5 for d in days)
    whole = days - {min(days), max(days)}  # the window cuts into its first and last day
    assert len(whole) >= 8
    assert all(sum(1 for s in slots if datetime.fromisoformat(s["start"]).date() == d) == 6
               for d in whole)


def test_a_booked_slot_is_published_busy_and_its_neighbours_stay_free(world: Servers) -> None:
    practitioner, sid = _calendar(world.open, _location(world.open, f"loc-{uid()}"))
    start, end = _next_weekday_slot()
    before = _slots_of(_fresh(world.open, _now()), sid)
    assert _at(before, start)["status"] == "free"
    booked_at = _now()
    _book(world.open, practitioner, start, end)
    after = _slots_of(_fresh(world.open, booked_at), sid)
    assert _at(after, start)["status"] == "busy"
    assert _ext(_at(after, start), DEEP_LINK) is None  # a busy slot offers no booking
    assert _at(after, start - timedelta(minutes=30))["status"] == "free"
    assert _at(after, end)["status"] == "free"


def test_a_slot_published_free_is_one_the_guard_accepts(world: Servers) -> None:
    practitioner, sid = _calendar(world.open, _location(world.open, f"loc-{uid()}"))
    slots = _slots_of(_fresh(world.open, _now()), sid)
    free = [s for s in slots if s["status"] == "free"][3]
    _book(world.open, practitioner, datetime.fromisoformat(free["start"]),
          datetime.fromisoformat(free["end"]))  # asserts 201


def test_slot_ids_stay_the_same_from_one_publication_to_the_next(world: Servers) -> None:
    practitioner, sid = _calendar(world.open, _location(world.open, f"loc-{uid()}"))
    first = {s["start"]: s["id"] for s in _slots_of(_fresh(world.open, _now()), sid)}
    start, end = _next_weekday_slot(9)
    changed = _now()
    _book(world.open, practitioner, start, end)
    second = {s["start"]: s["id"] for s in _slots_of(_fresh(world.open, changed), sid)}
    assert first == second


def test_a_group_schedule_publishes_the_seats_left(world: Servers) -> None:
    practitioner, sid = _calendar(world.open, _location(world.open, f"loc-{uid()}"), capacity=3)
    start, end = _next_weekday_slot()
    assert _ext(_at(_slots_of(_fresh(world.open, _now()), sid), start), CAPACITY) == 3
    booked_at = _now()
    _book(world.open, practitioner, start, end)
    slot = _at(_slots_of(_fresh(world.open, booked_at), sid), start)
    assert slot["status"] == "free" and _ext(slot, CAPACITY) == 2


def test_a_free_slot_carries_its_deep_link_and_the_location_phone(world: Servers) -> None:
    _pr, sid = _calendar(world.open, _location(world.open, f"loc-{uid()}"))
    start, _end = _next_weekday_slot()
    slot = _at(_slots_of(_fresh(world.open, _now()), sid), start)
    link = urlsplit(_ext(slot, DEEP_LINK))
    query = parse_qs(link.query)
    assert (link.scheme, link.netloc, link.path) == ("https", "clinic.example", "/book")
    assert query["schedule"] == [sid] and query["slot"] == [slot["id"]]
    assert datetime.fromisoformat(query["start"][0]) == start
    assert _ext(slot, PHONE) == "+1-617-555-0199"


# --------------------------------------------------------------------------- what is published


def test_a_practitioner_schedule_is_published_at_its_roles_location(world: Servers) -> None:
    location = _location(world.open, f"loc-{uid()}")
    practitioner, sid = _calendar(world.open, location, actor_location=False)
    _put(world.open, {"resourceType": "PractitionerRole", "id": f"role-{uid()}", "active": True,
                      "practitioner": {"reference": practitioner},
                      "location": [{"reference": location}]})
    manifest = _fresh(world.open, _now())
    sched = next(s for s in _published(manifest, "Schedule") if s["id"] == sid)
    assert {"reference": location, "display": f"Clinic {location.split('/')[1]}"} in sched["actor"]
    assert location.split("/")[1] in {loc["id"] for loc in _published(manifest, "Location")}


def test_a_patients_schedule_is_never_published(world: Servers) -> None:
    pid, sid = f"pat-{uid()}", f"sc-{uid()}"
    _put(world.open, {"resourceType": "Patient", "id": pid, "name": [{"family": "Private"}]})
    _put(world.open, {"resourceType": "Schedule", "id": sid, "active": True,
                      "actor": [{"reference": f"Patient/{pid}"}]})
    manifest = _fresh(world.open, _now())
    assert sid not in {s["id"] for s in _published(manifest, "Schedule")}
    assert not any(pid in line for o in manifest["output"]
                   for line in web.get(o["url"]).text.splitlines())


def test_slots_are_split_by_state_with_the_state_hint(world: Servers) -> None:
    _pr, ma = _calendar(world.open, _location(world.open, f"loc-{uid()}", state="MA"))
    _pr, ct = _calendar(world.open, _location(world.open, f"loc-{uid()}", state="CT"))
    manifest = _fresh(world.open, _now())
    slot_files = {tuple(o.get("extension", {}).get("state", [])): o["url"]
                  for o in manifest["output"] if o["type"] == "Slot"}
    assert {("MA",), ("CT",)} <= set(slot_files)
    schedules = {s["schedule"]["reference"] for s in _lines(slot_files[("CT",)])}
    assert f"Schedule/{ct}" in schedules and f"Schedule/{ma}" not in schedules
    location_file = next(o for o in manifest["output"] if o["type"] == "Location")
    assert {"MA", "CT"} <= set(location_file["extension"]["state"])


# --------------------------------------------------------------------------- polling


def test_since_lists_only_the_schedules_that_changed(world: Servers) -> None:
    location = _location(world.open, f"loc-{uid()}")
    practitioner, changed = _calendar(world.open, location)
    _pr, untouched = _calendar(world.open, location)
    _fresh(world.open, _now())
    since = _now()
    time.sleep(0.01)
    start, end = _next_weekday_slot()
    _book(world.open, practitioner, start, end)
    _fresh(world.open, since)
    instant = since.isoformat().replace("+00:00", "Z")
    manifest = _manifest(world.open, _since=instant)
    assert all("_since=" in o["url"] for o in manifest["output"])
    slots = _published(manifest, "Slot")
    schedules = {s["schedule"]["reference"] for s in slots}
    assert f"Schedule/{changed}" in schedules and f"Schedule/{untouched}" not in schedules
    assert _at([s for s in slots if s["schedule"]["reference"] == f"Schedule/{changed}"],
               start)["status"] == "busy"
    assert location.split("/")[1] not in {loc["id"] for loc in _published(manifest, "Location")}


def test_a_bad_since_is_a_400_naming_it(world: Servers) -> None:
    r = web.get(f"{world.open.base}/$bulk-publish", params={"_since": "yesterday"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["_since"]


def test_an_unchanged_publication_answers_304_to_its_etag_and_date(world: Servers) -> None:
    url = f"{world.open.base}/$bulk-publish"
    r = web.get(url)
    assert "max-age=1" in r.headers["cache-control"]
    again = httpx.get(url, headers={"if-none-match": r.headers["etag"]})
    assert again.status_code in (200, 304)
    if again.status_code == 200:  # remade in between (other tests write): its own ETag works
        r = again
    file_url = r.json()["output"][0]["url"]
    f = web.get(file_url)
    assert httpx.get(file_url, headers={"if-none-match": f.headers["etag"]}).status_code in (
        200, 304)
    later = format_datetime(_now() + timedelta(hours=1), usegmt=True)
    assert httpx.get(file_url, headers={"if-modified-since": later}).status_code == 304


# --------------------------------------------------------------------------- the setting


def test_publishing_is_off_unless_chosen(world: Servers) -> None:
    r = httpx.get(f"{world.off.base}/$bulk-publish")
    assert r.status_code == 404
    assert "FHIR_SCHED_PUBLISH" in r.json()["issue"][0]["diagnostics"]


def test_with_auth_on_the_publication_is_open_and_the_rest_is_not(world: Servers) -> None:
    r = httpx.get(f"{world.secured.base}/$bulk-publish")
    assert r.status_code == 200, r.text
    assert httpx.get(r.json()["output"][0]["url"]).status_code == 200
    assert httpx.get(f"{world.secured.base}/Slot").status_code == 401  # Schedule: public view


def test_only_the_chosen_schedules_are_published(world: Servers) -> None:
    chosen = _location(world.open, world.location)
    _pr, inside = _calendar(world.open, chosen)
    _pr, outside = _calendar(world.open, _location(world.open, f"loc-{uid()}"))
    manifest = _fresh(world.secured, _now())
    published = {s["id"] for s in _published(manifest, "Schedule")}
    assert inside in published and outside not in published
