"""Where an appointment's resources travel (``scheduling/participants.py``), as pure functions.

ihe-sched-appt allows only Location, Patient, Practitioner, PractitionerRole and
HealthcareService as participant actors, so a device goes in the device-participant extension;
whichever way an actor came, ``resource_actors`` must find it, or the guard would not claim it.
"""

from __future__ import annotations

from typing import Any

from fhir_sched.scheduling.participants import (
    DEVICE_PARTICIPANT,
    PROFILE_ACTOR_TYPES,
    device_extension,
    resource_actors,
    with_actor,
)

BASE: dict[str, Any] = {"resourceType": "Appointment", "status": "proposed"}


def build(*actors: str) -> dict[str, Any]:
    appt = BASE
    for actor in actors:
        appt = with_actor(appt, actor)
    return appt


def test_profile_actor_types_become_participants() -> None:
    appt = build("Patient/p", "Practitioner/d", "Location/room")
    assert [p["actor"]["reference"] for p in appt["participant"]] == [
        "Patient/p", "Practitioner/d", "Location/room"]
    assert {(p["required"], p["status"]) for p in appt["participant"]} == {
        ("required", "needs-action")}
    assert "extension" not in appt


def test_a_device_goes_in_the_extension_not_participant() -> None:
    appt = build("Practitioner/d", "Device/us")
    assert [p["actor"]["reference"] for p in appt["participant"]] == ["Practitioner/d"]
    assert appt["extension"] == [device_extension("Device/us")]
    assert appt["extension"][0]["url"] == DEVICE_PARTICIPANT
    assert all(p["actor"]["reference"].split("/")[0] in PROFILE_ACTOR_TYPES
               for p in appt["participant"])


def test_with_actor_leaves_its_input_alone() -> None:
    first = build("Practitioner/d")
    build_on = with_actor(first, "Device/us")
    assert "extension" not in first and len(first["participant"]) == 1
    assert build_on["extension"]


def test_resource_actors_reads_participants_then_devices_without_patients() -> None:
    appt = build("Patient/p", "Practitioner/d", "Device/us", "Location/room", "Device/xr")
    assert resource_actors(appt) == ["Practitioner/d", "Location/room", "Device/us", "Device/xr"]


def test_resource_actors_still_reads_a_device_participant_sent_by_plain_rest() -> None:
    appt = {**BASE, "participant": [{"actor": {"reference": "Device/us"}, "status": "accepted"}]}
    assert resource_actors(appt) == ["Device/us"]


def test_resource_actors_skips_declined_information_only_and_absolute_actors() -> None:
    appt = {**BASE, "participant": [
        {"actor": {"reference": "Practitioner/a"}, "status": "declined"},
        {"actor": {"reference": "Practitioner/b"}, "required": "information-only"},
        {"actor": {"reference": "http://elsewhere/Practitioner/c"}},
        {"actor": {"display": "Napa Office"}},
        {"actor": {"reference": "Practitioner/d"}},
    ], "extension": [device_extension("Device/e", "information-only"),
                     device_extension("Device/f")]}
    assert resource_actors(appt) == ["Practitioner/d", "Device/f"]


def test_resource_actors_names_each_actor_once() -> None:
    appt = {**build("Practitioner/d", "Device/us"),
            "participant": [{"actor": {"reference": "Practitioner/d"}},
                            {"actor": {"reference": "Device/us"}}]}
    assert resource_actors(appt) == ["Practitioner/d", "Device/us"]


def test_malformed_extensions_and_participants_are_not_actors() -> None:
    appt = {**BASE, "participant": ["Practitioner/x", {"actor": "Practitioner/y"}],
            "extension": [{"url": DEVICE_PARTICIPANT}, "x",
                          {"url": DEVICE_PARTICIPANT, "extension": [
                              {"url": "actor", "valueReference": "Device/z"}]}]}
    assert resource_actors(appt) == []

