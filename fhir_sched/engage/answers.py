"""What a patient does from a message's signed link: confirm the visit, cancel it, or stop a
channel's messages. Each is a write through the one pipeline, as that patient (confined to
their own compartment), so the booking guard sees a cancellation from a link exactly as one
from the API (the late-cancellation flag among its rules), and the audit trail names them.

Confirming and cancelling are recorded twice over, as FHIR asks: an AppointmentResponse (the
answer, with when it was given) and the patient participant's status on the Appointment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ..context import RequestContext
from ..ids import unique_id
from ..service.booking import BookingService, BookRequest
from ..service.resources import ResourceService
from ..storage.base import Unit
from ..timeutil import now_instant
from .links import Link
from .reminders import OPT_OUT_URL, patient_zone

CANCEL_REASON = {"coding": [{
    "system": "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",
    "code": "pat", "display": "Patient"}], "text": "cancelled by the patient from a message"}
ACTIONS = ("confirm", "cancel", "accept", "decline", "stop-email", "stop-sms", "stop-all")
ANSWERABLE = frozenset({"proposed", "pending", "booked"})


@dataclass(frozen=True, slots=True)
class Answer:
    done: bool
    message: str


def context_for(link: Link) -> RequestContext:
    patient = f"Patient/{link.patient}"
    return RequestContext(subject=patient, patient=patient, door="rest")


async def view(resources: ResourceService, link: Link
               ) -> tuple[dict[str, Any], ZoneInfo] | None:
    """The appointment a link is about, when it still names the link's patient, and the zone
    to show its time in (the patient's)."""
    rec = await resources.store.get("Appointment", link.appointment)
    if rec is None or rec.body is None or rec.deleted:
        return None
    appt: dict[str, Any] = orjson.loads(rec.body)
    if _participant(appt, link.patient) is None:
        return None
    patient = await resources.store.get("Patient", link.patient)
    body = orjson.loads(patient.body) if patient and patient.body and not patient.deleted else {}
    return appt, patient_zone(body, ZoneInfo("UTC"))


async def answer(resources: ResourceService, link: Link, action: str,
                 booking: BookingService | None = None) -> Answer:
    if action not in ACTIONS:
        return Answer(False, "That is not something this link can do.")
    ctx = context_for(link)
    if action.startswith("stop-"):
        return await _stop(resources, ctx, link, action.removeprefix("stop-"))
    if action == "accept":  # a waitlist offer: book the held time, through the guard
        if booking is None:
            return Answer(False, "Offers cannot be accepted here; please call the clinic.")
        found = await view(resources, link)
        if found is None or found[0].get("status") != "pending":
            return Answer(False, "This offer is no longer open.")
        await booking.book(ctx, BookRequest(appointment_reference=f"Appointment/"
                                                                  f"{link.appointment}"))
        return Answer(True, "Thank you: the appointment is yours.")
    if action == "decline":
        action = "cancel"

    async def run(unit: Unit) -> Answer:
        rec = await unit.get("Appointment", link.appointment)
        appt = orjson.loads(rec.body) if rec and rec.body and not rec.deleted else None
        index = _participant(appt, link.patient) if appt else None
        if appt is None or index is None:
            return Answer(False, "This appointment is no longer on record for you.")
        status = appt.get("status")
        if status == "cancelled":
            return Answer(action == "cancel", "This appointment is cancelled.")
        if status not in ANSWERABLE:
            return Answer(False, f"This appointment can no longer be changed here ({status}).")
        participants = [dict(p) for p in appt.get("participant") or []]
        if action == "confirm":
            participants[index]["status"] = "accepted"
            new = {**appt, "participant": participants}
            reply, message = "accepted", "Thank you: your appointment is confirmed."
        else:
            participants[index]["status"] = "declined"
            new = {**appt, "participant": participants, "status": "cancelled",
                   "cancelationReason": CANCEL_REASON}
            reply, message = "declined", "Your appointment is cancelled."
        await resources.put_in_unit(unit, ctx, "Appointment", link.appointment, new,
                                    if_match=rec.version if rec else None)
        response = {"resourceType": "AppointmentResponse",
                    "appointment": {"reference": f"Appointment/{link.appointment}"},
                    "actor": {"reference": f"Patient/{link.patient}"},
                    "participantStatus": reply, "comment": f"answered from a message link "
                                                           f"at {now_instant()}"}
        for key in ("start", "end"):
            if appt.get(key):
                response[key] = appt[key]
        await resources.put_in_unit(unit, ctx, "AppointmentResponse", unique_id(), response,
                                    check_refs=False)
        return Answer(True, message)

    return await resources.atomic(run)


async def _stop(resources: ResourceService, ctx: RequestContext, link: Link, channel: str
                ) -> Answer:
    codes = ("email", "sms", "webhook") if channel == "all" else (channel,)

    async def run(unit: Unit) -> Answer:
        rec = await unit.get("Patient", link.patient)
        patient = orjson.loads(rec.body) if rec and rec.body and not rec.deleted else None
        if patient is None:
            return Answer(False, "This record is no longer kept here.")
        have = {str(e.get("valueCode")) for e in patient.get("extension") or []
                if isinstance(e, dict) and e.get("url") == OPT_OUT_URL}
        wanted = [c for c in codes if c not in have and "all" not in have]
        if wanted:
            extensions = [*(patient.get("extension") or []),
                          *({"url": OPT_OUT_URL, "valueCode": c} for c in wanted)]
            await resources.put_in_unit(unit, ctx, "Patient", link.patient,
                                        {**patient, "extension": extensions},
                                        if_match=rec.version if rec else None)
        words = "messages" if channel == "all" else f"{channel} messages"
        return Answer(True, f"You will get no more {words} from this clinic.")

    return await resources.atomic(run)


def _participant(appt: dict[str, Any] | None, patient_id: str) -> int | None:
    for n, p in enumerate((appt or {}).get("participant") or []):
        if ((p or {}).get("actor") or {}).get("reference") == f"Patient/{patient_id}":
            return n
    return None
