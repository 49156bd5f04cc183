"""The public view (issue 16, item 2): what a booking widget on a clinic's site may ask without
signing in, against real servers with auth on.

Without an Authorization header a request may read and search the directory and ask $find for
free time, for no patient; everything else stays 401, a bad token stays 401, includes and
chains never reach another type, a patient's Schedule is never shown, and each address is rate
limited. A visit type a patient may not book online (``selfBooking`` false) is refused to a
patient's own token with the clinic's phone, offered to nobody without a token, and still
booked by staff. The store-dependent behaviours run on both adapters; the rate limit, the
switch and the pure parts run once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fhir_sched.errors import FhirError
from fhir_sched.rest.public_view import admits
from fhir_sched.rest.throttle import TokenBuckets
from fhir_sched.scheduling.booking_rules import RULE_SYSTEM, clinic_phone
from fhir_sched.service.authorization import Interaction, check_public
from tests.support import web
from tests.support.launch import REDIRECT, Browser, add_user, pkce
from tests.support.scheduling import hours, need, parameters, schedule, template, visit_type
from tests.support.server import ServerProcess, cleanup_dir, served, store_url
from tests.support.smart import BackendClient, get_token, register, register_backend

SYSTEM = "https://clinic.example/widget-visits"
ALL_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PHONE = "+64 9 555 0100"
PASSWORD = "widget-password-1"
ADMIN = BackendClient.new("widget-admin")
SMART_ON = {"FHIR_SCHED_AUTH": "smart"}


@dataclass
class Clinic:
    server: ServerProcess
    admin: dict[str, str]  # system/*.cruds
    patient_token: dict[str, str]  # alice's own token, from a standalone patient launch
    alice: str
    appointment: str  # one booking of alice with the doctor

    @property
    def base(self) -> str:
        return self.server.base


def _window(days: int = 3) -> dict[str, str]:
    now = datetime.now(UTC)
    return {"start": now.isoformat().replace("+00:00", "Z"),
            "end": (now + timedelta(days=days)).isoformat().replace("+00:00", "Z")}


@pytest.fixture(scope="module")
def clinic(store_kind: str, mongo_uri: str | None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Clinic]:
    """A clinic open around the clock: a doctor, a service with an online visit type and a
    phone-only one (its phone on the service's Location), a patient with a Schedule of her own
    and a booking."""
    url = store_url(store_kind, mongo_uri, "fhir_sched_public")
    register_backend(url, ADMIN, "system/*.cruds", tmp_path_factory.mktemp("public"))
    assert register(url, "widget-app", "launch/patient patient/*.cruds", "--redirect-uri",
                    REDIRECT, "--public").returncode == 0
    proc = ServerProcess(url, env=SMART_ON).start()
    try:
        admin = {"authorization": f"Bearer {get_token(proc.base, ADMIN, 'system/*.cruds')}"}

        def put(body: dict[str, Any]) -> None:
            r = web.put(f"{proc.base}/{body['resourceType']}/{body['id']}", json=body,
                        headers=admin)
            assert r.status_code in (200, 201), r.text

        put({"resourceType": "Organization", "id": "widget-org", "name": "Widget clinic"})
        put({"resourceType": "Location", "id": "widget-place", "name": "Widget clinic rooms",
             "managingOrganization": {"reference": "Organization/widget-org"},
             "telecom": [{"system": "email", "value": "desk@clinic.example"},
                         {"system": "phone", "value": PHONE}]})
        put({"resourceType": "Practitioner", "id": "widget-doc",
             "name": [{"family": "Open"}]})
        doctor = need("Practitioner")
        put({"resourceType": "HealthcareService", "id": "widget", "name": "General practice",
             "providedBy": {"reference": "Organization/widget-org"},
             "location": [{"reference": "Location/widget-place"}],
             "extension": [visit_type(SYSTEM, "checkup", 30, doctor), {
                 **visit_type(SYSTEM, "by-phone", 30, doctor), "extension": [
                     *visit_type(SYSTEM, "by-phone", 30, doctor)["extension"],
                     {"url": "selfBooking", "valueBoolean": False}]}]})
        put(schedule("widget-doc-sched", "Practitioner/widget-doc",
                     template("UTC", hours(ALL_WEEK, "00:00:00", "23:59:00"))))
        r = web.post(f"{proc.base}/Patient", headers=admin, json={
            "resourceType": "Patient", "name": [{"family": "Widget"}],
            "birthDate": "1990-01-01"})
        assert r.status_code == 201, r.text
        alice = f"Patient/{r.json()['id']}"
        put(schedule("widget-alice-sched", alice))  # a patient's own calendar: never public
        start = (datetime.now(UTC) + timedelta(days=20)).replace(minute=0, second=0,
                                                                 microsecond=0)
        r = web.post(f"{proc.base}/Appointment", headers=admin, json={
            "resourceType": "Appointment", "status": "booked",
            "start": start.isoformat().replace("+00:00", "Z"),
            "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
            "participant": [{"actor": {"reference": "Practitioner/widget-doc"},
                             "status": "accepted"},
                            {"actor": {"reference": alice}, "status": "accepted"}]})
        assert r.status_code == 201, r.text
        appointment = f"Appointment/{r.json()['id']}"
        add_user(url, "widget-alice", PASSWORD, alice)
        verifier, challenge = pkce()
        browser = Browser(proc.base.removesuffix("/fhir"), proc.base)
        code = browser.code("widget-app", "launch/patient patient/*.cruds", challenge,
                            "widget-alice", PASSWORD)
        exchanged = browser.exchange("widget-app", code, verifier)
        assert exchanged.status_code == 200, exchanged.text
        token = {"authorization": f"Bearer {exchanged.json()['access_token']}"}
        yield Clinic(proc, admin, token, alice, appointment)
    finally:
        proc.stop()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


def _find(c: Clinic, code: str, who: dict[str, str] | None = None, **extra: str
          ) -> httpx.Response:
    return web.get(f"{c.base}/Appointment/$find", headers=who or {}, params={
        **_window(), "visit-type": f"{SYSTEM}|{code}", "_count": "5", **extra})


def _find_parameters(*extra: dict[str, Any]) -> dict[str, Any]:
    window = _window()
    return {"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueDateTime": window["start"]},
        {"name": "end", "valueDateTime": window["end"]}, *extra]}


def _entries(r: httpx.Response, type_: str) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])
            if e["resource"]["resourceType"] == type_]


def _issue(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    if body.get("resourceType") == "Bundle":
        [only] = body["entry"]
        body = only["resource"]
    assert body["resourceType"] == "OperationOutcome", body
    return dict(body["issue"][0])


# -- what a request without a token may do ----------------------------------------------------


def test_anonymous_find_offers_free_times_for_no_patient(clinic: Clinic) -> None:
    options = _entries(_find(clinic, "checkup"), "Appointment")
    assert options, "an open calendar offers time to a widget before sign-in"
    assert all(o["status"] == "proposed" for o in options)
    actors = [p["actor"]["reference"] for o in options for p in o["participant"]]
    assert "Practitioner/widget-doc" in actors
    assert not any(a.startswith("Patient/") for a in actors)


def test_anonymous_find_pages_through_its_next_link(clinic: Clinic) -> None:
    first = _find(clinic, "checkup")
    [link] = [x["url"] for x in first.json()["link"] if x["relation"] == "next"]
    assert _entries(web.get(link), "Appointment")


def test_anonymous_find_naming_a_patient_is_403_naming_the_parameter(clinic: Clinic) -> None:
    r = _find(clinic, "checkup", patient=clinic.alice)
    assert r.status_code == 403, r.text
    issue = _issue(r)
    assert issue["code"] == "forbidden"
    assert issue["expression"] == ["patient-reference"]


def test_anonymous_find_with_insurance_is_403_naming_the_parameter(clinic: Clinic) -> None:
    r = web.post(f"{clinic.base}/Appointment/$find", json=_find_parameters(
        {"name": "insurance-reference", "valueReference": {"reference": "Coverage/x"}}))
    assert r.status_code == 403, r.text
    assert _issue(r)["expression"] == ["insurance-reference"]


def test_anonymous_post_find_answers_like_get(clinic: Clinic) -> None:
    r = web.post(f"{clinic.base}/Appointment/$find", json=_find_parameters(
        {"name": "visit-type", "valueString": f"{SYSTEM}|checkup"},
        {"name": "_count", "valueInteger": 2}))
    assert _entries(r, "Appointment")


@pytest.mark.parametrize("path", ["Patient", "Appointment", "Slot", "Schedule/_history",
                                  "AuditEvent", "Coverage"])
def test_anonymous_reads_of_patient_data_are_401(clinic: Clinic, path: str) -> None:
    r = web.get(f"{clinic.base}/{path}")
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_anonymous_read_of_a_patient_or_appointment_by_id_is_401(clinic: Clinic) -> None:
    for ref in (clinic.alice, clinic.appointment):
        assert web.get(f"{clinic.base}/{ref}").status_code == 401


def test_anonymous_writes_are_401(clinic: Clinic) -> None:
    body = {"resourceType": "HealthcareService", "id": "widget", "name": "Taken over"}
    assert web.put(f"{clinic.base}/HealthcareService/widget", json=body).status_code == 401
    assert web.post(f"{clinic.base}/Appointment/$book", json=parameters()).status_code == 401
    assert web.post(f"{clinic.base}/Appointment/$hold", json=parameters()).status_code == 401


def test_anonymous_search_of_healthcare_services_works(clinic: Clinic) -> None:
    [service] = _entries(web.get(f"{clinic.base}/HealthcareService",
                                 params={"_id": "widget"}), "HealthcareService")
    assert service["name"] == "General practice"
    r = web.post(f"{clinic.base}/HealthcareService/_search", data={"_id": "widget"})
    assert len(_entries(r, "HealthcareService")) == 1


def test_anonymous_read_of_the_directory_works(clinic: Clinic) -> None:
    for ref in ("Location/widget-place", "Organization/widget-org", "Practitioner/widget-doc",
                "Schedule/widget-doc-sched", "HealthcareService/widget"):
        r = web.get(f"{clinic.base}/{ref}")
        assert r.status_code == 200, (ref, r.text)


def test_a_widget_reads_which_visit_types_are_booked_by_phone(clinic: Clinic) -> None:
    service = web.get(f"{clinic.base}/HealthcareService/widget").json()
    flags = {next(s["valueCoding"]["code"] for s in vt["extension"] if s["url"] == "code"):
             next((s["valueBoolean"] for s in vt["extension"] if s["url"] == "selfBooking"),
                  True)
             for vt in service["extension"] if vt["url"].endswith("/visit-type")}
    assert flags == {"checkup": True, "by-phone": False}
    place = web.get(f"{clinic.base}/Location/widget-place").json()
    assert {"system": "phone", "value": PHONE} in place["telecom"]


def test_a_patients_schedule_is_not_public(clinic: Clinic) -> None:
    assert web.get(f"{clinic.base}/Schedule/widget-alice-sched").status_code == 403
    r = web.get(f"{clinic.base}/Schedule", params={"actor": clinic.alice, "_total": "accurate"})
    assert _entries(r, "Schedule") == []
    assert r.json().get("total", 0) == 0
    staff = web.get(f"{clinic.base}/Schedule", headers=clinic.admin,
                    params={"actor": clinic.alice})
    assert len(_entries(staff, "Schedule")) == 1  # it is there: hidden, not missing


def test_anonymous_revinclude_and_iterate_include_return_no_patient_data(
        clinic: Clinic) -> None:
    params = {"_id": "widget-doc", "_revinclude": "Appointment:actor",
              "_include:iterate": "Appointment:patient"}
    staff = web.get(f"{clinic.base}/Practitioner", headers=clinic.admin, params=params)
    assert {e["resource"]["resourceType"] for e in staff.json()["entry"]} == {
        "Practitioner", "Appointment", "Patient"}  # the query does reach them
    r = web.get(f"{clinic.base}/Practitioner", params=params)
    assert [e["resource"]["resourceType"] for e in r.json()["entry"]] == ["Practitioner"]


def test_anonymous_revinclude_of_a_patients_schedule_returns_none_of_it(
        clinic: Clinic) -> None:
    r = web.get(f"{clinic.base}/Practitioner", params={
        "_id": "widget-doc", "_revinclude": "Schedule:actor", "_include:iterate": "Schedule:actor"})
    refs = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in r.json()["entry"]]
    assert "Schedule/widget-alice-sched" not in refs
    assert not any(ref.startswith("Patient/") for ref in refs)


@pytest.mark.parametrize("params", [
    {"_has:Appointment:actor:status": "booked"},
    {"_has:Slot:schedule:status": "free"},
], ids=["has-appointment", "has-slot"])
def test_anonymous_has_through_patient_data_is_403(clinic: Clinic, params: dict[str, str]
                                                   ) -> None:
    path = "Practitioner" if "Appointment" in next(iter(params)) else "Schedule"
    r = web.get(f"{clinic.base}/{path}", params=params)
    assert r.status_code == 403, r.text


def test_anonymous_chain_into_a_patient_is_403(clinic: Clinic) -> None:
    r = web.get(f"{clinic.base}/Schedule", params={"actor:Patient.family": "Widget"})
    assert r.status_code == 403, r.text


def test_an_invalid_token_is_401_never_public(clinic: Clinic) -> None:
    for headers in ({"authorization": "Bearer not-a-token"}, {"authorization": "Basic eDp5"}):
        assert _find(clinic, "checkup", headers).status_code == 401
        r = web.get(f"{clinic.base}/HealthcareService/widget", headers=headers)
        assert r.status_code == 401, r.text


def test_the_capability_statement_states_the_public_view(clinic: Clinic) -> None:
    rest = web.get(f"{clinic.base}/metadata").json()["rest"][0]
    limits = {e["url"]: e["valueInteger"] for x in rest["extension"]
              if x["url"].endswith("/request-limits") for e in x["extension"]}
    assert limits["public-requests-per-minute"] == 120
    for text in (rest["documentation"], rest["security"]["description"]):
        assert "Public view" in text and "HealthcareService" in text and "$find" in text


# -- a visit type booked by phone ---------------------------------------------------------------

_used: list[datetime] = []


def _proposal(c: Clinic, code: str) -> dict[str, Any]:
    """A free time of ``code`` for alice, not one an earlier test took."""
    options = _entries(_find(c, code, c.admin, _count="50"), "Appointment")
    option = next(o for o in options if not any(
        abs(datetime.fromisoformat(o["start"]) - u) < timedelta(minutes=30) for u in _used))
    _used.append(datetime.fromisoformat(option["start"]))
    return {**option, "participant": [*option["participant"], {
        "actor": {"reference": c.alice}, "status": "accepted"}]}


def _rest(c: Clinic, appt: dict[str, Any], who: dict[str, str]) -> httpx.Response:
    body = {k: v for k, v in appt.items() if k not in ("id", "meta")}
    return web.post(f"{c.base}/Appointment", json={**body, "status": "booked"}, headers=who)


def _hold(c: Clinic, appt: dict[str, Any], who: dict[str, str]) -> httpx.Response:
    return web.post(f"{c.base}/Appointment/$hold",
                    json=parameters(("appt-resource", appt)), headers=who)


def _book(c: Clinic, appt: dict[str, Any], who: dict[str, str]) -> httpx.Response:
    return web.post(f"{c.base}/Appointment/$book",
                    json=parameters(("appt-resource", appt)), headers=who)


DOORS = {"rest": _rest, "$hold": _hold, "$book": _book}


@pytest.mark.parametrize("door", DOORS)
def test_a_patient_token_cannot_book_a_phone_only_visit_and_is_told_the_phone(
        clinic: Clinic, door: str) -> None:
    r = DOORS[door](clinic, _proposal(clinic, "by-phone"), clinic.patient_token)
    assert r.status_code == 422, r.text
    issue = _issue(r)
    assert issue["details"]["coding"][0] == {"system": RULE_SYSTEM, "code": "staff-only",
                                             "display": "Staff only"}
    assert f"booked by phone: {PHONE}" in issue["diagnostics"]


def test_a_patient_token_books_an_online_visit_type(clinic: Clinic) -> None:
    r = _book(clinic, _proposal(clinic, "checkup"), clinic.patient_token)
    assert r.status_code == 200, r.text


def test_a_system_token_books_a_phone_only_visit(clinic: Clinic) -> None:
    r = _book(clinic, _proposal(clinic, "by-phone"), clinic.admin)
    assert r.status_code == 200, r.text


def test_anonymous_find_offers_no_phone_only_visit_and_explains_the_phone(
        clinic: Clinic) -> None:
    assert _entries(_find(clinic, "by-phone", clinic.admin), "Appointment")  # staff: offered
    r = _find(clinic, "by-phone", _explain="true")
    assert _entries(r, "Appointment") == []
    [note] = [i for o in _entries(r, "OperationOutcome") for i in o["issue"]]
    assert note["details"]["coding"][0]["code"] == "staff-only"
    assert PHONE in note["details"]["text"] or PHONE in note.get("diagnostics", "")


# -- the rate limit and the switch (store-independent: SQLite) ------------------------------------


@pytest.fixture(scope="module")
def throttled() -> Iterator[ServerProcess]:
    with served("sqlite", None, "fhir_sched_public_rate",
                {**SMART_ON, "FHIR_SCHED_PUBLIC_VIEW_PER_MINUTE": "3"}) as proc:
        yield proc


def test_the_rate_limit_answers_429_with_retry_after(throttled: ServerProcess) -> None:
    url = f"{throttled.base}/HealthcareService"
    assert [web.get(url).status_code for _ in range(3)] == [200, 200, 200]
    r = web.get(url)
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["retry-after"]) <= 20  # 3 a minute: one every 20 s
    assert _issue(r)["code"] == "throttled"
    assert web.get(f"{throttled.base}/metadata").status_code == 200  # not counted


def test_public_view_off_gives_401_for_anonymous_find() -> None:
    with served("sqlite", None, "fhir_sched_public_off",
                {**SMART_ON, "FHIR_SCHED_PUBLIC_VIEW": "off"}) as proc:
        r = web.get(f"{proc.base}/Appointment/$find", params=_window())
        assert r.status_code == 401, r.text
        assert web.get(f"{proc.base}/HealthcareService").status_code == 401
        rest = web.get(f"{proc.base}/metadata").json()["rest"][0]
        assert "Public view" not in rest["documentation"]


# -- pure parts ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_minutes_burst_then_says_how_long_to_wait() -> None:
    clock = Clock()
    buckets = TokenBuckets(6, clock=clock)
    assert [buckets.take("a") for _ in range(6)] == [0.0] * 6
    assert buckets.take("a") == pytest.approx(10.0)  # 6 a minute: one every 10 s
    assert buckets.take("b") == 0.0  # each address its own


def test_token_bucket_refills_over_time_up_to_the_burst() -> None:
    clock = Clock()
    buckets = TokenBuckets(6, clock=clock)
    for _ in range(6):
        buckets.take("a")
    clock.now += 10
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    clock.now += 3600
    assert [buckets.take("a") for _ in range(7)][-1] > 0  # a long pause: a burst, no more


def test_token_bucket_a_refused_request_takes_nothing() -> None:
    clock = Clock()
    buckets = TokenBuckets(60, clock=clock)
    for _ in range(60):
        buckets.take("a")
    assert buckets.take("a") == pytest.approx(1.0)
    assert buckets.take("a") == pytest.approx(1.0)  # asking again does not push it further


def test_token_bucket_forgets_the_address_seen_longest_ago_past_its_cap() -> None:
    clock = Clock()
    buckets = TokenBuckets(1, max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        buckets.take(key)
    buckets.take("a")  # seen again: now the newest
    buckets.take("d")
    assert len(buckets) == 3
    assert "b" not in buckets and {"a", "c", "d"} <= {k for k in "acd" if k in buckets}


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/Appointment/$find", True), ("POST", "/Appointment/$find", True),
    ("GET", "/HealthcareService", True), ("GET", "/HealthcareService/", True),
    ("GET", "/Location/x", True), ("POST", "/Schedule/_search", True),
    ("GET", "/Patient", False), ("GET", "/Appointment", False), ("GET", "/Slot", False),
    ("POST", "/HealthcareService", False), ("PUT", "/Location/x", False),
    ("DELETE", "/Location/x", False), ("GET", "/Location/x/_history", False),
    ("GET", "/Location/_history", False), ("GET", "/Location/$everything", False),
    ("POST", "/Appointment/$book", False), ("GET", "/", False), ("POST", "/", False),
    ("GET", "/Patient/x/Schedule", False), ("GET", "/Appointment/$find/x", False),
])
def test_the_gate_admits_only_directory_reads_and_find(method: str, path: str,
                                                       expected: bool) -> None:
    assert admits(method, path) is expected


def test_the_public_policy_reads_the_directory_and_nothing_else() -> None:
    check_public(Interaction.SEARCH, "Location")
    check_public(Interaction.READ, "Schedule", "s", resource={
        "resourceType": "Schedule", "actor": [{"reference": "Practitioner/p"}]})
    check_public(Interaction.OPERATION, "Appointment", operation="find")
    refused = [(Interaction.READ, "Patient", None), (Interaction.SEARCH, "Appointment", None),
               (Interaction.CREATE, "Location", None), (Interaction.HISTORY, "Location", None),
               (Interaction.OPERATION, "Appointment", "book"), (Interaction.BATCH, None, None)]
    for interaction, type_, operation in refused:
        with pytest.raises(FhirError) as caught:
            check_public(interaction, type_, operation=operation)
        assert caught.value.status == 403
    with pytest.raises(FhirError):
        check_public(Interaction.READ, "Schedule", "s", resource={
            "resourceType": "Schedule", "actor": [{"reference": "Patient/p"}]})


async def test_the_clinic_phone_is_the_services_own_else_its_locations() -> None:
    places = {"a": {"telecom": [{"system": "email", "value": "x@y"}]},
              "b": {"telecom": [{"system": "phone", "value": "555"}]}}

    async def location(id_: str) -> dict[str, Any] | None:
        return places.get(id_)

    service: dict[str, Any] = {"location": [{"reference": "Location/a"},
                                            {"reference": "Location/b"}]}
    assert await clinic_phone(service, location) == "555"
    own = {**service, "telecom": [{"system": "phone", "value": "111"}]}
    assert await clinic_phone(own, location) == "111"
    assert await clinic_phone({}, location) is None
