"""$find, $hold and $book for visits that need several resources, and the status rules.

The clinic used here offers one visit type (30 minutes) that needs a practitioner of a specialty,
an exam room (a Location whose Schedule says it is one) and an ultrasound device (``Device`` is
not hosted, so its Schedule's actor is a reference kept as given). All calendars are New York,
Tuesday 2037-12-01, 09:00-12:00, so every expected time below is a local wall-clock time that can
be checked by eye. The room keeps 15 minutes clear after each visit.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from tests.support.scheduling import (
    Json,
    actors,
    book_id,
    book_option,
    booked_appointment,
    bundle_resource,
    find,
    find_response,
    hold,
    hours,
    outcome,
    parameters,
    patient,
    practitioner_calendar,
    put_all,
    schedule,
    set_status,
    starts,
    template,
    uid,
    utc,
    visit_type,
)

TZ = "America/New_York"
DAY = {"start": "2037-12-01T00:00:00Z", "end": "2037-12-02T00:00:00Z"}
WEEK = {"start": "2037-11-30T00:00:00Z", "end": "2037-12-07T00:00:00Z"}


def local(hhmm: str) -> str:
    """Tuesday 2037-12-01 at ``hhmm`` New York time (UTC-5 in December)."""
    return f"2037-12-01T{hhmm}:00-05:00"


@dataclass(frozen=True, slots=True)
class Clinic:
    visit: str  # $find visit-type token
    practitioners: tuple[str, ...]
    room: str
    device: str


async def clinic(fhir: httpx.AsyncClient, n_practitioners: int = 2) -> Clinic:
    key = uid()
    base = f"http://example.org/{key}"
    specialty = (f"{base}/specialty", "sonography")
    exam_room = (f"{base}/kind", "exam-room")
    ultrasound = (f"{base}/kind", "ultrasound")
    open_hours = hours(["tue"], "09:00:00", "12:00:00")
    resources: list[Json] = []
    practitioners = []
    for n in range(n_practitioners):
        pid = f"pr{n}-{key}"
        practitioners.append(f"Practitioner/{pid}")
        resources += [
            {"resourceType": "Practitioner", "id": pid, "name": [{"family": f"Doc{n}"}]},
            schedule(f"sc-{pid}", f"Practitioner/{pid}", template(TZ, open_hours),
                     specialty=specialty),
        ]
    room, device = f"room-{key}", f"us-{key}"
    resources += [
        {"resourceType": "Location", "id": room, "name": f"Exam room {key}"},
        schedule(f"sc-{room}", f"Location/{room}", template(TZ, open_hours, buffer_after=15),
                 kind=exam_room),
        schedule(f"sc-{device}", f"Device/{device}", template(TZ, open_hours), kind=ultrasound),
        {"resourceType": "HealthcareService", "id": f"hs-{key}", "name": "Ultrasound clinic",
         "extension": [visit_type(f"{base}/visit", "us-guided", 30,
                                  {"url": "need", "extension": [
                                      {"url": "actorType", "valueCode": "Practitioner"},
                                      {"url": "specialty", "valueCodeableConcept": {
                                          "coding": [{"system": specialty[0],
                                                      "code": specialty[1]}]}}]},
                                  {"url": "need", "extension": [
                                      {"url": "actorType", "valueCode": "Location"},
                                      {"url": "kind", "valueCodeableConcept": {
                                          "coding": [{"system": exam_room[0],
                                                      "code": exam_room[1]}]}}]},
                                  {"url": "need", "extension": [
                                      {"url": "actorType", "valueCode": "Device"},
                                      {"url": "kind", "valueCodeableConcept": {
                                          "coding": [{"system": ultrasound[0],
                                                      "code": ultrasound[1]}]}}]})]},
    ]
    await put_all(fhir, *resources)
    return Clinic(f"{base}/visit|us-guided", tuple(practitioners), f"Location/{room}",
                  f"Device/{device}")


def distinct_starts(options: list[Json]) -> list[str]:
    return list(dict.fromkeys(starts(options)))


async def test_three_resource_options_need_practitioner_room_and_device_together(
    fhir: httpx.AsyncClient
) -> None:
    c = await clinic(fhir)
    options = await find(fhir, **DAY, visit_type=c.visit, _count=50)
    assert distinct_starts(options) == [local(f"{h:02d}:{m:02d}") for h in (9, 10, 11)
                                        for m in (0, 30)]
    for option in options:
        assert option["status"] == "proposed"
        assert option["minutesDuration"] == 30
        who = actors(option)
        assert who[0] in c.practitioners and who[1:] == [c.room, c.device]
        assert len(option["slot"]) == 3  # one (contained) Slot per resource
        assert option["serviceType"][0]["coding"][0]["code"] == "us-guided"


async def test_options_skip_times_when_the_room_or_the_device_is_taken(
    fhir: httpx.AsyncClient
) -> None:
    c = await clinic(fhir)
    room_busy = await booked_appointment(fhir, c.room, local("09:00"), local("09:30"))
    device_busy = await booked_appointment(fhir, c.device, local("11:00"), local("11:30"))
    assert (room_busy.status_code, device_busy.status_code) == (201, 201)
    options = await find(fhir, **DAY, visit_type=c.visit, _count=50)
    # 09:00 room taken; 09:30 would end inside the room's 15-minute clean-up; 11:00 device.
    assert distinct_starts(options) == [local("10:00"), local("10:30"), local("11:30")]
    assert len(options) == 6  # both practitioners at each of those times


async def test_room_buffer_after_keeps_the_next_15_minutes_clear(
    fhir: httpx.AsyncClient
) -> None:
    c = await clinic(fhir)
    [first] = await find(fhir, **DAY, visit_type=c.visit, practitioner=c.practitioners[0],
                         _count=1)
    assert bundle_resource(await book_option(fhir, first))["status"] == "booked"
    # Another practitioner, same room: the room needs 09:30-09:45 to turn over.
    other = await find(fhir, **DAY, visit_type=c.visit, practitioner=c.practitioners[1],
                       _count=50)
    assert distinct_starts(other)[0] == local("10:00")
    # The guard enforces the same buffer on a plain write.
    too_soon = await booked_appointment(fhir, c.room, local("09:30"), local("10:00"))
    assert too_soon.status_code == 409
    assert outcome(too_soon)["issue"][0]["code"] == "conflict"
    # 09:45 is clear of the buffer but off the room's 30-minute grid; 10:00 is the next start.
    after = await booked_appointment(fhir, c.room, local("10:00"), local("10:30"))
    assert after.status_code == 201, after.text


async def test_ored_practitioners_break_ties_in_the_order_given(fhir: httpx.AsyncClient) -> None:
    c = await clinic(fhir)
    p0, p1 = c.practitioners
    forward = await find(fhir, **DAY, visit_type=c.visit, practitioner=[p1, p0], _count=4)
    assert [actors(o)[0] for o in forward] == [p1, p0, p1, p0]
    assert starts(forward) == [local("09:00")] * 2 + [local("09:30")] * 2
    backward = await find(fhir, **DAY, visit_type=c.visit, practitioner=[p0, p1], _count=4)
    assert [actors(o)[0] for o in backward] == [p0, p1, p0, p1]
    only = await find(fhir, **DAY, visit_type=c.visit, practitioner=p1, _count=4)
    assert {actors(o)[0] for o in only} == {p1}


async def test_count_limits_the_options_and_total_matches(fhir: httpx.AsyncClient) -> None:
    c = await clinic(fhir)
    for count in (1, 3):
        r = await find_response(fhir, **DAY, visit_type=c.visit, _count=count)
        bundle = r.json()
        assert len(bundle["entry"]) == count
        # more options than the page: the total is not the page size (left out, next given)
        assert "total" not in bundle
        assert any(lk["relation"] == "next" for lk in bundle["link"])
    one = await find(fhir, **DAY, visit_type=c.visit, practitioner=c.practitioners[0],
                     _count=100)
    assert len(one) == 6  # 6 times for one practitioner: fewer than asked for


async def test_results_are_deterministic(fhir: httpx.AsyncClient) -> None:
    c = await clinic(fhir, n_practitioners=3)
    answers = [await find(fhir, **WEEK, visit_type=c.visit, _count=5) for _ in range(3)]
    assert answers[0] == answers[1] == answers[2]
    keys = [(o["start"], c.practitioners.index(actors(o)[0])) for o in answers[0]]
    assert keys == sorted(keys)  # earliest first, then preference (here: schedule order)


async def test_explicit_free_slots_are_offered_with_real_slot_references(
    fhir: httpx.AsyncClient
) -> None:
    key = uid()
    code = ("http://example.org/specialty", f"slots-{key}")
    slots = [(f"a-{key}", local("14:00"), local("14:30"), "free"),
             (f"b-{key}", local("13:00"), local("13:30"), "free"),
             (f"c-{key}", local("15:00"), local("15:30"), "busy")]
    await put_all(
        fhir,
        {"resourceType": "Practitioner", "id": f"pr-{key}"},
        schedule(f"sc-{key}", f"Practitioner/pr-{key}", specialty=code),
        *({"resourceType": "Slot", "id": sid, "schedule": {"reference": f"Schedule/sc-{key}"},
           "status": status, "start": s, "end": e} for sid, s, e, status in slots),
    )
    options = await find(fhir, **DAY, specialty=f"{code[0]}|{code[1]}")
    assert [o["slot"] for o in options] == [[{"reference": f"Slot/b-{key}"}],
                                            [{"reference": f"Slot/a-{key}"}]]
    # No template, so no zone is known for this actor: compare instants, not spellings.
    assert [utc(o["start"]) for o in options] == [utc(local("13:00")), utc(local("14:00"))]
    assert all("contained" not in o for o in options)


async def test_slot_status_follows_hold_book_and_cancel(fhir: httpx.AsyncClient) -> None:
    key = uid()
    code = ("http://example.org/specialty", f"follow-{key}")
    await put_all(
        fhir,
        {"resourceType": "Practitioner", "id": f"pr-{key}"},
        schedule(f"sc-{key}", f"Practitioner/pr-{key}", specialty=code),
        {"resourceType": "Slot", "id": f"sl-{key}", "schedule": {"reference": f"Schedule/sc-{key}"},
         "status": "free", "start": local("10:00"), "end": local("10:30")},
    )

    async def slot_status() -> str:
        return (await fhir.get(f"/Slot/sl-{key}")).json()["status"]

    [option] = await find(fhir, **DAY, specialty=f"{code[0]}|{code[1]}")
    held = bundle_resource(await hold(fhir, option))
    assert (held["status"], await slot_status()) == ("pending", "busy-tentative")
    assert {p["status"] for p in held["participant"]} == {"tentative"}
    booked = bundle_resource(await book_id(fhir, held["id"]))
    assert (booked["status"], await slot_status()) == ("booked", "busy")
    assert {p["status"] for p in booked["participant"]} == {"accepted"}
    assert await find(fhir, **DAY, specialty=f"{code[0]}|{code[1]}") == []
    assert (await set_status(fhir, held["id"], "cancelled")).status_code == 200
    assert await slot_status() == "free"
    [again] = await find(fhir, **DAY, specialty=f"{code[0]}|{code[1]}")
    assert again["slot"] == [{"reference": f"Slot/sl-{key}"}]


async def test_patients_own_booked_time_is_never_offered(fhir: httpx.AsyncClient) -> None:
    c = await clinic(fhir)
    who = await patient(fhir)
    elsewhere = await practitioner_calendar(fhir, days=("tue",))
    mine = await booked_appointment(fhir, elsewhere.ref, local("10:00"), local("10:30"),
                                    patient=who)
    assert mine.status_code == 201, mine.text
    one = c.practitioners[0]
    for_patient = await find(fhir, **DAY, visit_type=c.visit, practitioner=one, patient=who,
                             _count=50)
    assert starts(for_patient) == [local(t) for t in
                                   ("09:00", "09:30", "10:30", "11:00", "11:30")]
    anyone = await find(fhir, **DAY, visit_type=c.visit, practitioner=one, _count=50)
    assert local("10:00") in starts(anyone)


async def test_reschedule_that_conflicts_leaves_the_old_appointment_booked(
    fhir: httpx.AsyncClient
) -> None:
    cal = await practitioner_calendar(fhir, days=("tue",))
    who, rival = await patient(fhir), await patient(fhir)
    nine, half_nine = await find(fhir, **DAY, specialty=cal.specialty, patient=who, _count=2)
    old = bundle_resource(await book_option(fhir, nine))
    # The rival takes 09:30 using the same offer: the reschedule below must lose to it.
    taken = dict(half_nine, participant=[
        p if not p["actor"]["reference"].startswith("Patient/") else
        {**p, "actor": {"reference": rival}} for p in half_nine["participant"]])
    assert bundle_resource(await book_option(fhir, taken))["status"] == "booked"
    r = await book_option(fhir, half_nine, ("cancelled-appt-id", old["id"]))
    assert r.status_code == 409
    assert (await fhir.get(f"/Appointment/{old['id']}")).json()["status"] == "booked"
    assert local("09:00") not in starts(await find(fhir, **DAY, specialty=cal.specialty))


async def test_reschedule_cancels_the_old_and_books_the_new_together(
    fhir: httpx.AsyncClient
) -> None:
    cal = await practitioner_calendar(fhir, days=("tue",))
    who = await patient(fhir)
    nine, later = await find(fhir, **DAY, specialty=cal.specialty, patient=who, _count=2)
    old = bundle_resource(await book_option(fhir, nine))
    new = bundle_resource(await book_option(fhir, later, ("cancelled-appt-id", old["id"])))
    assert new["status"] == "booked" and new["start"] == local("09:30")
    stored_old = (await fhir.get(f"/Appointment/{old['id']}")).json()
    assert stored_old["status"] == "cancelled"
    assert starts(await find(fhir, **DAY, specialty=cal.specialty, _count=1)) == [local("09:00")]


async def test_reschedule_with_unknown_old_appointment_books_nothing(
    fhir: httpx.AsyncClient
) -> None:
    cal = await practitioner_calendar(fhir, days=("tue",))
    [nine] = await find(fhir, **DAY, specialty=cal.specialty, _count=1)
    r = await book_option(fhir, nine, ("cancelled-appt-id", f"Appointment/nope-{uid()}"))
    assert r.status_code == 404
    assert starts(await find(fhir, **DAY, specialty=cal.specialty, _count=1)) == [local("09:00")]


# --------------------------------------------------------------------------- status rules


async def appointment_in(fhir: httpx.AsyncClient, path: list[str]) -> str:
    """A fresh booked appointment walked through ``path`` by PATCH; returns its id."""
    cal = await practitioner_calendar(fhir, days=("tue",))
    [option] = await find(fhir, **DAY, specialty=cal.specialty, _count=1)
    appt = bundle_resource(await book_option(fhir, option))
    for status in path:
        r = await set_status(fhir, appt["id"], status)
        assert r.status_code == 200, r.text
    return appt["id"]


@pytest.mark.parametrize(("path", "illegal"), [
    ([], "pending"),
    ([], "proposed"),
    (["cancelled"], "booked"),
    (["fulfilled"], "booked"),
    (["noshow"], "arrived"),
    (["arrived"], "noshow"),
    (["checked-in", "fulfilled"], "cancelled"),
])
async def test_illegal_status_transition_is_a_422_naming_it(
    fhir: httpx.AsyncClient, path: list[str], illegal: str
) -> None:
    appt_id = await appointment_in(fhir, path)
    current = path[-1] if path else "booked"
    r = await set_status(fhir, appt_id, illegal)
    assert r.status_code == 422
    assert f"{current} -> {illegal}" in outcome(r)["issue"][0]["diagnostics"]
    assert (await fhir.get(f"/Appointment/{appt_id}")).json()["status"] == current


async def test_illegal_transition_from_a_hold_is_refused(fhir: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(fhir, days=("tue",))
    [option] = await find(fhir, **DAY, specialty=cal.specialty, _count=1)
    held = bundle_resource(await hold(fhir, option))
    r = await set_status(fhir, held["id"], "arrived")
    assert r.status_code == 422
    assert "pending -> arrived" in outcome(r)["issue"][0]["diagnostics"]


@pytest.mark.parametrize("path", [
    ["arrived", "fulfilled"], ["checked-in", "cancelled"], ["entered-in-error"],
    ["cancelled", "entered-in-error"]])
async def test_legal_status_paths_are_accepted(fhir: httpx.AsyncClient, path: list[str]) -> None:
    appt_id = await appointment_in(fhir, path)
    assert (await fhir.get(f"/Appointment/{appt_id}")).json()["status"] == path[-1]


@pytest.mark.parametrize("status", ["cancelled", "noshow", "entered-in-error"])
async def test_leaving_booked_frees_capacity_at_once(fhir: httpx.AsyncClient, status: str) -> None:
    cal = await practitioner_calendar(fhir, days=("tue",))
    [option] = await find(fhir, **DAY, specialty=cal.specialty, _count=1)
    first = bundle_resource(await book_option(fhir, option))
    assert (await book_option(fhir, option)).status_code == 409
    assert (await set_status(fhir, first["id"], status)).status_code == 200
    assert starts(await find(fhir, **DAY, specialty=cal.specialty, _count=1)) == [option["start"]]
    assert bundle_resource(await book_option(fhir, option))["status"] == "booked"


async def test_book_with_a_cancelled_resource_cancels_it(fhir: httpx.AsyncClient) -> None:
    """IHE ITI-117: the input status says what to do; ``cancelled`` means cancel."""
    cal = await practitioner_calendar(fhir, days=("tue",))
    [option] = await find(fhir, **DAY, specialty=cal.specialty, _count=1)
    booked = bundle_resource(await book_option(fhir, option))
    cancel = {k: v for k, v in booked.items() if k != "meta"} | {"status": "cancelled"}
    r = await fhir.post(f"/Appointment/{booked['id']}/$book",
                        json=parameters(("appointment-resource", cancel)))
    assert bundle_resource(r)["status"] == "cancelled"
    assert starts(await find(fhir, **DAY, specialty=cal.specialty, _count=1)) == [option["start"]]


async def test_book_by_unknown_reference_is_a_404(fhir: httpx.AsyncClient) -> None:
    r = await book_id(fhir, f"missing-{uid()}")
    assert r.status_code == 404
    assert outcome(r)["issue"][0]["code"] == "not-found"


async def test_find_with_an_unknown_visit_type_offers_nothing(fhir: httpx.AsyncClient) -> None:
    r = await find_response(fhir, **DAY, visit_type=f"http://example.org/none|{uid()}")
    assert r.status_code == 200
    assert r.json()["total"] == 0 and "entry" not in r.json()


async def test_visit_type_listed_only_on_schedules_offers_those_schedules(
    fhir: httpx.AsyncClient
) -> None:
    """Without a HealthcareService definition a visit type is offered by the Schedules that
    list it in serviceType, and by no others."""
    key = uid()
    listed = await practitioner_calendar(fhir, days=("tue",))
    body = (await fhir.get(f"/Schedule/{listed.schedule}")).json()
    body.pop("meta")
    body["serviceType"] = [{"coding": [{"system": "http://example.org/vt", "code": key}]}]
    assert (await fhir.put(f"/Schedule/{listed.schedule}", json=body)).status_code == 200
    options = await find(fhir, **DAY, visit_type=f"http://example.org/vt|{key}", _count=50)
    assert options and {actors(o)[0] for o in options} == {listed.ref}


async def test_a_booked_device_is_found_by_actor_search(fhir: httpx.AsyncClient) -> None:
    """The device travels in the device-participant extension (ihe-sched-appt allows no Device
    participant); Appointment?actor still finds the bookings that take it."""
    c = await clinic(fhir)
    [first] = await find(fhir, **DAY, visit_type=c.visit, _count=1)
    booked = bundle_resource(await book_option(fhir, first))
    assert c.device not in [p["actor"]["reference"] for p in booked["participant"]]
    r = await fhir.get("/Appointment", params={"actor": c.device})
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [booked["id"]]
