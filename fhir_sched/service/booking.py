"""``$hold``, ``$book``, cancel and reschedule: the booking operations as service calls.

Each is an ordinary write through the resource service's pipeline, so the Appointment's write
rule (the booking guard), validation and the change log apply to them as to any PUT; what is
here is only how an operation composes the Appointment it writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson

from ..context import RequestContext
from ..errors import FhirError, bad_request, not_found
from ..scheduling.extensions import HOLD_EXPIRES, overbook_requested, override_reason, set_ext
from ..storage.base import Record, Unit
from ..timeutil import format_instant
from .authorization import Interaction
from .cds import CdsHooks
from .proposals import Proposals, is_proposal_id
from .resources import ResourceService, Saved, new_id
from .series import SeriesBooking, SeriesResult, starts_series


class _Reader(Protocol):
    """What composing an operation's body reads: an atomic unit, or the store outside one."""

    async def get(self, type_: str, id_: str) -> Record | None: ...


_Compose = Callable[[Any], Awaitable[tuple[dict[str, Any], str]]]


@dataclass(frozen=True, slots=True)
class HoldRequest:
    """A $hold call: the appointment to hold, by reference or given in full."""

    appointment_reference: str | None = None
    appointment: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class BookRequest:
    """A $book call: book, modify or cancel one appointment, optionally cancelling another in
    the same unit (a reschedule), adding the given patients."""

    appointment_reference: str | None = None
    appointment: dict[str, Any] | None = None
    patients: tuple[dict[str, Any], ...] = ()
    patient_references: tuple[str, ...] = ()
    cancelled_appointment: str | None = None
    comment: str | None = None
    # A recurring series (``service/series.py``): how a new one is booked, and whether a
    # change to one occurrence carries on to every later one.
    series_mode: str = "all-or-nothing"
    series_scope: str = "this"


@dataclass(frozen=True, slots=True)
class Booked:
    """What a $book wrote: the appointment asked about (a series' first occurrence), any
    further occurrences of its series, and what it has to say about the ones it could not."""

    saved: Saved
    more: tuple[Saved, ...] = ()
    issues: tuple[dict[str, Any], ...] = ()
    offered: tuple[dict[str, Any], ...] = ()  # proposals for refused occurrences


@dataclass(frozen=True, slots=True)
class Held:
    saved: Saved
    expires: str


class BookingService:
    def __init__(self, resources: ResourceService, hold_seconds: int) -> None:
        self.resources = resources
        self.store = resources.store
        self.hold_seconds = hold_seconds
        self.proposals = Proposals(self.store)
        # Set by compose when CDS services are configured (``--cds-service``).
        self.cds: CdsHooks | None = None
        # Set by compose: recurring series (``$book`` with a recurrenceTemplate).
        self.series: SeriesBooking | None = None

    # -- $hold ---------------------------------------------------------------------------
    async def hold(self, ctx: RequestContext, req: HoldRequest) -> Held:
        _check_local(ctx, req.appointment_reference, "appointment-reference")
        self.resources.authorizer.check(ctx, Interaction.OPERATION, "Appointment",
                                        _target_id(req.appointment_reference), operation="hold")
        appt_ref, appt = req.appointment_reference, req.appointment
        expires = format_instant(datetime.now(UTC) + timedelta(seconds=self.hold_seconds))
        fresh = new_id()

        async def compose(reader: _Reader) -> tuple[dict[str, Any], str]:
            base, id_ = await self._target(reader, appt_ref, appt, fresh)
            if base.get("status") not in ("proposed", "pending", None):
                raise FhirError(409, "conflict", f"only a proposed appointment can be held; this"
                                f" one is {base.get('status')}", severity="fatal")
            held = _strip_template_slots(base)
            held["status"] = "pending"
            held = set_ext(held, HOLD_EXPIRES, {"valueInstant": expires})
            for p in held.get("participant") or []:
                p["status"] = "tentative"
            return {**held, "id": id_}, id_

        checked = await self._prevalidate(compose)

        async def run(unit: Unit) -> Saved:
            held, id_ = await compose(unit)
            if held != checked:
                held = self.resources.prepare("Appointment", held, id_)
            saved = await self.resources.put_in_unit(unit, ctx, "Appointment", id_, held)
            await self.resources.audit_operation(unit, ctx, "$hold", saved, held)
            return saved

        return Held(await self.resources.atomic(run), expires)

    # -- $book ---------------------------------------------------------------------------
    async def book(self, ctx: RequestContext, req: BookRequest) -> Booked:
        _check_local(ctx, req.appointment_reference, "appointment-reference")
        _check_local(ctx, req.cancelled_appointment, "cancelled-appt-id")
        self.resources.authorizer.check(ctx, Interaction.OPERATION, "Appointment",
                                        _target_id(req.appointment_reference), operation="book")
        appt_ref, appt, patients = req.appointment_reference, req.appointment, req.patients
        patient_refs, cancelled, comment = (req.patient_references, req.cancelled_appointment,
                                            req.comment)
        fresh = new_id()
        pids = [p.get("id") or new_id() for p in patients]

        async def compose(reader: _Reader) -> tuple[dict[str, Any], str]:
            base, id_ = await self._target(reader, appt_ref, appt, fresh)
            status = base.get("status")
            if appt is None and status == "cancelled":
                # By reference alone $book means "book it": a released or swept hold cannot be
                # revived that way (its time may be someone else's by now). Cancelling stays
                # possible by sending the resource with status cancelled.
                raise FhirError(409, "conflict", f"Appointment/{id_} is cancelled (released, "
                                "or its hold expired); find and hold a new time",
                                severity="fatal")
            result = _strip_template_slots(base)
            if status == "cancelled":
                result = set_ext(result, HOLD_EXPIRES, None)
                for p in result.get("participant") or []:
                    p["status"] = "declined"
            elif status in ("proposed", "pending", "booked", None):
                result["status"] = "booked"
                result = set_ext(result, HOLD_EXPIRES, None)
                for p in result.get("participant") or []:
                    p["status"] = "accepted"
            else:
                raise FhirError(422, "business-rule", f"$book cannot act on an appointment "
                                f"with status {status}", expression=["Appointment.status"])
            refs = [*patient_refs, *(f"Patient/{pid}" for pid in pids)]
            present = {(p.get("actor") or {}).get("reference")
                       for p in result.get("participant") or []}
            for ref in refs:
                ref = ref if "/" in ref else f"Patient/{ref}"
                if ref not in present:
                    result.setdefault("participant", []).append(
                        {"actor": {"reference": ref}, "required": "required",
                         "status": "accepted"})
            if comment:
                result["comment"] = f"{result['comment']}\n{comment}" if result.get(
                    "comment") else comment
            result.pop("meta", None)
            return {**result, "id": id_}, id_

        checked = await self._prevalidate(compose)
        if req.series_scope == "this-and-following":
            return await self._following(ctx, req, compose, checked)
        if self.cds is not None and checked is not None and checked.get("status") == "booked":
            await self._consult_cds(ctx, checked)

        async def before(unit: Unit) -> None:
            """What a booking does before its appointment is written: the cancellation of a
            reschedule, the registration of new patients."""
            if cancelled is not None:
                await self.cancel_in_unit(unit, ctx, _id_of(cancelled, "cancelled-appt-id"))
            for patient, pid in zip(patients, pids, strict=True):
                existing = await unit.get("Patient", pid)
                if existing is not None and not existing.deleted:
                    # patient-resource registers a new patient; relinking an existing record
                    # by id would book someone else's chart without saying so
                    raise FhirError(409, "conflict", f"patient-resource: Patient/{pid} already "
                                    "exists; pass it as patient-id to book that patient, or "
                                    "leave out the id to register a new one",
                                    expression=["patient-resource"], severity="fatal")
                body = self.resources.prepare("Patient", {**patient, "id": pid}, pid)
                await self.resources.put_in_unit(unit, ctx, "Patient", pid, body)

        if (checked is not None and starts_series(checked) and checked.get("status") == "booked"
                and self.series is not None):
            series = await self.series.book(ctx, compose, checked, before, req.series_mode)
            return _booked(series)

        async def run(unit: Unit) -> Saved:
            await before(unit)
            result, id_ = await compose(unit)
            if result != checked:
                result = self.resources.prepare("Appointment", result, id_)
            saved = await self.resources.put_in_unit(unit, ctx, "Appointment", id_, result)
            await self.resources.audit_operation(unit, ctx, "$book", saved, result)
            return saved

        return Booked(await self.resources.atomic(run))

    async def _following(self, ctx: RequestContext, req: BookRequest, compose: _Compose,
                         checked: dict[str, Any] | None) -> Booked:
        """``series-scope=this-and-following``: the change given for one occurrence (a move
        or a cancellation) made to it and every later one of its series."""
        if req.appointment is None or req.cancelled_appointment or req.patients:
            raise bad_request("series-scope this-and-following changes an occurrence: give "
                              "it as appointment-resource (moved, or with status cancelled), "
                              "without cancelled-appt-id or patient-resource", ["series-scope"])
        target = req.appointment_reference or req.appointment.get("id")
        if not isinstance(target, str) or not target:
            raise bad_request("series-scope this-and-following: name the occurrence (its id, "
                              "or appointment-reference)", ["series-scope"])
        if checked is None:  # the single write raises the precise error
            body, id_ = await compose(self.store)
            checked = self.resources.prepare("Appointment", body, id_)
        assert self.series is not None
        return _booked(await self.series.following(
            ctx, _id_of(target, "appointment-reference"), compose, checked))

    async def _consult_cds(self, ctx: RequestContext, appointment: dict[str, Any]) -> None:
        """The CDS services' cards on this booking (``cds``), before its unit opens: a
        critical one refuses it unless the front-desk override is used with a reason; the
        rest, and any overridden, are left on ``ctx`` for ``$book`` to return as issues."""
        assert self.cds is not None
        cards = await self.cds.appointment_book(ctx, appointment)
        critical = [c for c in cards if c.indicator == "critical"]
        overriding = (ctx.may_overbook and overbook_requested(appointment)
                      and override_reason(appointment) is not None)
        if critical and not overriding:
            first = critical[0].issue()
            raise FhirError(422, "business-rule", first["diagnostics"],
                            expression=["Appointment"],
                            issues=[c.issue() for c in cards if c is not critical[0]])
        issues = [c.issue() for c in cards]
        for issue in issues:
            if issue["severity"] == "error":  # critical, and overridden
                issue.update(severity="warning", diagnostics=f"overridden: {issue['diagnostics']}")
        ctx.consulted["cds-issues"] = issues

    async def _prevalidate(
        self, compose: Callable[[_Reader], Awaitable[tuple[dict[str, Any], str]]]
    ) -> dict[str, Any] | None:
        """The body an operation will most likely write, already validated, or None.

        Validation is the costliest step of a booking and needs no lock, yet every booking on
        a store waits for the one in its atomic unit. So the body is composed once from a plain
        read and validated here; inside the unit it is composed again from the unit's reads,
        and validated again only if it came out different (the data changed in between). Any
        error is left for the unit to raise, where it is authoritative.
        """
        try:
            body, id_ = await compose(self.store)
            return self.resources.prepare("Appointment", body, id_)
        except FhirError:
            return None

    async def cancel_in_unit(self, unit: Unit, ctx: RequestContext, id_: str) -> None:
        """Cancel one Appointment inside ``unit`` (a reschedule's first half, the sweeper)."""
        rec = await unit.get("Appointment", id_)
        if rec is None or rec.deleted or rec.body is None:
            raise not_found(f"cancelled-appt-id: Appointment/{id_} is not known")
        old = orjson.loads(rec.body)
        if old.get("status") == "cancelled":
            return
        old["status"] = "cancelled"
        old = set_ext(old, HOLD_EXPIRES, None)
        for p in old.get("participant") or []:  # the contract's table: cancelled -> declined
            if isinstance(p, dict):
                p["status"] = "declined"
        old.pop("meta", None)
        await self.resources.put_in_unit(unit, ctx, "Appointment", id_, old)

    async def _target(self, unit: _Reader, appt_ref: str | None,
                      appt: dict[str, Any] | None, fresh: str) -> tuple[dict[str, Any], str]:
        """The appointment an operation acts on: a stored one, or one given in full (under
        ``fresh`` as its new id when it has none to keep)."""
        if appt_ref is None and appt is None:
            raise bad_request("give appointment-reference (appt-id) or appointment-resource "
                              "(appt-resource)", ["appointment-reference"])
        if appt_ref is not None:
            id_ = _id_of(appt_ref, "appointment-reference")
            if is_proposal_id(id_):  # a $find proposal: acted on under a fresh stored id
                return (appt or await self.proposals.get(id_)), fresh
            rec = await unit.get("Appointment", id_)
            if rec is None or rec.deleted or rec.body is None:
                raise FhirError(404, "not-found", f"Appointment/{id_} is not known",
                                severity="fatal")
            stored = orjson.loads(rec.body)
            if appt is not None:  # modify: the given content wins, the id is the stored one
                stored = {**appt, "id": id_}
            stored.pop("meta", None)
            return stored, id_
        assert appt is not None
        given = dict(appt)
        given.pop("meta", None)
        given_id = given.get("id")
        if isinstance(given_id, str) and given_id:
            rec = await unit.get("Appointment", given_id)
            if (rec is None or rec.deleted) and (given.get("status") == "proposed"
                                                 or is_proposal_id(given_id)):
                given_id = None
        return given, given_id if isinstance(given_id, str) and given_id else fresh


def _booked(series: SeriesResult) -> Booked:
    (first, _), *rest = series.saved
    return Booked(first, tuple(s for s, _ in rest), tuple(series.issues("warning")),
                  tuple(p for r in series.refused for p in r.alternatives))


def _check_local(ctx: RequestContext, ref: str | None, name: str) -> None:
    """An absolute reference must name this server: ``http://elsewhere/fhir/Appointment/x``
    is not our Appointment/x, and acting on ours instead would change the wrong booking."""
    if ref is None or "://" not in ref:
        return
    base = ctx.base_url.rstrip("/")
    if not base or not ref.startswith(base + "/"):
        raise FhirError(422, "not-found", f"{name}: {ref!r} is not on this server"
                        f"{f' ({base})' if base else ''}; give Appointment/<id>",
                        expression=[name], severity="fatal")


def _target_id(ref: str | None) -> str | None:
    """The id an operation acts on, for the authorization check (None for a new one)."""
    return _id_of(ref, "appointment-reference") if ref else None


def _id_of(ref: str, name: str) -> str:
    ref = ref.rstrip("/")
    if "/_history/" in ref:
        ref = ref.split("/_history/")[0]
    if ref.startswith("Appointment/") or "/Appointment/" in ref:
        return ref.rsplit("/", 1)[1]
    if "/" not in ref:
        return ref
    raise bad_request(f"{name}: {ref!r} is not an Appointment reference", [name])


def _strip_template_slots(appt: dict[str, Any]) -> dict[str, Any]:
    """Template time is guarded by claims, not Slots: contained Slots from $find are dropped
    when an option is held or booked, real Slot references are kept."""
    out: dict[str, Any] = orjson.loads(orjson.dumps(appt))
    contained = [c for c in out.get("contained") or [] if c.get("resourceType") != "Slot"]
    if contained:
        out["contained"] = contained
    else:
        out.pop("contained", None)
    slots = [s for s in out.get("slot") or [] if not str(s.get("reference", "")).startswith("#")]
    if slots:
        out["slot"] = slots
    else:
        out.pop("slot", None)
    return out
