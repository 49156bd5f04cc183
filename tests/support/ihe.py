"""The IG examples as fixtures, and the IHE shapes the ITI and Argonaut tests check answers for.

Fixtures live in ``tests/fixtures/ig/`` (their sources are listed in its README). A test adapts
only ids and dates to its own clinic: every example date is in July 2017, and ``future`` moves
it to 2034, the next year whose 15 July is again a Saturday, so weekdays and times stay the
example's. The profile checks are written out here from ``ihe-sched-appt``
(IHE/ITI.Scheduling ``input/resources/StructureDefinition-iti-sched-appt.xml``), not taken from
server code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.support.scheduling import Json

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ig"
IHE_APPT = "https://profiles.ihe.net/ITI/Scheduling/StructureDefinition/ihe-sched-appt"
IHE_SERVER = "https://profiles.ihe.net/ITI/Scheduling/CapabilityStatement/IHE.Scheduling.server"
# ihe-sched-appt: Appointment.participant.actor 1..1, Reference(these)
PROFILE_ACTOR_TYPES = {"Location", "Patient", "Practitioner", "PractitionerRole",
                       "HealthcareService"}


def future(text: str) -> str:
    return text.replace("2017-07-", "2034-07-").replace("2017-08-", "2034-08-")


def fixture(name: str, replace: dict[str, str] | None = None) -> Any:
    """A fixture with its dates moved to 2034 and each ``old: new`` id replaced; JSON files
    come back parsed, query strings as text."""
    text = future((FIXTURES / name).read_text())
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    return json.loads(text) if name.endswith(".json") else text.strip()


def profile_problems(appointment: Json) -> list[str]:
    """What keeps ``appointment`` from conforming to ihe-sched-appt (empty when it does)."""
    problems = []
    if appointment.get("resourceType") != "Appointment":
        problems.append("not an Appointment")
    for element in ("status", "start", "end"):
        if not appointment.get(element):
            problems.append(f"no {element} (1..1)")
    if len(appointment.get("requestedPeriod") or []) != 1:
        problems.append("requestedPeriod must appear once (1..1)")
    for n, p in enumerate(appointment.get("participant") or []):
        actor = p.get("actor")
        if not isinstance(actor, dict):
            problems.append(f"participant[{n}] has no actor (1..1)")
            continue
        ref = actor.get("reference")
        if isinstance(ref, str) and ref.split("/")[0] not in PROFILE_ACTOR_TYPES:
            problems.append(f"participant[{n}].actor {ref} is not a profile actor type")
    return problems


def entries(response: httpx.Response) -> list[Json]:
    body = response.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset", body
    return list(body.get("entry", []))


def matches(response: httpx.Response) -> list[Json]:
    """The resources of a searchset's match entries (not its OperationOutcome entries)."""
    return [e["resource"] for e in entries(response) if e["search"]["mode"] == "match"]


def outcome_entries(response: httpx.Response) -> list[Json]:
    return [e["resource"] for e in entries(response) if e["search"]["mode"] == "outcome"]


def issue_codes(oo: Json) -> list[tuple[str, str]]:
    return [(i["severity"], i["code"]) for i in oo["issue"]]
