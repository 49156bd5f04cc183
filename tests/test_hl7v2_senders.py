"""Per-sender settings: the TOML file, refusing what it does not know, and the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_sched.hl7v2 import senders

GOOD = """
timezone = "Europe/Paris"
refuse_unknown_senders = false

[[sender]]
application = "CADENCE"
facility = "NORTHCLINIC"
timezone = "America/Chicago"
calendar_of_record = true
events = ["S12", "S13", "S15"]
[sender.systems]
patient = "urn:oid:1.2.3.4"
filler = "https://north.example.org/appt"
[sender.status]
Confirmed = "booked"
ARRIVED = "arrived"

[[sender]]
application = "ATHENA"
"""


def test_a_good_file_loads_every_setting(tmp_path: Path) -> None:
    path = tmp_path / "hl7v2.toml"
    path.write_text(GOOD, encoding="utf-8")
    conf = senders.load_file(path, environ={})
    s = conf.find("CADENCE", "NORTHCLINIC")
    assert s is not None and s.known
    assert s.timezone == "America/Chicago" and s.calendar_of_record
    assert s.events == frozenset({"S12", "S13", "S15"})
    assert s.system("patient") == "urn:oid:1.2.3.4"
    assert s.system("filler") == "https://north.example.org/appt"
    assert s.status("confirmed") == "booked" and s.status("Arrived") == "arrived"
    assert s.status("Booked") is None


def test_a_sender_without_its_own_zone_gets_the_files() -> None:
    s = senders.load(GOOD, environ={}).find("ATHENA", "ANY")
    assert s is not None and s.known and s.timezone == "Europe/Paris"
    assert s.events == senders.ALL_EVENTS and not s.calendar_of_record


def test_facility_is_matched_and_first_components_are_enough() -> None:
    conf = senders.load(GOOD, environ={})
    assert conf.find("CADENCE^1.2^ISO", "NORTHCLINIC^2.3^ISO").known  # type: ignore[union-attr]
    other = conf.find("CADENCE", "SOUTHCLINIC")
    assert other is not None and not other.known


def test_unconfigured_namespaces_are_local_per_sender() -> None:
    s = senders.load(GOOD, environ={}).find("ATHENA", "P195")
    assert s is not None
    assert s.system("patient") == "urn:fhir-sched:hl7v2:ATHENA:any:patient"
    other = senders.defaults({}).find("ATHENA", "P195")
    assert other is not None and other.system("placer") == "urn:fhir-sched:hl7v2:ATHENA:P195:placer"


def test_unknown_senders_are_refused_when_the_file_says_so() -> None:
    conf = senders.load('refuse_unknown_senders = true\n[[sender]]\napplication = "A"\n', {})
    assert conf.find("B", "F") is None
    assert conf.find("A", "F") is not None


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("timezon = 'UTC'", "'timezon' in the file"),
        (
            "[[sender]]\napplication='A'\ncalender_of_record=true",
            "'calender_of_record' in sender[0]",
        ),
        (
            "[[sender]]\napplication='A'\n[sender.systems]\npatients='x'",
            "'patients' in sender[0].systems",
        ),
    ],
)
def test_unknown_keys_are_refused_naming_the_key(text: str, names: str) -> None:
    with pytest.raises(senders.SenderConfigError, match="unknown key") as caught:
        senders.load(text, {})
    assert names in str(caught.value)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("timezone = 'Mars/Olympus'", "timezone = 'Mars/Olympus'"),
        ("[[sender]]\nfacility='F'", "sender[0].application"),
        ("[[sender]]\napplication='A'\nevents=['S99']", "S99"),
        ("[[sender]]\napplication='A'\n[sender.status]\nX='done'", "sender[0].status.X"),
        ("[[sender]]\napplication='A'\ncalendar_of_record='yes'", "calendar_of_record"),
        ("timezone = ", "not valid TOML"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(text: str, names: str) -> None:
    with pytest.raises(senders.SenderConfigError) as caught:
        senders.load(text, {})
    assert names in str(caught.value)


def test_defaults_take_the_zone_from_the_environment() -> None:
    conf = senders.defaults({"FHIR_SCHED_HL7V2_TIMEZONE": "Asia/Kolkata"})
    s = conf.find("ANY", "WHERE")
    assert s is not None and not s.known and s.timezone == "Asia/Kolkata"


def test_defaults_are_utc_without_the_environment() -> None:
    s = senders.defaults({}).find("ANY", "WHERE")
    assert s is not None and s.timezone == "UTC"


def test_a_file_without_a_zone_uses_the_environment() -> None:
    conf = senders.load(
        "[[sender]]\napplication='A'\n", {"FHIR_SCHED_HL7V2_TIMEZONE": "Europe/Oslo"}
    )
    assert conf.find("A", "").timezone == "Europe/Oslo"  # type: ignore[union-attr]


def test_a_bad_environment_zone_is_refused() -> None:
    with pytest.raises(senders.SenderConfigError, match="FHIR_SCHED_HL7V2_TIMEZONE"):
        senders.defaults({"FHIR_SCHED_HL7V2_TIMEZONE": "Nowhere/Land"})
