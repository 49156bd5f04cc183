"""Visit types: the bookable kinds of visit a HealthcareService offers, how long each lasts and
which resources (practitioner, room, device) it needs together.

Parsed strictly on write (``HealthcareService`` rules refuse a bad definition with the element
path), and leniently on read (``codings``), since stored data predates any rule change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from .booking_rules import SETTINGS as RULE_SETTINGS
from .booking_rules import RuleError, Rules, parse_rules
from .notices import REPEATING as NOTICE_REPEATING
from .notices import SETTINGS as NOTICE_SETTINGS
from .notices import NoticeError, Notices, parse_notices
from .templates import EXTENSION_BASE, group_sub_extensions

RESOURCE_KIND_URL = EXTENSION_BASE + "resource-kind"
VISIT_TYPE_URL = EXTENSION_BASE + "visit-type"
ACTOR_TYPES = frozenset({"Practitioner", "PractitionerRole", "Location", "Device"})

Coding = tuple[str | None, str]
MAX_VISIT_MINUTES = 31 * 24 * 60  # a visit type's longest booking: bounded work still
"""(system, code); a None system in a requirement matches any system."""



class VisitTypeError(ValueError):
    """Raised for an unusable visit-type extension; the path points the client at the culprit."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _coding_matches(wanted: Coding, have: Coding) -> bool:
    return wanted[1] == have[1] and (wanted[0] is None or wanted[0] == have[0])


@dataclass(frozen=True, slots=True)
class Need:
    """One resource a visit type needs; the constraints narrow which calendars may serve it."""

    actor_type: str
    specialty: tuple[Coding, ...] = ()
    kind: tuple[Coding, ...] = ()

    def accepts(
        self, actor_type: str, specialty: Iterable[Coding] = (), kind: Iterable[Coding] = ()
    ) -> bool:
        """Decide candidacy here so every caller applies the same any-coding-matches rule."""
        if actor_type != self.actor_type:
            return False
        if self.specialty:
            have = tuple(specialty)
            if not any(_coding_matches(w, h) for w in self.specialty for h in have):
                return False
        if self.kind:
            have = tuple(kind)
            if not any(_coding_matches(w, h) for w in self.kind for h in have):
                return False
        return True


@dataclass(frozen=True, slots=True)
class VisitType:
    """A bookable kind of visit offered by a HealthcareService: its length and what it needs."""

    system: str | None
    code: str
    display: str | None
    duration: timedelta
    needs: tuple[Need, ...]
    # The longest a booking of this type may last (maxMinutesDuration), in place of the
    # server's FHIR_SCHED_MAX_APPOINTMENT_HOURS: a sleep study or an infusion day may need
    # more, a 15-minute consult far less. None: the server's cap.
    longest: timedelta | None = None
    # Who may book it, how far ahead, for whom (booking_rules): none by default.
    rules: Rules = field(default_factory=Rules)
    # Its reminders, their channels, whether it is virtual (``notices``).
    notices: Notices = field(default_factory=Notices)

    def matches_token(self, token: str) -> bool:
        """Match `$find`'s visit-type with FHIR token rules: code, system|code, |code, system|."""
        if "|" not in token:
            return token == self.code
        system, code = token.split("|", 1)
        if not system:
            return self.system is None and code == self.code
        if system != self.system:
            return False
        return not code or code == self.code


def codings(concept: object) -> tuple[Coding, ...]:
    """Flatten a CodeableConcept or Coding to (system, code); tolerant, as it reads stored data."""
    if not isinstance(concept, Mapping):
        return ()
    items = concept.get("coding") if "coding" in concept else [concept]
    out: list[Coding] = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("code"), str):
            system = item.get("system")
            out.append((system if isinstance(system, str) else None, item["code"]))
    return tuple(out)


def parse_resource_kind(schedule: Mapping[str, object]) -> tuple[Coding, ...]:
    """Codings of the Schedule's resource-kind extension, used to match a need's `kind`."""
    found: list[Coding] = []
    raw = schedule.get("extension")
    for ext in raw if isinstance(raw, list) else []:
        if isinstance(ext, Mapping) and ext.get("url") == RESOURCE_KIND_URL:
            found.extend(codings(ext.get("valueCodeableConcept")))
    return tuple(found)


def _concept(sub_path: str, sub: Mapping[str, object]) -> tuple[Coding, ...]:
    found = codings(sub.get("valueCodeableConcept"))
    if not found:
        raise VisitTypeError(
            f"{sub_path}.valueCodeableConcept", "needs at least one coding with a code"
        )
    return found


def _parse_need(element: Mapping[str, object], path: str) -> Need:
    groups = group_sub_extensions(element, path, {"actorType", "specialty", "kind"}, set(),
                                  VisitTypeError)
    if "actorType" not in groups:
        raise VisitTypeError(path, "actorType is required")
    sub_path, sub = groups["actorType"][0]
    actor_type = sub.get("valueCode")
    if actor_type not in ACTOR_TYPES:
        raise VisitTypeError(
            f"{sub_path}.valueCode", f"must be one of {sorted(ACTOR_TYPES)}, got {actor_type!r}"
        )
    assert isinstance(actor_type, str)
    specialty = _concept(*groups["specialty"][0]) if "specialty" in groups else ()
    kind = _concept(*groups["kind"][0]) if "kind" in groups else ()
    return Need(actor_type, specialty, kind)


def _parse_visit_type(ext: Mapping[str, object], path: str) -> VisitType:
    groups = group_sub_extensions(ext, path, {"code", "minutesDuration", "maxMinutesDuration",
                                              "need", *RULE_SETTINGS, *NOTICE_SETTINGS},
                                  {"need", "acceptedPayor", *NOTICE_REPEATING}, VisitTypeError)
    if "code" not in groups:
        raise VisitTypeError(path, "code is required")
    sub_path, sub = groups["code"][0]
    coding = sub.get("valueCoding")
    if (
        not isinstance(coding, Mapping)
        or not isinstance(coding.get("code"), str)
        or not coding["code"]
    ):
        raise VisitTypeError(f"{sub_path}.valueCoding", "must be a Coding with a code")
    system, display = coding.get("system"), coding.get("display")

    if "minutesDuration" not in groups:
        raise VisitTypeError(path, "minutesDuration is required")
    sub_path, sub = groups["minutesDuration"][0]
    minutes = sub.get("valuePositiveInt")
    if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 1:
        raise VisitTypeError(
            f"{sub_path}.valuePositiveInt", f"must be an integer >= 1, got {minutes!r}"
        )

    longest = None
    if "maxMinutesDuration" in groups:
        sub_path, sub = groups["maxMinutesDuration"][0]
        most = sub.get("valuePositiveInt")
        if not isinstance(most, int) or isinstance(most, bool) or not (
                minutes <= most <= MAX_VISIT_MINUTES):
            raise VisitTypeError(
                f"{sub_path}.valuePositiveInt", f"must be an integer from minutesDuration "
                f"({minutes}) to {MAX_VISIT_MINUTES} (31 days), got {most!r}")
        longest = timedelta(minutes=most)

    needs = tuple(_parse_need(sub, sub_path) for sub_path, sub in groups.get("need", []))
    try:
        rules = parse_rules(groups)
        notices = parse_notices(groups)
    except (RuleError, NoticeError) as exc:
        raise VisitTypeError(exc.path, exc.message) from exc
    return VisitType(
        system=system if isinstance(system, str) else None,
        code=coding["code"],
        display=display if isinstance(display, str) else None,
        duration=timedelta(minutes=minutes),
        needs=needs,
        longest=longest,
        rules=rules,
        notices=notices,
    )


def parse_visit_types(healthcare_service: Mapping[str, object]) -> list[VisitType]:
    """Read every visit-type extension; one bad entry rejects all, so errors surface on write."""
    raw = healthcare_service.get("extension", [])
    if not isinstance(raw, list):
        raise VisitTypeError("HealthcareService.extension", "must be an array")
    found: list[VisitType] = []
    for index, ext in enumerate(raw):
        if isinstance(ext, Mapping) and ext.get("url") == VISIT_TYPE_URL:
            found.append(_parse_visit_type(ext, f"HealthcareService.extension[{index}]"))
    return found
