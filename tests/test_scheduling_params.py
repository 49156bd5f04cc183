"""Operation inputs: checked against their OperationDefinitions, in both dialects, both verbs.

Unknown or malformed inputs must come back as a 400 OperationOutcome that names the culprit (a
client cannot fix what it is not told). The Argonaut and Epic spellings must mean exactly what
the IHE names mean, and GET and POST ``$find`` must give the same answer for the same inputs.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.scheduling import (
    Json,
    actors,
    book_option,
    booked_appointment,
    bundle_resource,
    find,
    find_response,
    hours,
    names_parameter,
    parameters,
    patient,
    practitioner_calendar,
    put_all,
    schedule,
    starts,
    template,
    uid,
)

WINDOW = {"start": "2037-12-01T00:00:00Z", "end": "2037-12-02T00:00:00Z"}


def local(hhmm: str) -> str:
    return f"2037-12-01T{hhmm}:00-05:00"


# --------------------------------------------------------------------------- rejected inputs


# Unknown names follow FHIR search's Prefer: handling (lenient by default: ignored and reported
# in the Bundle; strict: refused), as IHE and Argonaut clients send names from each other's
# dialect; see tests/test_iti_115_find.py for both. Only strict mode makes them a 400 here.
@pytest.mark.parametrize(("name", "value"), [
    ("_count", "abc"),
    ("_count", "-1"),
    ("start", "tomorrow"),
    ("end", "2037-13-01T00:00:00Z"),
    ("practitioner", ""),
    ("timing", "MORN"),  # a complex type cannot come in a query string
    ("patient-resource", "Patient/1"),
])
async def test_bad_get_find_input_is_a_400_naming_it(
    fhir: httpx.AsyncClient, name: str, value: str
) -> None:
    r = await fhir.get("/Appointment/$find", params={**WINDOW, name: value})
    assert r.status_code == 400, r.text
    assert names_parameter(r, name)


@pytest.mark.parametrize(("item", "name"), [
    ({"name": "_count", "valueString": "many"}, "_count"),
    ({"name": "start", "valueInteger": 5}, "start"),
    ({"name": "timing", "valueString": "MORN"}, "timing"),
    ({"name": "patient-resource", "valueString": "Patient/1"}, "patient-resource"),
])
async def test_bad_post_find_input_is_a_400_naming_it(
    fhir: httpx.AsyncClient, item: Json, name: str
) -> None:
    body = parameters(("start", WINDOW["start"]), ("end", WINDOW["end"]))
    if item["name"] == "start":
        body["parameter"] = body["parameter"][1:]
    body["parameter"].append(item)
    r = await fhir.post("/Appointment/$find", json=body)
    assert r.status_code == 400, r.text
    assert names_parameter(r, name)


async def test_find_without_start_or_twice_start_is_a_400_naming_start(
    fhir: httpx.AsyncClient
) -> None:
    missing = await fhir.get("/Appointment/$find", params={"end": WINDOW["end"]})
    assert missing.status_code == 400 and names_parameter(missing, "start")
    twice = await fhir.get("/Appointment/$find", params=[
        ("start", WINDOW["start"]), ("start", WINDOW["start"]), ("end", WINDOW["end"])])
    assert twice.status_code == 400 and names_parameter(twice, "start")


async def test_find_window_over_a_year_is_a_400(fhir: httpx.AsyncClient) -> None:
    r = await find_response(fhir, start="2037-12-01T00:00:00Z", end="2028-01-01T00:00:00Z")
    assert r.status_code == 400
    assert names_parameter(r, "end")


async def test_find_window_of_a_full_year_is_accepted(fhir: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(fhir)
    options = await find(fhir, start="2037-12-01T00:00:00Z", end="2038-12-01T00:00:00Z",
                         specialty=cal.specialty, _count=1)
    assert starts(options) == [local("09:00")]


@pytest.mark.parametrize(("name", "value"), [
    ("bogus", "1"),
    ("practioner", "Practitioner/x"),  # a typo must not be ignored when the client says strict
])
async def test_unknown_find_input_under_strict_handling_is_a_400_naming_it(
    fhir: httpx.AsyncClient, name: str, value: str
) -> None:
    r = await fhir.get("/Appointment/$find", params={**WINDOW, name: value},
                       headers={"prefer": "handling=strict"})
    assert r.status_code == 400, r.text
    assert names_parameter(r, name)
    posted = await fhir.post("/Appointment/$find", headers={"prefer": "handling=strict"},
                             json={"resourceType": "Parameters", "parameter": [
                                 {"name": "start", "valueDateTime": WINDOW["start"]},
                                 {"name": "end", "valueDateTime": WINDOW["end"]},
                                 {"name": name, "valueString": value}]})
    assert posted.status_code == 400, posted.text
    assert names_parameter(posted, name)


@pytest.mark.parametrize("op", ["$hold", "$book"])
async def test_unknown_hold_or_book_input_is_a_400_naming_it(
    fhir: httpx.AsyncClient, op: str
) -> None:
    r = await fhir.post(f"/Appointment/{op}", json=parameters(("appt-idd", "x")))
    assert r.status_code == 400
    assert names_parameter(r, "appt-idd")


@pytest.mark.parametrize("op", ["$hold", "$book"])
async def test_hold_or_book_with_a_non_appointment_resource_is_a_400_naming_it(
    fhir: httpx.AsyncClient, op: str
) -> None:
    r = await fhir.post(f"/Appointment/{op}", json=parameters(
        ("appt-resource", {"resourceType": "Patient"})))
    assert r.status_code == 400
    assert names_parameter(r, "appt-resource")


@pytest.mark.parametrize("op", ["$hold", "$book"])
async def test_hold_or_book_without_a_target_is_a_400_naming_the_parameter(
    fhir: httpx.AsyncClient, op: str
) -> None:
    r = await fhir.post(f"/Appointment/{op}", json={"resourceType": "Parameters"})
    assert r.status_code == 400
    assert names_parameter(r, "appointment-reference")


async def test_hold_given_twice_an_appointment_is_a_400(fhir: httpx.AsyncClient) -> None:
    option = {"resourceType": "Appointment", "status": "proposed",
              "participant": [{"actor": {"reference": "Practitioner/x"}, "status": "needs-action"}]}
    r = await fhir.post("/Appointment/$hold", json=parameters(
        ("appt-resource", option), ("appointment-resource", option)))
    assert r.status_code == 400
    assert names_parameter(r, "appointment-resource")


async def test_operation_query_string_on_post_is_a_400(fhir: httpx.AsyncClient) -> None:
    r = await fhir.post("/Appointment/$book", params={"appt-id": "x"},
                        json={"resourceType": "Parameters"})
    assert r.status_code == 400
    assert names_parameter(r, "appt-id")


# --------------------------------------------------------------------------- dialects


async def test_epic_start_time_and_end_time_mean_start_and_end(fhir: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(fhir)
    ihe = await find(fhir, **WINDOW, specialty=cal.specialty, _count=3)
    epic = await find(fhir, startTime=WINDOW["start"], endTime=WINDOW["end"],
                      specialty=cal.specialty, _count=3)
    assert ihe and epic == ihe


async def test_location_reference_alias_filters_like_location(fhir: httpx.AsyncClient) -> None:
    key = uid()
    spec = ("http://example.org/specialty", f"loc-{key}")
    open_hours = template("America/New_York", hours(["tue"], "09:00:00", "10:00:00"))
    resources: list[Json] = []
    for n in (1, 2):
        resources += [
            {"resourceType": "Location", "id": f"loc{n}-{key}", "name": f"Site {n}"},
            {"resourceType": "Practitioner", "id": f"pr{n}-{key}"},
            schedule(f"sc{n}-{key}", f"Practitioner/pr{n}-{key}", open_hours, specialty=spec),
        ]
    for res in resources:  # each practitioner works at their own site
        if res["resourceType"] == "Schedule":
            n = res["id"][2]
            res["actor"].append({"reference": f"Location/loc{n}-{key}"})
    await put_all(fhir, *resources)
    token = f"{spec[0]}|{spec[1]}"
    site = f"Location/loc2-{key}"
    argonaut = await find(fhir, **WINDOW, specialty=token, location_reference=site)
    ihe = await find(fhir, **WINDOW, specialty=token, location=site)
    assert argonaut == ihe
    assert {actors(o)[0] for o in ihe} == {f"Practitioner/pr2-{key}"}
    both = await find(fhir, **WINDOW, specialty=token)
    assert {actors(o)[0] for o in both} == {f"Practitioner/pr1-{key}", f"Practitioner/pr2-{key}"}


async def test_patient_reference_alias_avoids_the_patients_booked_time(
    fhir: httpx.AsyncClient
) -> None:
    cal = await practitioner_calendar(fhir)
    other = await practitioner_calendar(fhir)
    who = await patient(fhir)
    booked = await booked_appointment(fhir, other.ref, local("09:00"), local("09:30"), patient=who)
    assert booked.status_code == 201
    argonaut = await find(fhir, **WINDOW, specialty=cal.specialty, patient_reference=who,
                          _count=2)
    ihe = await find(fhir, **WINDOW, specialty=cal.specialty, patient=who, _count=2)
    assert argonaut == ihe
    assert starts(ihe) == [local("09:30"), local("10:00")]
    assert who in actors(ihe[0])


async def test_argonaut_appt_id_holds_and_books_a_stored_proposal(
    fhir: httpx.AsyncClient
) -> None:
    cal = await practitioner_calendar(fhir)
    [option] = await find(fhir, **WINDOW, specialty=cal.specialty, _count=1)
    created = await fhir.post("/Appointment", json=option)
    assert created.status_code == 201, created.text
    appt_id = created.json()["id"]
    held = await fhir.post("/Appointment/$hold", json=parameters(
        ("appt-id", {"reference": f"Appointment/{appt_id}"})))
    assert bundle_resource(held)["status"] == "pending"
    assert held.headers["expires"]
    booked = await fhir.post("/Appointment/$book", json=parameters(("appt-id", appt_id)))
    assert bundle_resource(booked)["status"] == "booked"
    assert bundle_resource(booked)["id"] == appt_id


async def test_ihe_appointment_reference_and_resource_work_like_the_aliases(
    fhir: httpx.AsyncClient
) -> None:
    cal = await practitioner_calendar(fhir)
    [option] = await find(fhir, **WINDOW, specialty=cal.specialty, _count=1)
    held = bundle_resource(await fhir.post("/Appointment/$hold", json=parameters(
        ("appointment-resource", option))))
    booked = await fhir.post("/Appointment/$book", json=parameters(
        ("appointment-reference", {"reference": f"Appointment/{held['id']}"}),
        ("comment", "patient asked for a morning visit")))
    result = bundle_resource(booked)
    assert result["status"] == "booked"
    assert result["comment"] == "patient asked for a morning visit"


async def test_book_adds_a_patient_given_as_patient_resource(fhir: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(fhir)
    [option] = await find(fhir, **WINDOW, specialty=cal.specialty, _count=1)
    newcomer = {"resourceType": "Patient", "id": f"new-{uid()}", "name": [{"family": "Novak"}]}
    booked = bundle_resource(await book_option(fhir, option, ("patient-resource", newcomer)))
    assert f"Patient/{newcomer['id']}" in actors(booked)
    assert (await fhir.get(f"/Patient/{newcomer['id']}")).status_code == 200


async def test_get_and_post_find_give_identical_results(fhir: httpx.AsyncClient) -> None:
    first = await practitioner_calendar(fhir, specialty_code=f"shared-{uid()}")
    code = first.specialty.split("|")[1]
    second = await practitioner_calendar(fhir, specialty_code=code)
    who = await patient(fhir)
    get = await find(fhir, **WINDOW, specialty=first.specialty,
                     practitioner=[second.ref, first.ref], patient=who, _count=4)
    posted = await fhir.post("/Appointment/$find", json=parameters(
        ("start", WINDOW["start"]), ("end", WINDOW["end"]), ("specialty", first.specialty),
        ("practitioner", {"reference": second.ref}), ("practitioner", {"reference": first.ref}),
        ("patient", {"reference": who}), ("_count", "4")))
    assert posted.status_code == 200, posted.text
    assert [e["resource"] for e in posted.json()["entry"]] == get
    assert [actors(o)[1] for o in get] == [second.ref, first.ref] * 2


async def test_form_encoded_post_find_matches_get(fhir: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(fhir)
    get = await find(fhir, **WINDOW, specialty=cal.specialty, _count=2)
    form = await fhir.post("/Appointment/$find", data={**WINDOW, "specialty": cal.specialty,
                                                       "_count": "2"})
    assert form.status_code == 200, form.text
    assert [e["resource"] for e in form.json()["entry"]] == get


# --------------------------------------------------------------------------- capability


async def test_metadata_lists_the_three_appointment_operations(fhir: httpx.AsyncClient) -> None:
    cs = (await fhir.get("/metadata")).json()
    [appointment] = [r for r in cs["rest"][0]["resource"] if r["type"] == "Appointment"]
    ops: dict[str, Any] = {o["name"]: o["definition"] for o in appointment["operation"]}
    assert set(ops) >= {"find", "hold", "book"}
    for name in ("find", "hold", "book"):
        assert ops[name].endswith(f"OperationDefinition/appointment-{name}")


async def test_post_find_accepts_a_coding_for_a_token_parameter(fhir: httpx.AsyncClient) -> None:
    """IHE clients send specialty and visit type as Codings in a Parameters body."""
    cal = await practitioner_calendar(fhir)
    system, code = cal.specialty.split("|")
    get = await find(fhir, **WINDOW, specialty=cal.specialty, _count=2)
    body = parameters(("start", WINDOW["start"]), ("end", WINDOW["end"]), ("_count", "2"))
    body["parameter"].append({"name": "specialty",
                              "valueCoding": {"system": system, "code": code}})
    posted = await fhir.post("/Appointment/$find", json=body)
    assert posted.status_code == 200, posted.text
    assert get and [e["resource"] for e in posted.json()["entry"]] == get
