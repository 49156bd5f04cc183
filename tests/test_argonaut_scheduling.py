"""Argonaut Scheduling clients, unmodified: the IG's example requests, sent as published.

The Argonaut names differ from IHE's (``provider``, ``location`` as text, ``service-type``,
``appt-type``, ``appt-id``, ``patient-id``, ``coverage``), its POST bodies put one-element arrays
in value[x] and references in ``valueUri``/``valueUrl``, and ``_count`` rides in a POST's query
string. Each scenario (``tests/fixtures/ig/``) runs against a Napa clinic of the test's own, with
the examples' ids and dates adapted to it.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

from tests.support.ihe import fixture, matches, profile_problems
from tests.support.scheduling import (
    JSON_PATCH,
    SNOMED,
    Json,
    actors,
    concept,
    find,
    hours,
    patient,
    put_all,
    schedule,
    template,
    uid,
    visit_type,
)

TZ = "America/Los_Angeles"
MONDAY = "2034-07-17"
DERMATOLOGY = (SNOMED, "394582007")


def local(hhmm: str, day: str = MONDAY) -> str:
    return f"{day}T{hhmm}:00-07:00"


async def napa_doctor(fhir: httpx.AsyncClient, key: str, *,
                      specialty: tuple[str, str] | None = None) -> str:
    """Dr Y of the examples (``dr-y-<key>``), at a Napa office, Mondays 09:00-17:00."""
    pid = f"dr-y-{key}"
    await put_all(
        fhir,
        {"resourceType": "Location", "id": f"napa-{key}", "name": "Napa Office",
         "address": {"city": "Napa", "state": "CA"}},
        {"resourceType": "Practitioner", "id": pid, "name": [{"family": "Y"}]},
        schedule(f"sc-{pid}", f"Practitioner/{pid}",
                 template(TZ, hours(["mon"], "09:00:00", "17:00:00")), specialty=specialty))
    sched = (await fhir.get(f"/Schedule/sc-{pid}")).json()
    sched["actor"].append({"reference": f"Location/napa-{key}"})
    await put_all(fhir, {k: v for k, v in sched.items() if k != "meta"})
    return f"Practitioner/{pid}"


async def get_query(fhir: httpx.AsyncClient, query: str) -> httpx.Response:
    """GET $find with the example's query string as written (``|`` and ``/`` unescaped)."""
    return await fhir.get("/Appointment/$find?" + quote(query, safe="=&/:"))


def options_of(r: httpx.Response) -> list[Json]:
    assert r.status_code == 200, r.text
    found = matches(r)
    bundle = r.json()
    # total is the window's count when the page exhausts it; otherwise absent, with a next link
    if "total" in bundle:
        assert bundle["total"] == len(found)
    else:
        assert any(link["relation"] == "next" for link in bundle["link"])
    assert all(o["status"] == "proposed" and profile_problems(o) == [] for o in found)
    return found


# --------------------------------------------------------------------------- $find scenarios


async def test_scenario_1a_soonest_three_for_dr_y_in_napa_get_and_post(
        fhir: httpx.AsyncClient) -> None:
    key = uid()
    doctor = await napa_doctor(fhir, key)
    ids = {"dr-y": f"dr-y-{key}"}
    get = options_of(await get_query(fhir, fixture("argonaut-find-1a-query.txt", ids)))
    assert [o["start"] for o in get] == [local("09:00"), local("09:30"), local("10:00")]
    assert all(actors(o) == [doctor] for o in get)
    # the example's POST: the body as published, _count in the query string
    post = await fhir.post("/Appointment/$find?_count=3",
                           json=fixture("argonaut-find-1a-parameters.json", ids))
    assert options_of(post) == get


async def test_scenario_1a_with_a_coverage_resource(fhir: httpx.AsyncClient) -> None:
    key = uid()
    await napa_doctor(fhir, key)
    body = fixture("argonaut-find-1a-parameters.json", {"dr-y": f"dr-y-{key}"})
    body["parameter"].append({"name": "coverage",
                              "resource": fixture("argonaut-coverage-argo-sch-1.json")})
    r = await fhir.post("/Appointment/$find?_count=3", json=body)
    assert [o["start"] for o in options_of(r)] == [local("09:00"), local("09:30"),
                                                   local("10:00")]


async def test_scenario_1b_service_and_appointment_type_in_napa(
        fhir: httpx.AsyncClient) -> None:
    """service-type is the visit; appt-type the style of appointment (the Argonaut appt-type
    value set says "not service type"), carried onto the proposals."""
    key = uid()
    own = (f"http://example.org/{key}/specialty", "imaging")
    doctor = await napa_doctor(fhir, key, specialty=own)
    await put_all(fhir, {
        "resourceType": "HealthcareService", "id": f"hs-{key}", "name": "Imaging",
        "extension": [visit_type(SNOMED, "708175003", 30, {"url": "need", "extension": [
            {"url": "actorType", "valueCode": "Practitioner"},
            {"url": "specialty", "valueCodeableConcept": concept(*own)}]})]})
    get = options_of(await get_query(fhir, fixture("argonaut-find-1b-query.txt")))
    assert [o["start"] for o in get][:2] == [local("09:00"), local("09:30")]
    for option in get:
        assert actors(option) == [doctor]
        assert option["serviceType"][0]["coding"][0]["code"] == "708175003"
        assert option["appointmentType"]["coding"][0] == {
            "system": "http://fhir.org/guides/argonaut-scheduling/CodeSystem/appt-type",
            "code": "urgent"}
    post = await fhir.post("/Appointment/$find",
                           json=fixture("argonaut-find-1b-parameters.json"))
    assert options_of(post) == get


async def test_scenario_2a_all_of_dr_ys_napa_times_over_a_month(
        fhir: httpx.AsyncClient) -> None:
    key = uid()
    doctor = await napa_doctor(fhir, key)
    ids = {"dr-y": f"dr-y-{key}"}
    get = options_of(await get_query(fhir, fixture("argonaut-find-2a-query.txt", ids)))
    assert get[0]["start"] == local("09:00") and all(actors(o) == [doctor] for o in get)
    assert len(get) == 10  # the server's default page of options
    # The example's POST body ends its window on 17 July, not 17 August: the same options,
    # cut at that end.
    post = options_of(await fhir.post("/Appointment/$find",
                                      json=fixture("argonaut-find-2a-parameters.json", ids)))
    assert [o["start"] for o in post] == [o["start"] for o in get][:8]


async def test_scenario_2b_dermatologists_in_napa(fhir: httpx.AsyncClient) -> None:
    key = uid()
    doctor = await napa_doctor(fhir, key, specialty=DERMATOLOGY)
    get = options_of(await get_query(fhir, fixture("argonaut-find-2b-query.txt")))
    assert get and all(actors(o) == [doctor] for o in get)
    assert get[0]["specialty"][0]["coding"][0] == {"system": SNOMED, "code": "394582007"}
    assert get[0]["appointmentType"]["coding"][0]["code"] == "ROUTINE"
    post = options_of(await fhir.post("/Appointment/$find",
                                      json=fixture("argonaut-find-2b-parameters.json")))
    assert [o["start"] for o in post] == [o["start"] for o in get][:len(post)]


# --------------------------------------------------------------------------- $hold, $book


async def stored_proposal(fhir: httpx.AsyncClient, key: str, appt_id: str) -> Json:
    """The example's proposed appointment (``appt_id``): a $find option, stored under that id."""
    await napa_doctor(fhir, key)
    [option] = await find(fhir, start=f"{MONDAY}T00:00:00Z", end=f"{MONDAY}T23:00:00Z",
                          provider=f"Practitioner/dr-y-{key}", _count=1)
    r = await fhir.put(f"/Appointment/{appt_id}", json={**option, "id": appt_id})
    assert r.status_code == 201, r.text
    stored: Json = r.json()
    return stored


async def test_hold_by_appt_id_url_at_the_instance(fhir: httpx.AsyncClient) -> None:
    key = uid()
    appt_id = f"proposed-appt1a-1-{key}"
    proposal = await stored_proposal(fhir, key, appt_id)
    r = await fhir.post(f"/Appointment/{appt_id}/$hold", json=fixture(
        "argonaut-appt-hold-id-parameters.json", {"proposed-appt1a-1": appt_id}))
    assert r.status_code == 200, r.text
    assert r.headers["expires"].endswith("GMT")
    [held] = matches(r)
    assert (held["id"], held["status"], held["start"]) == (appt_id, "pending",
                                                           proposal["start"])


async def test_book_by_appt_id_url_adds_the_patient_id(fhir: httpx.AsyncClient) -> None:
    key = uid()
    appt_id = f"proposed-appt2a-1-{key}"
    await stored_proposal(fhir, key, appt_id)
    who = await patient(fhir)
    r = await fhir.post(f"/Appointment/{appt_id}/$book", json=fixture(
        "argonaut-appt-book-id-parameters.json",
        {"proposed-appt2a-1": appt_id, "Patient/1234": who}))
    assert r.status_code == 200, r.text
    [booked] = matches(r)
    assert (booked["id"], booked["status"]) == (appt_id, "booked")
    assert who in actors(booked)


async def test_release_a_hold_with_json_patch(fhir: httpx.AsyncClient) -> None:
    """The IG's release-hold example: PATCH status to cancelled frees the time."""
    key = uid()
    appt_id = f"argo-appt1-{key}"
    proposal = await stored_proposal(fhir, key, appt_id)
    held = await fhir.post(f"/Appointment/{appt_id}/$hold", json={
        "resourceType": "Parameters",
        "parameter": [{"name": "appt-id", "valueUrl": f"Appointment/{appt_id}"}]})
    assert held.status_code == 200, held.text
    window = {"start": f"{MONDAY}T00:00:00Z", "end": f"{MONDAY}T23:00:00Z",
              "provider": f"Practitioner/dr-y-{key}", "_count": 1}
    assert (await find(fhir, **window))[0]["start"] != proposal["start"]
    r = await fhir.patch(f"/Appointment/{appt_id}", headers=JSON_PATCH,
                         json=[{"op": "replace", "path": "/status", "value": "cancelled"}])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert (await find(fhir, **window))[0]["start"] == proposal["start"]


async def test_hold_then_book_with_the_appointment_as_the_request_body(
        fhir: httpx.AsyncClient) -> None:
    """appt-hold-resource and appt-book-resource: "Appointment resource as request body"."""
    key = uid()
    doctor = await napa_doctor(fhir, key)
    [option] = await find(fhir, start=f"{MONDAY}T00:00:00Z", end=f"{MONDAY}T23:00:00Z",
                          provider=doctor, _count=1)
    held = await fhir.post("/Appointment/$hold", json=option)
    assert held.status_code == 200, held.text
    [pending] = matches(held)
    assert pending["status"] == "pending"
    booked = await fhir.post("/Appointment/$book", json=pending)
    assert booked.status_code == 200, booked.text
    [done] = matches(booked)
    assert (done["id"], done["status"]) == (pending["id"], "booked")
