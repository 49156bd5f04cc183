"""Booking rules a visit type declares: the front desk's checks, made by the server.

A visit type (``visit_types``) may carry rules beside its length and needs. Each rule is a row
of ``RULES``: its code in the ``booking-rule`` CodeSystem (``conformance/``), the sub-extension
that sets it, and what it asks. The guard asks ``breaches`` about every write that newly takes
time (a new booking, a moved one), whatever the door, and refuses the first breach with that
code; a calendar of record, or staff with the front-desk override, books anyway and the
breaches are flagged on the Appointment.

Times are judged in the clinic's zone: the HealthcareService's ``timezone`` extension (the
core one, an IANA code), else UTC. "Now" is the write's own clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..query import Cond, Entry, Query

RULE_SYSTEM = "https://fhir-sched.org/fhir/CodeSystem/booking-rule"
PRIOR_AUTHORIZATION_URL = "https://fhir-sched.org/fhir/StructureDefinition/prior-authorization"
TIMEZONE_URL = "http://hl7.org/fhir/StructureDefinition/timezone"
MAX_ADVANCE_DAYS = 3660  # ten years: past it a "rule" is a typo
MAX_AGE_YEARS = 150


@dataclass(frozen=True, slots=True)
class Rule:
    code: str
    setting: str  # the visit-type sub-extension that turns it on
    value_type: str  # its value[x] type
    display: str
    definition: str


RULES: tuple[Rule, ...] = (
    Rule("min-notice", "minNoticeMinutes", "unsignedInt", "Minimum notice",
         "The visit must start at least this many minutes after the booking is made."),
    Rule("max-advance", "maxAdvanceDays", "positiveInt", "Maximum advance booking",
         "The visit must start at most this many days after the booking is made."),
    Rule("same-day-cutoff", "sameDayCutoff", "time", "Same-day cut-off",
         "A visit on the day the booking is made must be booked before this time of day, "
         "in the clinic's time zone."),
    Rule("staff-only", "selfBooking", "boolean", "Staff only",
         "When false, a patient (a caller confined to a patient compartment) may not book "
         "this visit type online; staff and systems may. The refusal gives the clinic's "
         "phone (the HealthcareService's telecom, else its Location's), and $find offers a "
         "patient or a caller without a token nothing of this visit type."),
    Rule("min-age", "minAgeYears", "unsignedInt", "Minimum age",
         "The patient must be at least this many whole years old on the day of the visit."),
    Rule("max-age", "maxAgeYears", "unsignedInt", "Maximum age",
         "The patient must be at most this many whole years old on the day of the visit."),
    Rule("age-unknown", "minAgeYears", "unsignedInt", "Age unknown",
         "An age rule applies and the patient's birth date is not known."),
    Rule("referral-required", "referralRequired", "boolean", "Referral required",
         "When true, the booking needs a referral: an active ServiceRequest for this patient "
         "whose code is the visit type (or one of the service's types), whose occurrence "
         "period holds the visit, named in Appointment.basedOn or found by the server."),
    Rule("prior-authorization", "priorAuthorizationRequired", "boolean",
         "Prior authorization required",
         "When true, the booking's referral must carry the payer's prior authorization (the "
         "prior-authorization extension on the ServiceRequest: a number and a period) whose "
         "period holds the visit; implies referralRequired."),
    Rule("new-patient", "patientStatus", "code", "New patients only",
         "patientStatus new: the patient has had no fulfilled visit of this service, or with "
         "the booking's practitioners, in the lookback (lookbackYears, default 3)."),
    Rule("established-patient", "patientStatus", "code", "Established patients only",
         "patientStatus established: the patient has had a fulfilled visit of this service, "
         "or with the booking's practitioners, in the lookback (lookbackYears, default 3)."),
    Rule("visit-limit", "maxVisits", "positiveInt", "Visits per period",
         "At most this many of the patient's visits of this visit type (booked, held, "
         "arrived or fulfilled) within any window of visitsPeriodDays days (default 365)."),
    Rule("late-cancellation", "lateCancelHours", "positiveInt", "Late cancellation",
         "Not a refusal: a booking of this visit type cancelled less than this many hours "
         "before it starts is flagged late-cancellation, for the clinic's cancellation "
         "figures."),
    Rule("coverage-required", "coverageRequired", "boolean", "Coverage required",
         "When true, the booking needs insurance: an active Coverage whose beneficiary is the "
         "patient and whose period holds the visit, named in Appointment.supportingInformation "
         "or found by the server."),
    Rule("payor-not-accepted", "acceptedPayor", "Reference", "Payor not accepted",
         "The visit type accepts only Coverage from these payors (repeating, each a "
         "Reference to the payor Organization); naming any implies coverageRequired."),
    Rule("coverage-not-eligible", "coverageRequired", "boolean", "Coverage not in force",
         "The payer's eligibility answer (a CoverageEligibilityResponse from the configured "
         "eligibility checker, linked from Appointment.supportingInformation) says the "
         "booking's Coverage is not in force."),
    Rule("eligibility-unverified", "coverageRequired", "boolean", "Eligibility not verified",
         "The eligibility checker gave no usable answer within its time budget (it failed, "
         "timed out or answered an error); the booking is refused or booked and flagged, as "
         "the deployment's FHIR_SCHED_ELIGIBILITY_ON_FAILURE says."),
    Rule("referral-used", "referralRequired", "boolean", "Referral visits used",
         "Every visit the referral allows (ServiceRequest.quantityQuantity) is taken by an "
         "active booking; a cancellation or a no-show gives its visit back."),
)
# Settings that tune a rule rather than turn one on.
TUNING = frozenset({"lookbackYears", "visitsPeriodDays"})
SETTINGS = frozenset(r.setting for r in RULES) | TUNING
_BY_CODE = {r.code: r for r in RULES}


class RuleError(ValueError):
    """An unusable rule setting on a visit type; ``path`` points at it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Rules:
    min_notice: timedelta | None = None
    max_advance: timedelta | None = None
    same_day_cutoff: time | None = None
    self_booking: bool = True
    min_age: int | None = None
    max_age: int | None = None
    referral_required: bool = False
    prior_auth_required: bool = False
    coverage_required: bool = False
    patient_status: str | None = None  # "new" | "established"
    lookback: timedelta = timedelta(days=3 * 365)
    max_visits: int | None = None
    late_cancel: timedelta | None = None
    visits_period: timedelta = timedelta(days=365)
    accepted_payors: tuple[str, ...] = ()

    @property
    def needs_history(self) -> bool:
        """Rules judged on the patient's other appointments."""
        return self.patient_status is not None or self.max_visits is not None

    @property
    def needs_referral(self) -> bool:
        return self.referral_required or self.prior_auth_required

    @property
    def needs_coverage(self) -> bool:
        return self.coverage_required or bool(self.accepted_payors)

    @property
    def needs_patient(self) -> bool:
        return self.min_age is not None or self.max_age is not None

    @property
    def any(self) -> bool:
        return self != Rules()


@dataclass(frozen=True, slots=True)
class Breach:
    """One rule a booking breaks: its code, words for the front desk, the element to fix."""

    code: str
    message: str
    expression: str = "Appointment.start"

    def coding(self) -> dict[str, str]:
        return {"system": RULE_SYSTEM, "code": self.code, "display": _BY_CODE[self.code].display}


def _count(path: str, sub: Mapping[str, Any], key: str, least: int, most: int) -> int:
    value = sub.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise RuleError(f"{path}.{key}", f"must be an integer from {least} to {most}, "
                        f"got {value!r}")
    return value


# Yes/no settings and whole-number settings, each to its field of ``Rules``: the number's
# value[x] key, its bounds, and what it becomes.
_FLAGS = (("selfBooking", "self_booking"), ("referralRequired", "referral_required"),
          ("priorAuthorizationRequired", "prior_auth_required"),
          ("coverageRequired", "coverage_required"))
_COUNTS: tuple[tuple[str, str, str, int, int, Callable[[int], Any]], ...] = (
    ("minNoticeMinutes", "min_notice", "valueUnsignedInt", 0, MAX_ADVANCE_DAYS * 1440,
     lambda n: timedelta(minutes=n)),
    ("maxAdvanceDays", "max_advance", "valuePositiveInt", 1, MAX_ADVANCE_DAYS,
     lambda n: timedelta(days=n)),
    ("lookbackYears", "lookback", "valuePositiveInt", 1, 50, lambda n: timedelta(days=365 * n)),
    ("lateCancelHours", "late_cancel", "valuePositiveInt", 1, 24 * 60,
     lambda n: timedelta(hours=n)),
    ("maxVisits", "max_visits", "valuePositiveInt", 1, 1000, int),
    ("visitsPeriodDays", "visits_period", "valuePositiveInt", 1, MAX_ADVANCE_DAYS,
     lambda n: timedelta(days=n)),
    ("minAgeYears", "min_age", "valueUnsignedInt", 0, MAX_AGE_YEARS, int),
    ("maxAgeYears", "max_age", "valueUnsignedInt", 0, MAX_AGE_YEARS, int),
)


def parse_rules(groups: Mapping[str, list[tuple[str, Mapping[str, Any]]]]) -> Rules:
    """Rules from a visit type's sub-extensions (grouped by url, each with its path)."""
    found: dict[str, Any] = {}
    for setting, name, key, least, most, make in _COUNTS:
        if setting in groups:
            path, sub = groups[setting][0]
            found[name] = make(_count(path, sub, key, least, most))
    for setting, name in _FLAGS:
        if setting in groups:
            path, sub = groups[setting][0]
            if not isinstance(sub.get("valueBoolean"), bool):
                raise RuleError(f"{path}.valueBoolean", "must be true or false")
            found[name] = sub["valueBoolean"]
    if "sameDayCutoff" in groups:
        path, sub = groups["sameDayCutoff"][0]
        raw = sub.get("valueTime")
        try:
            found["same_day_cutoff"] = time.fromisoformat(raw) if isinstance(raw, str) else None
        except ValueError:
            found["same_day_cutoff"] = None
        if found["same_day_cutoff"] is None:
            raise RuleError(f"{path}.valueTime", f"must be a time of day hh:mm:ss, got {raw!r}")
    if "patientStatus" in groups:
        path, sub = groups["patientStatus"][0]
        if sub.get("valueCode") not in ("new", "established"):
            raise RuleError(f"{path}.valueCode", "must be new or established, got "
                            f"{sub.get('valueCode')!r}")
        found["patient_status"] = sub["valueCode"]
    payors = []
    for path, sub in groups.get("acceptedPayor", []):
        ref = sub.get("valueReference")
        target = ref.get("reference") if isinstance(ref, Mapping) else None
        if not isinstance(target, str) or not target.startswith("Organization/"):
            raise RuleError(f"{path}.valueReference", "must reference an Organization (the "
                            "payor), as Organization/<id>")
        payors.append(target)
    if payors:
        found["accepted_payors"] = tuple(payors)
    rules = Rules(**found)
    if (rules.min_notice is not None and rules.max_advance is not None
            and rules.min_notice > rules.max_advance):
        path, _ = groups["minNoticeMinutes"][0]
        raise RuleError(path, "minimum notice is longer than the maximum advance booking")
    if rules.min_age is not None and rules.max_age is not None and rules.min_age > rules.max_age:
        path, _ = groups["minAgeYears"][0]
        raise RuleError(path, "minAgeYears is above maxAgeYears")
    return rules


def clinic_zone(service: Mapping[str, Any] | None) -> ZoneInfo:
    for ext in (service or {}).get("extension") or []:
        if isinstance(ext, Mapping) and ext.get("url") == TIMEZONE_URL:
            try:
                return ZoneInfo(str(ext.get("valueCode")))
            except (ZoneInfoNotFoundError, ValueError):
                break
    return ZoneInfo("UTC")


def _minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes % 1440 == 0 and minutes:
        return f"{minutes // 1440} day(s)"
    if minutes % 60 == 0 and minutes:
        return f"{minutes // 60} hour(s)"
    return f"{minutes} minute(s)"


def timing_breaches(rules: Rules, visit: str, start: datetime, now: datetime,
                    zone: ZoneInfo) -> list[Breach]:
    out = []
    if rules.min_notice is not None and start - now < rules.min_notice:
        out.append(Breach("min-notice", f"a {visit} visit must be booked at least "
                          f"{_minutes(rules.min_notice)} ahead"))
    if rules.max_advance is not None and start - now > rules.max_advance:
        out.append(Breach("max-advance", f"a {visit} visit may be booked at most "
                          f"{_minutes(rules.max_advance)} ahead"))
    if rules.same_day_cutoff is not None:
        local_now = now.astimezone(zone)
        if (start.astimezone(zone).date() == local_now.date()
                and local_now.time() >= rules.same_day_cutoff):
            out.append(Breach("same-day-cutoff", f"same-day {visit} visits must be booked "
                              f"before {rules.same_day_cutoff.isoformat('minutes')} "
                              f"({zone.key})"))
    return out


def rule_window(rules: Rules, now: datetime, zone: ZoneInfo, lo: datetime, hi: datetime
                ) -> tuple[datetime, datetime]:
    """The part of [lo, hi) where a visit may start under the timing rules, as ``$find``
    offers it (the guard judges each booking by ``timing_breaches``, to the same effect)."""
    if rules.min_notice is not None:
        lo = max(lo, now + rules.min_notice)
    if rules.max_advance is not None:
        hi = min(hi, now + rules.max_advance)
    if rules.same_day_cutoff is not None:
        local = now.astimezone(zone)
        if local.time() >= rules.same_day_cutoff:
            tomorrow = datetime.combine(local.date() + timedelta(days=1), time(0), zone)
            lo = max(lo, tomorrow)
    return lo, hi


def caller_breaches(rules: Rules, visit: str, patient_caller: bool,
                    phone: str | None = None) -> list[Breach]:
    """``phone``: where the patient books instead (``clinic_phone``), told in the refusal so
    an app can show it rather than a dead end."""
    if patient_caller and not rules.self_booking:
        return [Breach("staff-only", staff_only_message(visit, phone),
                       "Appointment.appointmentType")]
    return []


def staff_only_message(visit: str, phone: str | None) -> str:
    if phone:
        return f"a {visit} visit is not booked online: this visit is booked by phone: {phone}"
    return f"a {visit} visit is booked by the clinic's staff; please call the clinic"


def phone_of(resource: Mapping[str, Any] | None) -> str | None:
    """The first phone in ``telecom`` (a HealthcareService's or a Location's)."""
    for t in (resource or {}).get("telecom") or []:
        if isinstance(t, Mapping) and t.get("system") == "phone" and isinstance(
                t.get("value"), str) and t["value"]:
            return str(t["value"])
    return None


async def clinic_phone(service: Mapping[str, Any],
                       location: Callable[[str], Awaitable[Mapping[str, Any] | None]]
                       ) -> str | None:
    """Where a visit of ``service`` is booked by phone: its own telecom, else that of the
    first of its Locations (read through ``location``, by id; at most 5 looked at) that
    lists one. Asked only when a refusal needs it."""
    phone = phone_of(service)
    refs = [loc.get("reference") for loc in service.get("location") or []
            if isinstance(loc, Mapping)]
    for ref in refs[:5] if phone is None else ():
        if isinstance(ref, str) and ref.startswith("Location/"):
            phone = phone_of(await location(ref.split("/", 1)[1]))
            if phone:
                break
    return phone


def age_on(birth: date, day: date) -> int:
    years = day.year - birth.year
    return years - ((day.month, day.day) < (birth.month, birth.day))


def birth_date(raw: object) -> date | None:
    """A FHIR date of any precision, read as its earliest day (a year alone: 1 January)."""
    if not isinstance(raw, str):
        return None
    parts = raw.split("-")
    try:
        return date(int(parts[0]), int(parts[1]) if len(parts) > 1 else 1,
                    int(parts[2]) if len(parts) > 2 else 1)
    except ValueError:
        return None


def age_breaches(rules: Rules, visit: str, patient: Mapping[str, Any] | None, start: datetime,
                 zone: ZoneInfo) -> list[Breach]:
    if not rules.needs_patient:
        return []
    birth = birth_date((patient or {}).get("birthDate"))
    if birth is None:
        return [Breach("age-unknown", f"a {visit} visit has an age rule and the patient's "
                       "birth date is not known", "Appointment.participant")]
    age = age_on(birth, start.astimezone(zone).date())
    if rules.min_age is not None and age < rules.min_age:
        return [Breach("min-age", f"a {visit} visit is for patients aged {rules.min_age} and "
                       f"over; this patient will be {age}", "Appointment.participant")]
    if rules.max_age is not None and age > rules.max_age:
        return [Breach("max-age", f"a {visit} visit is for patients aged up to "
                       f"{rules.max_age}; this patient will be {age}",
                       "Appointment.participant")]
    return []


Coding = tuple[str | None, str]
MAX_ON_FILE = 20  # a patient's active referrals or Coverages looked at for one booking


def named(appointment: Mapping[str, Any], element: str, type_: str) -> list[str]:
    """Ids of the ``type_`` resources an appointment names in ``element`` (basedOn,
    supportingInformation)."""
    return [ref.split("/", 1)[1] for b in appointment.get(element) or []
            if isinstance(b, Mapping) and isinstance(ref := b.get("reference"), str)
            and ref.startswith(f"{type_}/")]


def on_file(type_: str, patient_param: str, patient: str) -> Query:
    """The patient's active ``type_`` resources (referrals, Coverages)."""
    return Query(type_, (Entry(patient_param, (Cond("val", "=", patient),), unique=True),
                         Entry("status", (Cond("val", "=", "active"),))), count=MAX_ON_FILE)


def linked(appointment: dict[str, Any], element: str, reference: str) -> dict[str, Any]:
    """The appointment naming ``reference`` in ``element`` (added when absent)."""
    refs = [b.get("reference") for b in appointment.get(element) or [] if isinstance(b, dict)]
    if reference in refs:
        return appointment
    return {**appointment, element: [*(appointment.get(element) or []),
                                     {"reference": reference}]}


def _codings(concept: object) -> list[Coding]:
    if not isinstance(concept, Mapping):
        return []
    out: list[Coding] = []
    for c in concept.get("coding") or []:
        if isinstance(c, Mapping) and isinstance(c.get("code"), str):
            system = c.get("system")
            out.append((system if isinstance(system, str) else None, c["code"]))
    return out


def referral_problem(request: Mapping[str, Any], patient: str | None,
                     services: list[Coding], start: datetime | None) -> str | None:
    """Why a ServiceRequest is not a referral for this booking, or None when it is one
    (``start`` None: for any time, its occurrence period aside)."""
    if request.get("status") != "active":
        return f"is {request.get('status')!r}, not active"
    if request.get("intent") not in ("order", "original-order", "reflex-order", "filler-order",
                                     "instance-order"):
        return f"is a {request.get('intent')!r}, not an order"
    subject = (request.get("subject") or {}).get("reference")
    if patient is None or subject != patient:
        return "is for another patient"
    have = _codings(request.get("code"))
    if not any(code == c and (system is None or s is None or system == s)
               for system, code in services for s, c in have):
        return "is for another service"
    lo, hi = referral_period(request)
    if start is not None and ((lo is not None and start < lo) or (hi is not None and start >= hi)):
        return "does not cover the visit's date (occurrencePeriod)"
    return None


def referral_period(request: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    """When a referral's visits may take place: its occurrencePeriod, open where unset."""
    period = request.get("occurrencePeriod")
    if not isinstance(period, Mapping):
        return None, None
    return _period_bound(period.get("start")), _period_bound(period.get("end"), True)


def _period_bound(raw: object, end: bool = False) -> datetime | None:
    """A FHIR dateTime of any precision as an instant (a date-only end: the next midnight)."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        if len(raw) <= 10:
            day = birth_date(raw)
            if day is None:
                return None
            at = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo("UTC"))
            return at + timedelta(days=1) if end else at
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


def coverage_problem(coverage: Mapping[str, Any], patient: str | None,
                     payors: tuple[str, ...], start: datetime | None) -> tuple[str, str] | None:
    """Why a Coverage does not cover this booking, as (rule code, words), or None when it
    does (``start`` None: at any time, its period aside)."""
    if coverage.get("status") != "active":
        return "coverage-required", f"is {coverage.get('status')!r}, not active"
    beneficiary = (coverage.get("beneficiary") or {}).get("reference")
    if patient is None or beneficiary != patient:
        return "coverage-required", "is not the patient's (beneficiary)"
    lo, hi = coverage_period(coverage)
    if start is not None and ((lo is not None and start < lo) or (hi is not None and start >= hi)):
        return "coverage-required", "does not cover the visit's date (period)"
    if payors:
        paid_by = {p.get("reference") for p in coverage.get("payor") or []
                   if isinstance(p, Mapping)}
        if not paid_by & set(payors):
            return "payor-not-accepted", "is from a payor this visit type does not accept"
    return None


def coverage_period(coverage: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    period = coverage.get("period")
    if not isinstance(period, Mapping):
        return None, None
    return _period_bound(period.get("start")), _period_bound(period.get("end"), True)


def authorization(request: Mapping[str, Any]) -> tuple[str, datetime | None, datetime | None
                                                       ] | None:
    """A referral's prior authorization: (number, valid from, valid until), or None."""
    for ext in request.get("extension") or []:
        if not isinstance(ext, Mapping) or ext.get("url") != PRIOR_AUTHORIZATION_URL:
            continue
        parts = {sub.get("url"): sub for sub in ext.get("extension") or []
                 if isinstance(sub, Mapping)}
        number = (parts.get("number") or {}).get("valueString")
        period = (parts.get("period") or {}).get("valuePeriod")
        if not isinstance(number, str) or not number or not isinstance(period, Mapping):
            return None
        return (number, _period_bound(period.get("start")),
                _period_bound(period.get("end"), True))
    return None


def authorization_problem(request: Mapping[str, Any], start: datetime | None) -> str | None:
    """Why a referral's prior authorization does not cover the visit, or None."""
    held = authorization(request)
    if held is None:
        return "carries no prior authorization (a number and a period)"
    number, lo, hi = held
    if start is not None and ((lo is not None and start < lo) or (hi is not None and start >= hi)):
        return f"has prior authorization {number}, which does not cover the visit's date"
    return None


def referral_visits(request: Mapping[str, Any]) -> int | None:
    """How many visits a referral allows (quantityQuantity.value), None when it sets none."""
    quantity = request.get("quantityQuantity")
    value = quantity.get("value") if isinstance(quantity, Mapping) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return min(int(value), 1000)
    return None


def history_breaches(rules: Rules, visit: str, start: datetime,
                     fulfilled_before: list[datetime], taking: list[datetime]) -> list[Breach]:
    """The patient-history rules: ``fulfilled_before`` are starts of the patient's fulfilled
    visits of this service or practitioner, ``taking`` of their other active or fulfilled
    visits of this visit type."""
    out = []
    if rules.patient_status is not None:
        seen = any(start - rules.lookback <= t < start for t in fulfilled_before)
        years = rules.lookback.days // 365
        if rules.patient_status == "new" and seen:
            out.append(Breach("new-patient", f"a {visit} visit is for new patients; this "
                              f"patient was seen here in the last {years} year(s)",
                              "Appointment.participant"))
        if rules.patient_status == "established" and not seen:
            out.append(Breach("established-patient", f"a {visit} visit is for established "
                              f"patients; this patient was not seen here in the last {years} "
                              "year(s)", "Appointment.participant"))
    if rules.max_visits is not None:
        period = rules.visits_period
        near = sorted(t for t in taking if abs(t - start) < period)
        # the most visits any window of the period holding this one would contain
        worst = max((sum(1 for t in near if lo <= t < lo + period)
                     for lo in [start - period + timedelta(microseconds=1), *near]
                     if lo <= start < lo + period), default=0)
        if worst + 1 > rules.max_visits:
            out.append(Breach("visit-limit", f"a {visit} visit may be booked at most "
                              f"{rules.max_visits} time(s) in {period.days} days for one "
                              "patient; this one would be one too many",
                              "Appointment.start"))
    return out


def code_system() -> dict[str, Any]:
    """The CodeSystem of these codes, as ``conformance/CodeSystem-booking-rule.json`` holds
    it (a test keeps the file and this table the same)."""
    return {
        "resourceType": "CodeSystem", "id": "booking-rule", "url": RULE_SYSTEM,
        "version": "0.1.0", "name": "BookingRule", "title": "Booking rules",
        "status": "active", "experimental": False, "publisher": "fhir-sched",
        "description": "Why a booking was refused or flagged: the visit-type rule it breaks. "
                       "Carried in OperationOutcome.issue.details and in booking-flag "
                       "extensions.",
        "caseSensitive": True, "content": "complete", "count": len(RULES),
        "concept": [{"code": r.code, "display": r.display, "definition": r.definition}
                    for r in RULES],
    }
