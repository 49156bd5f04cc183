"""The booking guard: the one mechanism that decides whether time may be taken.

``guard_appointment`` is the Appointment type's write rule (declared in
``resources/appointment.py``); the write pipeline calls it inside the atomic unit of every
Appointment write, whatever the door (plain REST, ``$hold``, ``$book``, a transaction entry,
HL7 v2). Capacity is a set of unique *claims* in the database (spelled by ``claims``): for each
resource the appointment needs, one seat per 5-minute unit it covers (plus that resource's
buffers), below the resource's capacity (``capacity.resource_policy``), and one per explicit
Slot. A unique key cannot be inserted twice, so two processes racing for the last unit cannot
both win, on SQLite or MongoDB alike. A hold's claims carry its expiry, so an expired hold stops
blocking the moment it expires; the sweeper only tidies up afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ..errors import FhirError
from ..metrics import BOOKING_REFUSALS
from ..query import Cond, Entry, Query
from ..storage.base import Unit
from ..timeutil import now_instant, parse_instant
from ..writes import FollowUp, WriteEvent
from . import claims, participants, telehealth
from .admission import Breach, availability_breach, in_past
from .booking_rules import (
    MAX_ON_FILE,
    age_breaches,
    authorization_problem,
    caller_breaches,
    clinic_phone,
    clinic_zone,
    coverage_problem,
    history_breaches,
    linked,
    named,
    referral_problem,
    referral_visits,
    timing_breaches,
)
from .booking_rules import Breach as RuleBreach
from .cancellation import check_reason
from .capacity import resource_policy, stored_schedule_policy, unit_policy, unit_schedules
from .eligibility import (
    MAX_PER_REQUEST,
    Answer,
    Need,
    NeedsEligibility,
    asked,
    cached,
    recalled,
)
from .extensions import BOOKING_FLAG, hold_expiry, overbook_requested, override_reason, set_exts
from .recurrence import note_moved
from .status import SLOT_STATUS, TAKING, check_transition
from .visit_types import VisitType, VisitTypeError, codings, parse_visit_types


def resource_actors(appointment: dict[str, Any]) -> list[str]:
    """Every bookable actor, participant or device-participant extension (``participants``)."""
    return participants.resource_actors(appointment)


def patient_actors(appointment: dict[str, Any]) -> list[str]:
    """The patients an appointment places somewhere (not those who declined)."""
    out = []
    for p in appointment.get("participant") or []:
        if not isinstance(p, dict) or p.get("status") == "declined":
            continue
        actor = p.get("actor")
        ref = actor.get("reference") if isinstance(actor, dict) else None
        if isinstance(ref, str) and ref.startswith("Patient/"):
            out.append(ref)
    return list(dict.fromkeys(out))


def slot_ids(appointment: dict[str, Any] | None) -> list[str]:
    out = []
    for s in (appointment or {}).get("slot") or []:
        ref = s.get("reference") if isinstance(s, dict) else None
        if isinstance(ref, str) and ref.startswith("Slot/"):
            out.append(ref.split("/")[1])
    return list(dict.fromkeys(out))


async def guard_appointment(unit: Unit, ev: WriteEvent) -> list[FollowUp]:
    """The Appointment write rule: status machine, admission (the time exists), capacity
    claims (nobody else has it, the patient is not elsewhere), Slots following along."""
    old_status = (ev.old or {}).get("status")
    if ev.new is not None:
        check_transition(old_status, ev.new.get("status", ""))
        check_reason(ev.new)
        ev.new = note_moved(ev.old, ev.new)
    # Start from nothing: a modified booking re-claims what it needs now. A new one owns
    # nothing yet (every write of an id, its deletion included, passes here and releases),
    # so the store round trip is skipped for it.
    if ev.old is not None:
        await unit.release("Appointment", ev.id)
    new = ev.new
    if new is not None and new.get("status") in TAKING and new.get("start") and new.get("end"):
        booked = await booked_visit_type(unit, new)
        if ev.ctx.of_record:
            _within_length(new, ev.config.max_recorded, "FHIR_SCHED_MAX_RECORDED_APPOINTMENT_HOURS")
        elif booked is not None and booked[0].longest is not None:
            _within_length(new, booked[0].longest,
                           f"the longest a {booked[0].code} visit may last")
        else:
            _within_length(new, ev.config.max_appointment, "FHIR_SCHED_MAX_APPOINTMENT_HOURS")
        broken = await _visit_rules(unit, ev, new, booked)
        broken += await _history(unit, ev, new, booked)
        referral, used = await _referral(unit, ev, new, booked)
        broken += used
        if referral is not None:
            new = ev.new = linked(new, "basedOn", referral)
        coverage, uncovered = await _coverage(unit, ev, new, booked)
        broken += uncovered
        if coverage is not None and booked is not None:
            new = ev.new = linked(new, "supportingInformation", coverage[0])
            new, unverified = await _eligibility(unit, ev, new, booked[0], coverage)
            ev.new = new
            broken += unverified
        read: dict[str, list[tuple[str, bytes]]] = {}
        breaches = await _admit(unit, ev, new, read)
        breaches += await _claim_all(unit, ev, new, read)
        if ev.ctx.of_record or broken:
            ev.new = flag(new, broken + breaches)
        if booked is not None and booked[0].notices.virtual:
            ev.new = telehealth.with_link(ev.new or new, ev.config.telehealth_template)
    elif new is not None and old_status in TAKING and new.get("status") == "cancelled":
        ev.new = await _late(unit, ev.old or {}, new)
    if ev.new is not None and ev.new.get("status") in telehealth.NO_LINK_STATUSES:
        ev.new = telehealth.without_link(ev.new)
    return await _follow_slots(unit, ev)


async def _late(unit: Unit, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A booking cancelled inside its visit type's late-cancellation window keeps a
    late-cancellation flag beside any it had: a fact for the clinic's figures, never a
    refusal."""
    booked = await booked_visit_type(unit, old)
    window = booked[0].rules.late_cancel if booked is not None else None
    start = old.get("start")
    if window is None or not isinstance(start, str):
        return new
    ahead = parse_instant(start) - datetime.now(UTC)
    if ahead >= window:
        return new
    hours = window.total_seconds() / 3600
    kept = [e for e in new.get("extension") or [] if isinstance(e, dict)
            and e.get("url") == BOOKING_FLAG]
    late = {"extension": [{"url": "rule", "valueCode": "late-cancellation"},
                          {"url": "detail", "valueString": f"cancelled less than {hours:g} "
                           "hours before the visit"}]}
    return set_exts(new, BOOKING_FLAG, [*[{k: v for k, v in e.items() if k != "url"}
                                          for e in kept], late])


async def booked_visit_type(unit: Unit, appt: dict[str, Any]
                            ) -> tuple[VisitType, dict[str, Any]] | None:
    """The visit type an appointment books, when it names one (appointmentType or
    serviceType): offered by a HealthcareService among its participants or named in its
    ``supportingInformation`` (as ``$find`` proposals do), else by the first service offering
    that code (the ``visit-type`` search parameter), so a booking that names no service, an
    SIU message's, still meets its visit type's rules. (the visit type, that service)."""
    wanted = codings(appt.get("appointmentType"))
    for concept in appt.get("serviceType") or []:
        wanted += codings(concept)
    if not wanted:
        return None
    named = [b.get("reference") for b in appt.get("supportingInformation") or []
             if isinstance(b, dict)]
    for ref in [*resource_actors(appt), *named]:
        if isinstance(ref, str) and ref.startswith("HealthcareService/"):
            found = await _offered(unit, ref.split("/", 1)[1], wanted)
            if found is not None:
                return found
    for _system, code in wanted[:4]:
        # configuration, not something this unit decides on: no lock on the search
        for sid in await unit.find_ids(Query("HealthcareService", (
                Entry("visit-type", (Cond("val", "=", code),)),)), limit=5, decides=False):
            found = await _offered(unit, sid, wanted)
            if found is not None:
                return found
    return None


async def _offered(unit: Unit, service_id: str, wanted: tuple[tuple[str | None, str], ...]
                   ) -> tuple[VisitType, dict[str, Any]] | None:
    rec = await unit.get("HealthcareService", service_id, decides=False)
    if rec is None or rec.deleted or rec.body is None:
        return None
    service = orjson.loads(rec.body)
    try:
        offered = parse_visit_types(service)
    except VisitTypeError:  # stored before a rule change: not this rule's to refuse
        return None
    for vt in offered:
        if any(code == vt.code and (system is None or vt.system is None or system == vt.system)
               for system, code in wanted):
            return vt, service
    return None


async def _referral(unit: Unit, ev: WriteEvent, appt: dict[str, Any],
                    booked: tuple[VisitType, dict[str, Any]] | None
                    ) -> tuple[str | None, list[Breach]]:
    """The referral a booking of a referral-only visit type uses, and one of its visits.

    The referral is the ServiceRequest named in ``basedOn``, else the server looks for one
    among the patient's active ServiceRequests. It must qualify (``referral_problem``) when
    the booking newly takes time; a write that keeps its time (a status change) keeps its
    referral even if it lapsed since. Visits are claims, one seat per visit the referral
    allows, taken under the same unique keys as time, so two bookings racing for the last
    visit cannot both have it; every write starts by releasing the appointment's claims, so a
    cancellation or no-show gives its visit back."""
    if booked is None or not booked[0].rules.needs_referral:
        return None, []
    vt, service = booked
    fresh = newly_takes_time(ev.old, appt)
    patients = patient_actors(appt)
    patient = patients[0] if patients else None
    services = [(vt.system, vt.code), *[c for t in service.get("type") or []
                                        for c in codings(t)]]
    candidates = await _candidates(unit, appt, "basedOn", "ServiceRequest", "subject",
                                   patient if fresh else None)
    start = parse_instant(appt["start"])
    expires = hold_expiry(appt) if appt.get("status") == "pending" else None
    owner, now = ("Appointment", ev.id), now_instant()
    reasons: list[str] = []
    code = "referral-required"
    for sid, request in candidates:
        if request is None:
            reasons.append(f"ServiceRequest/{sid} does not exist")
            continue
        problem = referral_problem(request, patient, services, start) if fresh else None
        if problem is None and fresh and vt.rules.prior_auth_required:
            problem = authorization_problem(request, start)
            code = "prior-authorization" if problem is not None else code
        if problem is not None:
            reasons.append(f"ServiceRequest/{sid} {problem}")
            continue
        visits = referral_visits(request)
        if visits is None or await _take(unit, claims.referral_prefix(sid), visits, owner,
                                         expires, now, overbook=not fresh):
            return f"ServiceRequest/{sid}", []
        reasons.append(f"ServiceRequest/{sid} has no visits left (all {visits} are booked)")
        code = "referral-used"
    if not fresh:
        return None, []  # a booking that keeps its time is not refused for its referral
    name = vt.display or vt.code
    why = "; ".join(reasons) if reasons else "the patient has no active referral for it"
    needs = ("a prior authorization on its referral" if code == "prior-authorization"
             else "a referral")
    breach = RuleBreach(code, f"a {name} visit needs {needs}: {why}", "Appointment.basedOn")
    return None, _settle(ev, appt, [breach])


# What counts as a visit of the patient's for the history rules.
_COUNTED = ("pending", "booked", "arrived", "checked-in", "fulfilled")
MAX_HISTORY = 200  # the patient's appointments read for one booking


async def _history(unit: Unit, ev: WriteEvent, appt: dict[str, Any],
                   booked: tuple[VisitType, dict[str, Any]] | None) -> list[Breach]:
    """New or established patient, visits per period: judged on the patient's other
    appointments as this unit sees them. The search is one the unit decides on, so two
    bookings for one patient cannot both count the other out (see ``Unit.find_ids``)."""
    if (booked is None or not booked[0].rules.needs_history
            or not newly_takes_time(ev.old, appt)):
        return []
    vt, service = booked
    patients = patient_actors(appt)
    if not patients:
        return []
    # By patient alone: the status of each is read from its body, which is read anyway, and
    # a status condition costs the search an index probe per appointment (measured: the
    # search took 2.8x as long with it, on the scheduling benchmark's data set).
    query = Query("Appointment", (
        Entry("patient", (Cond("val", "=", patients[0]),), unique=True),))
    limit = vt.rules.max_visits
    # "at most N visits" cannot be broken by a patient with fewer than N appointments on
    # file, whatever they are (this one included, if stored): counted on the index alone.
    if (vt.rules.patient_status is None and limit is not None
            and await unit.count(query) < limit):
        return []
    found_bodies = await unit.find_bodies(query, limit=MAX_HISTORY)
    here = f"HealthcareService/{service.get('id')}"
    people = {a for a in resource_actors(appt) if not a.startswith("HealthcareService/")}
    fulfilled: list[datetime] = []
    taking: list[datetime] = []
    for aid, body in found_bodies:
        if aid == ev.id:
            continue
        other = orjson.loads(body)
        if other.get("status") not in _COUNTED or not other.get("start"):
            continue
        when = parse_instant(other["start"])
        named = {b.get("reference") for b in other.get("supportingInformation") or []
                 if isinstance(b, dict)}
        actors = set(resource_actors(other))
        if other["status"] == "fulfilled" and (here in actors | named or people & actors):
            fulfilled.append(when)
        kinds = list(codings(other.get("appointmentType")))
        for concept in other.get("serviceType") or []:
            kinds += codings(concept)
        if any(code == vt.code and (system is None or vt.system is None or system == vt.system)
               for system, code in kinds):
            taking.append(when)
    found = history_breaches(vt.rules, vt.display or vt.code, parse_instant(appt["start"]),
                             fulfilled, taking)
    return _settle(ev, appt, found) if found else []


async def _coverage(unit: Unit, ev: WriteEvent, appt: dict[str, Any],
                    booked: tuple[VisitType, dict[str, Any]] | None
                    ) -> tuple[tuple[str, dict[str, Any]] | None, list[Breach]]:
    """The Coverage a booking of a visit type that needs insurance is made under: the one
    named in ``supportingInformation``, else one of the patient's active Coverages. Checked
    when the booking newly takes time (``coverage_problem``: active, the patient's, its
    period holds the visit, a payor the visit type accepts)."""
    if (booked is None or not booked[0].rules.needs_coverage
            or not newly_takes_time(ev.old, appt)):
        return None, []
    vt = booked[0]
    patients = patient_actors(appt)
    patient = patients[0] if patients else None
    candidates = await _candidates(unit, appt, "supportingInformation", "Coverage",
                                   "beneficiary", patient)
    start = parse_instant(appt["start"])
    reasons: list[str] = []
    code = "coverage-required"
    for cid, body in candidates:
        if body is None:
            reasons.append(f"Coverage/{cid} does not exist")
            continue
        problem = coverage_problem(body, patient, vt.rules.accepted_payors, start)
        if problem is None:
            return (f"Coverage/{cid}", body), []
        if problem[0] == "payor-not-accepted":
            code = problem[0]
        reasons.append(f"Coverage/{cid} {problem[1]}")
    why = "; ".join(reasons) if reasons else "the patient has no active Coverage"
    breach = RuleBreach(code, f"a {vt.display or vt.code} visit needs insurance it accepts: "
                        f"{why}", "Appointment.supportingInformation")
    return None, _settle(ev, appt, [breach])


async def _candidates(unit: Unit, appt: dict[str, Any], element: str, type_: str,
                      patient_param: str, patient: str | None
                      ) -> list[tuple[str, dict[str, Any] | None]]:
    """The ``type_`` resources a booking is made under: those named in ``element`` (None for
    one that does not exist), else, given ``patient``, the patient's active ones on file.

    The patient's are searched by patient alone and their status read from the bodies, in
    one statement: a status condition costs the search an index probe per resource."""
    out: list[tuple[str, dict[str, Any] | None]] = []
    for id_ in named(appt, element, type_):
        rec = await unit.get(type_, id_)
        out.append((id_, None if rec is None or rec.deleted or rec.body is None
                    else orjson.loads(rec.body)))
    if out or patient is None:
        return out
    query = Query(type_, (Entry(patient_param, (Cond("val", "=", patient),), unique=True),))
    for id_, raw in await unit.find_bodies(query, limit=MAX_ON_FILE * 5):
        body = orjson.loads(raw)
        if body.get("status") == "active" and len(out) < MAX_ON_FILE:
            out.append((id_, body))
    return out


async def _eligibility(unit: Unit, ev: WriteEvent, appt: dict[str, Any], vt: VisitType,
                       coverage: tuple[str, dict[str, Any]]
                       ) -> tuple[dict[str, Any], list[Breach]]:
    """The payer's word that the booking's Coverage is in force, when a remote checker is
    configured: a recent stored answer, else one asked outside the unit (``NeedsEligibility``;
    see ``eligibility``). The answer is linked from ``supportingInformation``. Not in force
    is a broken rule; no usable answer is refused or booked flagged, as the deployment says.
    A calendar of record is not asked about: what it booked is recorded as it says."""
    if not ev.config.eligibility_remote or ev.ctx.of_record:
        return appt, []
    ref, body = coverage
    consulted = ev.ctx.consulted
    answer = recalled(consulted, ref) or await cached(unit, ref, ev.config.eligibility_ttl,
                                                      datetime.now(UTC))
    if answer is None:
        if asked(consulted) >= MAX_PER_REQUEST:
            answer = Answer(None, "unverified", f"one request may wait for at most "
                            f"{MAX_PER_REQUEST} payer answers")
        else:
            patients = patient_actors(appt)
            raise NeedsEligibility(Need(ref, body, patients[0], (vt.system, vt.code),
                                        vt.display or vt.code, appt["start"]), ev.ctx)
    if answer.response is not None:
        appt = linked(appt, "supportingInformation", answer.response)
    name = vt.display or vt.code
    if answer.verdict == "eligible":
        return appt, []
    if answer.verdict == "not-eligible":
        return appt, _settle(ev, appt, [RuleBreach(
            "coverage-not-eligible", f"a {name} visit needs coverage in force: {ref}: "
            f"{answer.reason}", "Appointment.supportingInformation")])
    breach = RuleBreach("eligibility-unverified", f"the payer did not confirm that {ref} is "
                        f"in force for a {name} visit: {answer.reason}",
                        "Appointment.supportingInformation")
    if ev.config.eligibility_refuse:
        return appt, _settle(ev, appt, [breach])
    return appt, [Breach(breach.code, breach.message)]


def _settle(ev: WriteEvent, appt: dict[str, Any], found: list[RuleBreach]) -> list[Breach]:
    """Broken rules: refused (the first one's code, every one told), unless the caller is a
    calendar of record or staff using the front-desk override, who book anyway flagged."""
    overriding = ev.ctx.may_overbook and overbook_requested(appt)
    if overriding and not ev.ctx.of_record and override_reason(appt) is None:
        raise FhirError(422, "required", f"overriding a booking rule ({found[0].code}: "
                        f"{found[0].message}) needs a reason: give it in the override-reason "
                        "extension", expression=["Appointment.extension"])
    if ev.ctx.of_record or overriding:
        for b in found:
            BOOKING_REFUSALS.labels(b.code, "recorded").inc()
        return [Breach(b.code, b.message) for b in found]
    BOOKING_REFUSALS.labels(found[0].code, "refused").inc()
    first, *others = found
    raise FhirError(422, "business-rule", first.message, expression=[first.expression],
                    details={"coding": [first.coding()], "text": first.message},
                    issues=[{"severity": "error", "code": "business-rule",
                             "diagnostics": b.message, "expression": [b.expression],
                             "details": {"coding": [b.coding()], "text": b.message}}
                            for b in others])


def newly_takes_time(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """A new booking, a moved one, or one that starts taking time again (a cancelled one
    rebooked); a hold becoming booked keeps the time the hold was admitted for."""
    return (old is None or old.get("status") not in TAKING
            or old.get("start") != new["start"] or old.get("end") != new["end"])


async def _visit_rules(unit: Unit, ev: WriteEvent, appt: dict[str, Any],
                       booked: tuple[VisitType, dict[str, Any]] | None) -> list[Breach]:
    """The booked visit type's own rules (``booking_rules``), for time newly taken: the first
    breach is refused with its rule's code, unless the caller is a calendar of record or
    staff using the front-desk override, who book anyway with every breach flagged."""
    if booked is None or not booked[0].rules.any or not newly_takes_time(ev.old, appt):
        return []
    vt, service = booked
    rules, name = vt.rules, vt.display or vt.code
    start, zone = parse_instant(appt["start"]), clinic_zone(service)
    found = timing_breaches(rules, name, start, datetime.now(UTC), zone)
    patient_caller = ev.ctx.patient is not None
    phone = None
    if patient_caller and not rules.self_booking:  # refused: tell where to book instead
        async def location(id_: str) -> dict[str, Any] | None:
            rec = await unit.get("Location", id_, decides=False)
            return orjson.loads(rec.body) if rec and rec.body and not rec.deleted else None

        phone = await clinic_phone(service, location)
    found += caller_breaches(rules, name, patient_caller, phone)
    if rules.needs_patient:
        patient = None
        for ref in patient_actors(appt)[:1]:
            rec = await unit.get("Patient", ref.split("/", 1)[1])
            if rec is not None and rec.body is not None and not rec.deleted:
                patient = orjson.loads(rec.body)
        found += age_breaches(rules, name, patient, start, zone)
    return _settle(ev, appt, found) if found else []


def _within_length(appt: dict[str, Any], longest: timedelta, setting: str) -> None:
    """Refused before anything is claimed, for every caller: a calendar of record too (with
    its own, wider cap), since recording the booking costs what booking it would."""
    length = parse_instant(appt["end"]) - parse_instant(appt["start"])
    if length > longest:
        hours = longest.total_seconds() / 3600
        raise FhirError(422, "business-rule", f"an appointment that takes time may last at "
                        f"most {hours:g} hours; this one lasts {length} ({setting})",
                        expression=["Appointment.end"])


def _refuse(breach: Breach) -> FhirError:
    BOOKING_REFUSALS.labels(breach.code, "refused").inc()
    status, code = (422, "business-rule") if breach.code == "past" else (409, "conflict")
    return FhirError(status, code, breach.message, severity="fatal")


def _note(ev: WriteEvent, breach: Breach) -> list[Breach]:
    """A breach is refused, unless the caller is a calendar of record: then it is recorded."""
    if not ev.ctx.of_record:
        raise _refuse(breach)
    BOOKING_REFUSALS.labels(breach.code, "recorded").inc()
    return [breach]


async def _admit(unit: Unit, ev: WriteEvent, appt: dict[str, Any],
                 read: dict[str, list[tuple[str, bytes]]]) -> list[Breach]:
    """The time must exist: checked for the time a write newly takes (a new booking, a moved
    one, a hold becoming booked keeps what the hold was admitted for) and for resources a
    write adds, so a status change on yesterday's visit is never refused as "past". Only
    resources with a calendar here are checked (``admission``): the past and the hours are
    theirs."""
    start, end = parse_instant(appt["start"]), parse_instant(appt["end"])
    old = ev.old
    moved = newly_takes_time(old, appt)
    actors = resource_actors(appt)
    if not moved:
        before = set(resource_actors(old or {}))
        actors = [a for a in actors if a not in before]
    out: list[Breach] = []
    scheduled_here = False
    for actor in actors:
        read[actor] = await unit_schedules(unit, actor)
        scheduled, breach = await availability_breach(unit, actor, read[actor], start, end)
        scheduled_here = scheduled_here or scheduled
        if breach is not None:
            out.append(breach)
    past = in_past(start, datetime.now(UTC), ev.config.past_grace) if moved else None
    if past is not None and scheduled_here:
        out.insert(0, past)  # the first thing to tell: no other time fixes that
    if out and not ev.ctx.of_record:
        raise _refuse(out[0])
    for breach in out:
        BOOKING_REFUSALS.labels(breach.code, "recorded").inc()
    return out


async def _claim_all(unit: Unit, ev: WriteEvent, appt: dict[str, Any],
                     read: dict[str, list[tuple[str, bytes]]]) -> list[Breach]:
    """Take every claim the booking needs; ``read`` holds the Schedules admission already
    read (the policy comes from those, by the same rule, without reading them again)."""
    start, end = parse_instant(appt["start"]), parse_instant(appt["end"])
    expires = hold_expiry(appt) if appt.get("status") == "pending" else None
    now = now_instant()
    if expires is not None and expires <= now and ev.old is None:
        raise FhirError(409, "conflict", "the hold has already expired", severity="fatal")
    overbook = overbook_requested(appt)
    if overbook and not ev.ctx.may_overbook:
        raise FhirError(
            403, "forbidden",
            "this caller may not overbook; remove the overbooked extension or ask a scheduler "
            "with that right", expression=["Appointment.extension"])
    # A calendar of record takes overbook seats where the time is full: what it recorded
    # still blocks the time, and the breach is flagged.
    record = ev.ctx.of_record
    owner = ("Appointment", ev.id)
    out: list[Breach] = []
    seats = [(actor, resource_policy(read[actor]) if actor in read
              else await unit_policy(unit, actor)) for actor in resource_actors(appt)]
    for actor, policy in seats:
        full = False
        for u in claims.units(start - policy.buffer_before, end + policy.buffer_after):
            prefix = claims.unit_prefix(actor, u)
            if await _take(unit, prefix, policy.capacity, owner, expires, now, overbook):
                continue
            if not full:
                local = u.isoformat().replace("+00:00", "Z")
                out += _note(ev, Breach("capacity", f"{actor} has no capacity left at {local}"
                                        f" (capacity {policy.capacity}); choose another time"))
                full = True
            await _take(unit, prefix, policy.capacity, owner, expires, now, True)
    for patient in patient_actors(appt):
        elsewhere = False
        for u in claims.units(start, end):
            prefix = claims.unit_prefix(patient, u)
            if await _take(unit, prefix, 1, owner, expires, now, overbook):
                continue
            if not elsewhere:
                local = u.isoformat().replace("+00:00", "Z")
                out += _note(ev, Breach("patient-overlap", f"{patient} already has an "
                                        f"appointment at {local}; a patient cannot be in two "
                                        "places at once"))
                elsewhere = True
            await _take(unit, prefix, 1, owner, expires, now, True)
    for sid in slot_ids(appt):
        slot = await unit.get("Slot", sid)
        if slot is None or slot.deleted or slot.body is None:
            raise FhirError(
                422, "not-found", f"Slot/{sid} does not exist", expression=["Appointment.slot"])
        body = orjson.loads(slot.body)
        status = body.get("status")
        if status in ("busy-unavailable", "entered-in-error"):
            out += _note(ev, Breach("outside-availability", f"Slot/{sid} is {status}"))
            continue
        capacity = await _slot_capacity(unit, body)
        if not await _take(unit, claims.slot_prefix(sid), capacity, owner, expires, now,
                           overbook or record):
            BOOKING_REFUSALS.labels("slot-taken", "refused").inc()
            raise FhirError(409, "conflict", f"Slot/{sid} is already taken", severity="fatal")
    return out


def flag(appt: dict[str, Any], breaches: list[Breach]) -> dict[str, Any]:
    """``appt`` carrying one booking-flag extension per rule it breaks (none when it breaks
    none: a corrected booking loses its flags)."""
    return set_exts(appt, BOOKING_FLAG, [{"extension": [
        {"url": "rule", "valueCode": b.code}, {"url": "detail", "valueString": b.message}]}
        for b in breaches])


async def _slot_capacity(unit: Unit, slot: dict[str, Any]) -> int:
    sched = (slot.get("schedule") or {}).get("reference", "")
    if not isinstance(sched, str) or not sched.startswith("Schedule/"):
        return 1
    rec = await unit.get("Schedule", sched.split("/", 1)[1])
    if rec is None or rec.deleted or rec.body is None:
        return 1
    return stored_schedule_policy(rec.body).capacity


async def _take(unit: Unit, prefix: str, capacity: int, owner: tuple[str, str],
                expires: str | None, now: str, overbook: bool) -> bool:
    for n in range(capacity):
        if await unit.claim(prefix + claims.seat(n), *owner, expires=expires, now=now):
            return True
    if overbook:
        n = capacity
        while not await unit.claim(prefix + claims.overbook_seat(n), *owner, expires=expires,
                                   now=now):
            n += 1
        return True
    return False


async def _follow_slots(unit: Unit, ev: WriteEvent) -> list[FollowUp]:
    """Slots follow their appointment: tentative while held, busy when booked, free when
    nothing claims them any more (a capacity-3 slot stays busy while others hold it)."""
    out: list[FollowUp] = []
    new_slots = slot_ids(ev.new)
    status_new = (ev.new or {}).get("status")
    for sid in dict.fromkeys(slot_ids(ev.old) + new_slots):
        rec = await unit.get("Slot", sid)
        if rec is None or rec.deleted or rec.body is None:
            continue
        slot = orjson.loads(rec.body)
        if slot.get("status") in ("busy-unavailable", "entered-in-error"):
            continue
        held = await unit.count_claims(claims.slot_prefix(sid))
        if held == 0:
            target = "free"
        elif sid in new_slots and status_new in SLOT_STATUS:
            target = SLOT_STATUS[status_new]
        else:
            target = "busy"
        overbooked = await unit.count_claims(claims.slot_overbook_prefix(sid)) > 0
        if slot.get("status") == target and bool(slot.get("overbooked")) == overbooked:
            continue
        slot["status"] = target
        if overbooked:
            slot["overbooked"] = True
        else:
            slot.pop("overbooked", None)
        slot.pop("meta", None)
        out.append(FollowUp("Slot", sid, slot))
    return out
