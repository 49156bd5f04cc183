"""The KPI arithmetic (``scheduling/kpis.py``) on plain values, worked by hand; and the
shipped Measures agree with what the server computes for them."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from fhir_sched.engage.waitlist import REASON_SYSTEM
from fhir_sched.scheduling import kpis
from fhir_sched.scheduling.kpis import Observation, Visit, Window
from fhir_sched.scheduling.templates import Template
from fhir_sched.service.measures import WAITLIST_OUTCOME, measures
from fhir_sched.timeutil import to_us

H = 3_600_000_000
T0 = to_us(datetime(2026, 3, 2, 9, tzinfo=UTC))  # a Monday, ISO week 2026-W10


def visit(status: str, start: int = T0, *, doctor: str = "Practitioner/a",
          updated: int | None = None, booked: int | None = None, minutes: int = 30,
          week: str = "2026-W10") -> Visit:
    return Visit(f"{status}-{start}", start, start + minutes * 60_000_000, status,
                 updated if updated is not None else start - 100 * H, booked, (doctor,),
                 ((doctor,), ("Location/l",), ("svc",), week))


def test_no_show_counts_only_kept_visits_whose_start_passed() -> None:
    now = T0 + 10 * H
    got = kpis.no_show([visit("noshow"), visit("fulfilled"), visit("booked"),
                        visit("cancelled"), visit("booked", T0 + 20 * H)], now)
    # denominator: noshow, fulfilled, booked (passed); cancelled and the future one are not
    assert got.total.populations == {"initial-population": 5, "denominator": 3,
                                     "numerator": 1}
    assert kpis.ratio(got.total) == pytest.approx(1 / 3)


def test_late_cancellation_is_within_the_lead_or_after_the_start() -> None:
    lead = 24 * H
    visits = [visit("cancelled", updated=T0 - 25 * H), visit("cancelled", updated=T0 - 23 * H),
              visit("cancelled", updated=T0 + H), visit("fulfilled"), visit("proposed")]
    late = kpis.cancellation(visits, lead)
    # ever booked: three cancelled and the fulfilled one = 4; late: 23 h before and after
    assert late.total.populations == {"initial-population": 5, "denominator": 4,
                                      "numerator": 2}
    assert kpis.cancellation(visits).total.populations["numerator"] == 3


def test_capacity_use_counts_each_scheduled_resource_once_per_visit() -> None:
    strata: kpis.Strata = ((), (), ("svc",), "2026-W10")
    windows = [Window("Practitioner/a", T0, T0 + 2 * H, 1, 30, strata),
               Window("Location/r", T0, T0 + 2 * H, 2, 60, strata)]
    both = Visit("v", T0, T0 + 30 * 60_000_000, "booked", T0, None,
                 ("Practitioner/a", "Location/r", "Device/x"),
                 (("Practitioner/a",), ("Location/r",), ("svc",), "2026-W10"))
    fill = kpis.capacity_use([both, visit("cancelled")], windows, minutes=False)
    # capacity: a 120/30 = 4 visits, r (120/60) x 2 = 4: 8; the visit fills one of each: 2
    assert fill.total.populations == {"denominator": 8, "numerator": 2}
    assert fill.strata["practitioner"]["Practitioner/a"].populations == {
        "denominator": 4, "numerator": 1}
    use = kpis.capacity_use([both], windows, minutes=True)
    # minutes: a 120 + r 120 x 2 = 360; used 30 on each of a and r = 60
    assert use.total.populations == {"denominator": 360, "numerator": 60}
    only_a = kpis.capacity_use([both], windows, minutes=True, keep=lambda r: r.endswith("/a"))
    assert only_a.total.populations == {"denominator": 120, "numerator": 30}


def test_lead_time_excludes_bookings_recorded_after_the_start() -> None:
    got = kpis.lead_time([visit("booked", booked=T0 - 48 * H),
                          visit("fulfilled", booked=T0 - 24 * H),
                          visit("noshow", booked=T0 - 96 * H),
                          visit("fulfilled", booked=T0 + H), visit("cancelled", booked=T0)])
    assert got.total.populations == {"measure-population": 4,
                                     "measure-population-exclusion": 1,
                                     "measure-observation": 3}
    assert kpis.aggregate(got.total, "median") == pytest.approx(2.0)  # 1 2 4 days
    assert kpis.aggregate(got.total, "mean") == pytest.approx(7 / 3)


def test_strata_split_members_over_every_value_they_carry() -> None:
    two = Visit("v", T0, None, "noshow", T0, None, (), (("Practitioner/a", "Practitioner/b"),
                                                        (), (), "2026-W10"))
    got = kpis.no_show([two, visit("fulfilled", week="2026-W11")], T0 + H)
    assert got.strata["practitioner"]["Practitioner/b"].populations["numerator"] == 1
    assert got.strata["practitioner"]["Practitioner/a"].populations["denominator"] == 2
    assert set(got.strata["week"]) == {"2026-W10", "2026-W11"}
    assert got.total.populations["denominator"] == 2  # the two-doctor visit counts once


def test_observed_members_without_a_value_are_excluded() -> None:
    s: kpis.Strata = (("Practitioner/a",), (), ("consult",), "2026-W10")
    got = kpis.observed([Observation(2.0, s), Observation(None, s), Observation(5.0, s)])
    assert got.total.populations == {"measure-population": 3,
                                     "measure-population-exclusion": 1,
                                     "measure-observation": 2}
    assert kpis.aggregate(got.total, "mean") == pytest.approx(3.5)


def test_days_to_third_counts_calendar_days_from_the_request_day() -> None:
    day = date(2026, 3, 2)
    starts = [datetime(2026, 3, 2, 16, tzinfo=UTC), datetime(2026, 3, 4, 9, tzinfo=UTC),
              datetime(2026, 3, 3, 9, tzinfo=UTC)]
    assert kpis.days_to_third(day, starts) == 2.0
    assert kpis.days_to_third(day, starts[:2]) is None


def _template(**kw: object) -> Template:
    base: dict[str, object] = {
        "tz": ZoneInfo("Europe/Berlin"), "weekly": ((frozenset({0}), time(9), time(17)),),
        "slot_minutes": 30, "alignment_minutes": 30, "buffer_before": timedelta(0),
        "buffer_after": timedelta(0), "capacity": 1, "not_available": (), "valid_from": None,
        "valid_to": None}
    base.update(kw)
    return Template(**base)  # type: ignore[arg-type]


def test_template_windows_are_wall_clock_hours_less_not_available() -> None:
    lo, hi = to_us(datetime(2026, 3, 1, tzinfo=UTC)), to_us(datetime(2026, 3, 8, tzinfo=UTC))
    # Monday 2 March 09:00-17:00 Berlin (UTC+1) is 08:00-16:00 UTC
    assert kpis.template_windows(_template(), lo, hi) == [
        (to_us(datetime(2026, 3, 2, 8, tzinfo=UTC)), to_us(datetime(2026, 3, 2, 16, tzinfo=UTC)))]
    lunch = ((datetime(2026, 3, 2, 11, tzinfo=UTC), datetime(2026, 3, 2, 12, tzinfo=UTC)),)
    assert [(b - a) // H for a, b in kpis.template_windows(
        _template(not_available=lunch), lo, hi)] == [3, 4]
    night = _template(weekly=((frozenset({0}), time(22), time(6)),), tz=ZoneInfo("UTC"))
    assert [(b - a) // H for a, b in kpis.template_windows(night, lo, hi)] == [8]


def test_the_waitlist_outcome_is_the_one_the_waitlist_job_writes() -> None:
    assert WAITLIST_OUTCOME == REASON_SYSTEM


def test_every_shipped_measure_declares_the_populations_the_server_reports() -> None:
    emitted = {
        "proportion": {"initial-population", "denominator", "numerator"},
        "ratio": {"denominator", "numerator"},
        "continuous-variable": {"measure-population", "measure-population-exclusion",
                                "measure-observation"},
    }
    for mid, measure in measures().items():
        scoring = measure["scoring"]["coding"][0]["code"]
        for group in measure["group"]:
            declared = {p["code"]["coding"][0]["code"] for p in group["population"]}
            assert declared == emitted[scoring], mid
            assert [s["code"]["text"] for s in group["stratifier"]] == list(kpis.STRATIFIERS)
        if scoring == "continuous-variable":
            assert [g["code"]["text"] for g in measure["group"]] == ["median", "mean"], mid
        assert measure["relatedArtifact"], mid
        assert measure["improvementNotation"]["coding"][0]["code"] in ("increase", "decrease")


def test_instants_read_from_bodies_are_exact_to_the_microsecond() -> None:
    import random

    from fhir_sched.service.measures import _us

    rng = random.Random(16)
    base = datetime(1990, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        instant = base + timedelta(microseconds=rng.randrange(0, 200 * 365 * 86_400 * 10**6))
        zone = ZoneInfo(rng.choice(["UTC", "America/New_York", "Asia/Kolkata"]))
        assert _us(instant.astimezone(zone).isoformat()) == to_us(instant)
    assert _us("2026-03-02") == to_us(datetime(2026, 3, 2, tzinfo=UTC))
    assert _us("not a date") is None and _us(None) is None
