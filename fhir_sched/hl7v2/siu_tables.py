"""The SIU -> FHIR R4 mapping as data: which trigger means what, which code maps to which status,
where each resource segment keeps its fields. ``siu`` walks these; changing a mapping is an edit
here, not a new branch there. Sources: HL7 tables 0003/0203/0278/0206, the HL7 v2-to-FHIR IG
(SIU_S12, ConceptMap table-hl70278-to-appointmentstatus) and FHIR-Converter's FillerStatus maps,
as summarised in the research report (docs/hl7v2-siu.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fhir_sched.scheduling.extensions import BASE

V2_0203: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0276: Final = "http://terminology.hl7.org/CodeSystem/v2-0276"
V2_0277: Final = "http://terminology.hl7.org/CodeSystem/v2-0277"
V2_0278: Final = "http://terminology.hl7.org/CodeSystem/v2-0278"
PARTICIPATION_TYPE: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
# The values as received (trigger, SCH-25, timing strings...), so an outbound SIU can say again
# exactly what the sender said. Needs a StructureDefinition in conformance/ before it is served.
HL7V2_SOURCE: Final = BASE + "hl7v2-source"

# What each trigger is about. "appointment": the SCH describes the whole appointment;
# "participants": S18-S22 change one resource on it; "block"/"open": S23/S24 schedule time.
KIND: Final[dict[str, str]] = {
    "S12": "appointment",
    "S13": "appointment",
    "S14": "appointment",
    "S15": "appointment",
    "S16": "appointment",
    "S17": "appointment",
    "S26": "appointment",
    "S18": "participants",
    "S19": "participants",
    "S20": "participants",
    "S21": "participants",
    "S22": "participants",
    "S23": "block",
    "S24": "open",
}

# The trigger wins over SCH-25 (senders send S15 with SCH-25=Booked). None: SCH-25 decides.
# S16 (discontinue the rest of a repeating appointment) and S17 (deleted) follow FHIR-Converter
# and the IG: cancelled and entered-in-error.
TRIGGER_STATUS: Final[dict[str, str | None]] = {
    "S12": None,
    "S13": None,
    "S14": None,
    "S15": "cancelled",
    "S16": "cancelled",
    "S17": "entered-in-error",
    "S26": "noshow",
}
DEFAULT_STATUS: Final = "booked"

# The participant delta each of S18-S22 carries (an AIx-2 action code, when sent, agrees).
DELTA_ACTION: Final[dict[str, str]] = {
    "S18": "add",
    "S19": "modify",
    "S20": "cancel",
    "S21": "discontinue",
    "S22": "delete",
}
SEGMENT_ACTION: Final[dict[str, str]] = {"A": "add", "U": "modify", "D": "delete", "X": "cancel"}

# HL7 table 0278 (filler status), case-folded, plus spellings seen on the wire -> status.
# Blocked/Overbook are booked time in our model (the research's recommendation); the original
# code is kept in the hl7v2-source extension.
FILLER_STATUS: Final[dict[str, str]] = {
    "pending": "pending",
    "waitlist": "waitlist",
    "booked": "booked",
    "started": "checked-in",
    "complete": "fulfilled",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "dc": "cancelled",
    "deleted": "entered-in-error",
    "blocked": "booked",
    "overbook": "booked",
    "noshow": "noshow",
    "no show": "noshow",
    "confirmed": "booked",
    "scheduled": "booked",
    "arrived": "arrived",
    "checked in": "checked-in",
    "checkedin": "checked-in",
}

# AIx filler status -> Appointment.participant.status (FHIR-Converter's table).
PARTICIPANT_STATUS: Final[dict[str, str]] = {
    "booked": "accepted",
    "started": "accepted",
    "complete": "accepted",
    "confirmed": "accepted",
    "arrived": "accepted",
    "pending": "tentative",
    "waitlist": "tentative",
    "cancelled": "declined",
    "canceled": "declined",
    "dc": "declined",
    "deleted": "declined",
    "noshow": "declined",
    "blocked": "needs-action",
    "overbook": "needs-action",
}
DEFAULT_PARTICIPANT_STATUS: Final = "tentative"  # FHIR-Converter's default for AIx
PATIENT_PARTICIPANT_STATUS: Final = "accepted"

# HL7 table 0276 (appointment reason): SCH-7 coded from it can stand in for a missing SCH-8.
TABLE_0276: Final = frozenset({"ROUTINE", "WALKIN", "CHECKUP", "FOLLOWUP", "EMERGENCY"})

# TQ1-9 / SCH-11.6 priority (table 0485) -> Appointment.priority (FHIR-Converter's scale).
PRIORITY: Final[dict[str, int]] = {"S": 1, "A": 2, "R": 3, "P": 4, "C": 5, "T": 6, "PRN": 7}

# Duration units (SCH-10, AIx duration units, TQ1-6.2) -> minutes per unit.
MINUTES_PER_UNIT: Final[dict[str, float]] = {
    "min": 1,
    "mins": 1,
    "minute": 1,
    "minutes": 1,
    "m": 1,
    "s": 1 / 60,
    "sec": 1 / 60,
    "second": 1 / 60,
    "seconds": 1 / 60,
    "h": 60,
    "hr": 60,
    "hrs": 60,
    "hour": 60,
    "hours": 60,
    "d": 1440,
    "day": 1440,
    "days": 1440,
}
# SCH-11.3 (TQ duration) spelt as "<n> <unit>" or HL7's "M30", "H2", "S90"...
TQ_DURATION_PREFIX: Final[dict[str, float]] = {"S": 1 / 60, "M": 1, "H": 60, "D": 1440, "W": 10080}


@dataclass(frozen=True, slots=True)
class ResourceLayout:
    """Where one AIx segment keeps its values (v2.5 numbering; the same from 2.3 to 2.8). The
    resource id is field 3 in all four."""

    type_field: int | None  # the resource's type or role, a CE/CWE
    start: int
    offset: int
    offset_units: int
    duration: int
    duration_units: int
    status: int


RESOURCES: Final[dict[str, ResourceLayout]] = {
    "AIS": ResourceLayout(None, 4, 5, 6, 7, 8, 10),
    "AIG": ResourceLayout(4, 8, 9, 10, 11, 12, 14),
    "AIL": ResourceLayout(4, 6, 7, 8, 9, 10, 12),
    "AIP": ResourceLayout(4, 6, 7, 8, 9, 10, 12),
}
# AIG-4 resource types that name a person rather than equipment (AIG then means Practitioner).
STAFF_RESOURCE_TYPES: Final = frozenset(
    {"staff", "provider", "practitioner", "physician", "doctor", "clinician", "nurse", "personnel"}
)
# PV1 person fields -> participant type (v3 ParticipationType).
PV1_PERSONS: Final[dict[int, str]] = {7: "ATND", 8: "REF", 9: "CON"}

# HL7 administrative sex (table 0001) -> Patient.gender.
GENDER: Final[dict[str, str]] = {
    "M": "male",
    "F": "female",
    "O": "other",
    "A": "other",
    "N": "other",
    "U": "unknown",
}
