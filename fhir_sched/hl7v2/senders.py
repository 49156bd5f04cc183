"""Per-sender settings for inbound SIU: what each sending system (MSH-3 / MSH-4) means by its
times, identifiers and status codes, and what it is allowed to send.

Senders disagree: one sends local wall-clock times, another UTC with offsets; each numbers its
patients and appointments in its own namespace. So every interpretation the mapping makes that
the message itself does not settle comes from here, and a sender without an entry gets the
defaults (time zone from ``FHIR_SCHED_HL7V2_TIMEZONE``, default UTC) unless unknown senders are
refused.

The file ``--hl7v2-config FILE`` names is TOML::

    # optional: the zone for times without an offset from senders without their own
    timezone = "Europe/Paris"
    # optional: refuse messages from senders not listed below (default false)
    refuse_unknown_senders = true

    [[sender]]
    application = "CADENCE"            # MSH-3 as sent (first component compared if no match)
    facility = "NORTHCLINIC"           # MSH-4; omit or "" to match any facility
    timezone = "America/Chicago"
    calendar_of_record = true          # its bookings win over ours on conflict
    events = ["S12", "S13", "S14", "S15", "S17", "S26"]   # default: every supported event
    [sender.systems]                   # identifier namespaces (system URIs)
    patient = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"
    placer = "https://north.example.org/appointment/placer"
    filler = "https://north.example.org/appointment/filler"
    practitioner = "http://hl7.org/fhir/sid/us-npi"
    location = "https://north.example.org/location"
    device = "https://north.example.org/device"
    [sender.status]                    # SCH-25 / AIx filler status -> Appointment.status
    Confirmed = "booked"
    ARRIVED = "arrived"

Unknown keys are refused with the key's path, so a misspelt ``calender_of_record`` is an error
at start-up rather than a silently ignored setting.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ENV_TIMEZONE = "FHIR_SCHED_HL7V2_TIMEZONE"
SYSTEM_KINDS = ("patient", "placer", "filler", "practitioner", "location", "device")
FHIR_STATUSES = frozenset(
    {
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    }
)
ALL_EVENTS = frozenset(
    {
        "S12",
        "S13",
        "S14",
        "S15",
        "S16",
        "S17",
        "S18",
        "S19",
        "S20",
        "S21",
        "S22",
        "S23",
        "S24",
        "S26",
    }
)


class SenderConfigError(ValueError):
    """The settings file is wrong; the message names the key."""


def _urn(application: str, facility: str, kind: str) -> str:
    """A namespace of last resort: stable per sender, obviously local, never a real registry."""
    app = application.split("^", 1)[0] or "unknown"
    fac = facility.split("^", 1)[0] or "any"
    return f"urn:fhir-sched:hl7v2:{app}:{fac}:{kind}"


@dataclass(frozen=True, slots=True)
class Sender:
    application: str = ""
    facility: str = ""
    timezone: str = "UTC"
    systems: Mapping[str, str] = field(default_factory=dict)
    status_map: Mapping[str, str] = field(default_factory=dict)  # keys compared case-folded
    calendar_of_record: bool = False
    events: frozenset[str] = ALL_EVENTS
    known: bool = True  # False for the defaults given to a sender with no entry

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def system(self, kind: str) -> str:
        """The identifier system for ``kind`` (one of ``SYSTEM_KINDS``)."""
        return self.systems.get(kind) or _urn(self.application, self.facility, kind)

    def status(self, code: str) -> str | None:
        """The sender's own meaning for a filler status code, if it declared one."""
        folded = code.strip().casefold()
        return next((v for k, v in self.status_map.items() if k.casefold() == folded), None)


@dataclass(frozen=True, slots=True)
class Senders:
    timezone: str = "UTC"
    refuse_unknown: bool = False
    entries: tuple[Sender, ...] = ()

    def find(self, application: str, facility: str) -> Sender | None:
        """The entry for MSH-3/MSH-4: exact first, then by first components (a sender that
        adds an OID to MSH-4 one day should not lose its settings); None when unknown and
        unknown senders are refused."""

        def first(value: str) -> str:
            return value.split("^", 1)[0]

        for norm in (str, first):  # exact, then by first components
            app, fac = norm(application), norm(facility)
            for s in self.entries:
                if norm(s.application) == app and (not s.facility or norm(s.facility) == fac):
                    return s
        if self.refuse_unknown:
            return None
        return Sender(application, facility, timezone=self.timezone, known=False)


def default_timezone(environ: Mapping[str, str] | None = None) -> str:
    value = (environ if environ is not None else os.environ).get(ENV_TIMEZONE, "") or "UTC"
    _zone(value, ENV_TIMEZONE)
    return value


def _zone(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SenderConfigError(f"{where} must be an IANA time-zone name")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise SenderConfigError(f"{where} = {value!r} is not an IANA time-zone name") from e
    return value


def _refuse_unknown_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SenderConfigError(
            f"unknown key(s) {', '.join(repr(k) for k in unknown)} in {where}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SenderConfigError(f"{where} must be a string")
    return value


def _sender(raw: Any, index: int, default_tz: str) -> Sender:
    where = f"sender[{index}]"
    if not isinstance(raw, dict):
        raise SenderConfigError(f"{where} must be a table")
    _refuse_unknown_keys(
        raw,
        {
            "application",
            "facility",
            "timezone",
            "calendar_of_record",
            "events",
            "systems",
            "status",
        },
        where,
    )
    if "application" not in raw:
        raise SenderConfigError(f"{where}.application (MSH-3) is required")
    systems = raw.get("systems", {})
    if not isinstance(systems, dict):
        raise SenderConfigError(f"{where}.systems must be a table")
    _refuse_unknown_keys(systems, set(SYSTEM_KINDS), f"{where}.systems")
    status = raw.get("status", {})
    if not isinstance(status, dict):
        raise SenderConfigError(f"{where}.status must be a table")
    for code, target in status.items():
        if target not in FHIR_STATUSES:
            raise SenderConfigError(
                f"{where}.status.{code} = {target!r} is not an Appointment.status code"
            )
    events = raw.get("events", sorted(ALL_EVENTS))
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise SenderConfigError(f"{where}.events must be a list of trigger events")
    bad = sorted(set(events) - ALL_EVENTS)
    if bad:
        raise SenderConfigError(f"{where}.events: unsupported trigger event(s) {bad}")
    record = raw.get("calendar_of_record", False)
    if not isinstance(record, bool):
        raise SenderConfigError(f"{where}.calendar_of_record must be true or false")
    return Sender(
        application=_str(raw["application"], f"{where}.application"),
        facility=_str(raw.get("facility", ""), f"{where}.facility"),
        timezone=_zone(raw.get("timezone", default_tz), f"{where}.timezone"),
        systems={k: _str(v, f"{where}.systems.{k}") for k, v in systems.items()},
        status_map=dict(status),
        calendar_of_record=record,
        events=frozenset(events),
    )


def load(text: str, environ: Mapping[str, str] | None = None) -> Senders:
    """Settings from TOML text; the time zone default from ``FHIR_SCHED_HL7V2_TIMEZONE``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SenderConfigError(f"not valid TOML: {e}") from e
    _refuse_unknown_keys(raw, {"timezone", "refuse_unknown_senders", "sender"}, "the file")
    tz = _zone(raw["timezone"], "timezone") if "timezone" in raw else default_timezone(environ)
    refuse = raw.get("refuse_unknown_senders", False)
    if not isinstance(refuse, bool):
        raise SenderConfigError("refuse_unknown_senders must be true or false")
    entries = raw.get("sender", [])
    if not isinstance(entries, list):
        raise SenderConfigError("sender must be an array of tables ([[sender]])")
    return Senders(tz, refuse, tuple(_sender(e, i, tz) for i, e in enumerate(entries)))


def load_file(path: str | Path, environ: Mapping[str, str] | None = None) -> Senders:
    return load(Path(path).read_text(encoding="utf-8"), environ)


def defaults(environ: Mapping[str, str] | None = None) -> Senders:
    """No file: every sender gets the environment's time zone and local namespaces."""
    return Senders(default_timezone(environ))
