"""What a visit type's booking rules leave of a ``$find`` window, and why.

``$find`` offers only what the guard would book: the timing rules cut the window (from the
search's clamp instant, so every page sees the same window), a staff-only visit offers
nothing to a patient's own token, and when the patient is given their age rules and their
referral cut it further (a referral's occurrence period; nothing when none qualifies or its
visits are all booked). Each cut is kept as a note; with ``_explain=true`` the notes are told
as information issues carrying the rule's code, so a front desk sees why a free time is not
offered. The guard still judges every booking on its own (``scheduling.guard``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from typing import Any

import orjson

from ..context import RequestContext
from ..query import Cond, Entry, Expr
from ..scheduling import claims
from ..scheduling.booking_rules import (
    Breach,
    authorization,
    birth_date,
    clinic_phone,
    clinic_zone,
    coverage_period,
    coverage_problem,
    on_file,
    referral_period,
    referral_problem,
    referral_visits,
    rule_window,
    staff_only_message,
)
from ..scheduling.visit_types import VisitType, codings
from ..storage.base import DocumentStore
from ..timeutil import format_instant


@dataclass(slots=True)
class Narrowed:
    lo: datetime
    hi: datetime
    notes: list[Breach] = field(default_factory=list)

    def empty(self, note: Breach) -> None:
        self.hi = self.lo
        self.notes.append(note)

    def within(self, spans: list[tuple[datetime, datetime]], none: Breach, code: str,
               offered: str) -> None:
        """Narrow to the hull of ``spans`` (what the patient's referrals or Coverages
        cover), noting it under ``code``; empty, with ``none``, when they cover nothing."""
        spans = [(a, b) for a, b in spans if a < b]
        if not spans:
            self.empty(none)
            return
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        if lo > self.lo or hi < self.hi:
            self.notes.append(Breach(code, f"{offered}, {format_instant(lo)} to "
                                     f"{format_instant(hi)}"))
        self.lo, self.hi = lo, hi

    def issues(self) -> list[dict[str, Any]]:
        return [{"severity": "information", "code": "informational", "diagnostics": n.message,
                 "details": {"coding": [n.coding()], "text": n.message}} for n in self.notes]


def _birthday(birth: date, years: int) -> date:
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:  # 29 February in a year without one
        return date(birth.year + years, 3, 1)


async def narrow(store: DocumentStore, ctx: RequestContext, patients: list[str],
                 visit: VisitType, service: dict[str, Any], now: datetime, lo: datetime,
                 hi: datetime, insurance: list[Any] | None = None,
                 referrals: list[dict[str, Any]] | None = None) -> Narrowed:
    rules, name, zone = visit.rules, visit.display or visit.code, clinic_zone(service)
    out = Narrowed(*rule_window(rules, now, zone, lo, hi))
    if out.lo > lo:
        out.notes.append(Breach("min-notice" if rules.min_notice is not None and
                                out.lo == max(lo, now + rules.min_notice) else
                                "same-day-cutoff",
                                f"a {name} visit is not offered before "
                                f"{format_instant(out.lo)} (its notice and cut-off rules)"))
    if out.hi < hi:
        out.notes.append(Breach("max-advance", f"a {name} visit is not offered after "
                                f"{format_instant(out.hi)} (its maximum advance booking)"))
    if (ctx.patient is not None or ctx.public) and not rules.self_booking:
        # a patient may not book it online: offered neither to their token nor to a booking
        # widget before sign-in, which is told (with _explain) where to call instead
        async def location(id_: str) -> dict[str, Any] | None:
            rec = await store.get("Location", id_)
            return orjson.loads(rec.body) if rec and rec.body and not rec.deleted else None

        phone = await clinic_phone(service, location)
        out.empty(Breach("staff-only", staff_only_message(name, phone)))
        return out
    patient = f"Patient/{patients[0].removeprefix('Patient/')}" if patients else None
    if (rules.needs_patient or rules.needs_referral) and patient is None:
        out.notes.append(Breach("age-unknown" if rules.needs_patient else
                                "referral-required",
                                f"a {name} visit has patient rules (age, referral) that "
                                "are checked when booking; give patient-reference to see "
                                "only the times this patient may book"))
        return out
    if rules.needs_patient and patient is not None:
        rec = await store.get("Patient", patient.split("/", 1)[1])
        body = orjson.loads(rec.body) if rec and rec.body and not rec.deleted else {}
        birth = birth_date(body.get("birthDate"))
        if birth is None:
            out.empty(Breach("age-unknown", f"a {name} visit has an age rule and the "
                             "patient's birth date is not known"))
            return out
        if rules.min_age is not None:
            out.lo = max(out.lo, datetime.combine(_birthday(birth, rules.min_age), time(0), zone))
        if rules.max_age is not None:
            out.hi = min(out.hi, datetime.combine(_birthday(birth, rules.max_age + 1), time(0),
                                                  zone))
        if out.lo >= out.hi:
            out.empty(Breach("min-age" if rules.min_age is not None else "max-age",
                             f"the patient's age is outside the {name} visit's age range "
                             "in this window"))
            return out
    if rules.needs_referral and patient is not None:
        await _referrals(store, out, patient, visit, service, now, name, referrals or [])
    if rules.needs_coverage and out.lo < out.hi and (patient is not None or insurance):
        await _coverages(store, out, patient, insurance or [], visit, name)
    return out


async def _coverages(store: DocumentStore, out: Narrowed, patient: str | None,
                     insurance: list[Any], visit: VisitType, name: str) -> None:
    """The window the given (or the patient's active) Coverages cover: their hull."""
    found: list[dict[str, Any]] = []
    for item in insurance:
        if isinstance(item, dict) and item.get("resourceType") == "Coverage":
            found.append(item)
        elif isinstance(item, str) and item.startswith("Coverage/"):
            rec = await store.get("Coverage", item.split("/", 1)[1])
            if rec is not None and rec.body is not None and not rec.deleted:
                found.append(orjson.loads(rec.body))
    if not insurance and patient is not None:
        page = await store.search(on_file("Coverage", "beneficiary", patient))
        found = [orjson.loads(body) for _, body in page.rows]
    spans: list[tuple[datetime, datetime]] = []
    code = "coverage-required"
    for coverage in found:
        beneficiary = (coverage.get("beneficiary") or {}).get("reference")
        problem = coverage_problem(coverage, patient or beneficiary,
                                   visit.rules.accepted_payors, None)
        if problem is not None:
            code = problem[0] if problem[0] == "payor-not-accepted" else code
            continue
        start, end = coverage_period(coverage)
        spans.append((max(out.lo, start or out.lo), min(out.hi, end or out.hi)))
    out.within(spans, Breach(code, f"a {name} visit needs insurance it accepts, and no "
                             "Coverage given or on file covers this window"),
               "coverage-required", f"a {name} visit is offered while the patient's coverage "
               "lasts")


async def _referrals(store: DocumentStore, out: Narrowed, patient: str, visit: VisitType,
                     service: dict[str, Any], now: datetime, name: str,
                     named: list[dict[str, Any]]) -> None:
    """The window the patient's referrals (or the one ``referral-identifier`` names) cover,
    with visits left: their hull."""
    services = [(visit.system, visit.code), *[c for t in service.get("type") or []
                                              for c in codings(t)]]
    query = on_file("ServiceRequest", "subject", patient)
    where: tuple[Expr, ...] = query.where
    for ident in named[:1]:
        value, system = ident.get("value"), ident.get("system")
        if isinstance(value, str) and value:
            conds = (Cond("val", "=", value),) + (
                (Cond("sys", "=", system),) if isinstance(system, str) and system else ())
            where += (Entry("identifier", conds),)
    page = await store.search(replace(query, where=where))
    spans: list[tuple[datetime, datetime]] = []
    used = unauthorized = False
    stamp = format_instant(now)
    for id_, body in page.rows:
        request = orjson.loads(body)
        if referral_problem(request, patient, services, None) is not None:
            continue
        held = authorization(request) if visit.rules.prior_auth_required else None
        if visit.rules.prior_auth_required and held is None:
            unauthorized = True
            continue
        visits = referral_visits(request)
        if visits is not None:
            prefix = claims.referral_prefix(id_)
            taken = [k for k, expires in await store.claims_between(prefix, prefix + "\uffff")
                     if expires is None or expires > stamp]
            if len(taken) >= visits:
                used = True
                continue
        start, end = referral_period(request)
        if held is not None:  # visits only while the authorization lasts, too
            start = max((t for t in (start, held[1]) if t is not None), default=None)
            end = min((t for t in (end, held[2]) if t is not None), default=None)
        spans.append((max(out.lo, start or out.lo), min(out.hi, end or out.hi)))
    code = ("referral-used" if used else "prior-authorization" if unauthorized
            else "referral-required")
    out.within(spans, Breach(code, f"a {name} visit needs a referral and this patient has "
                             "none " + ("with visits left" if used else "with a prior "
                                        "authorization" if unauthorized else
                                        "that covers this window")),
               "referral-required", f"a {name} visit is offered within the patient's referral")
