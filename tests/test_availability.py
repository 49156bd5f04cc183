"""Behaviour of the store-free availability engine (templates, free time, multi-resource options).

Expected instants are written out by hand in UTC so the tests do not share the engine's own
time-zone arithmetic: a mistake in the DST handling cannot cancel itself out here.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhir_sched.scheduling import availability
from fhir_sched.scheduling.availability import (
    Busy,
    Option,
    ResourceCalendar,
    find_options,
    free_units,
)
from fhir_sched.scheduling.templates import (
    AVAILABILITY_TEMPLATE_URL,
    Template,
    TemplateError,
    horizon,
    iter_units,
    parse_templates,
)
from fhir_sched.scheduling.visit_types import (
    RESOURCE_KIND_URL,
    VISIT_TYPE_URL,
    Need,
    VisitTypeError,
    parse_resource_kind,
    parse_visit_types,
)
from tests.support.scheduling import hours

CONFORMANCE = Path(__file__).resolve().parent.parent / "conformance"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
ALL_DAYS = (*WEEKDAYS, "sat", "sun")
MIN15 = timedelta(minutes=15)

# ----------------------------------------------------------------------------- helpers


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def template_ext(tz: str, *times: dict[str, Any], **elements: Any) -> dict[str, Any]:
    """An availability-template extension; keyword arguments become simple sub-extensions."""
    kinds = {
        "slotMinutes": "valuePositiveInt",
        "alignmentMinutes": "valuePositiveInt",
        "bufferBeforeMinutes": "valueUnsignedInt",
        "bufferAfterMinutes": "valueUnsignedInt",
        "capacity": "valuePositiveInt",
        "validPeriod": "valuePeriod",
    }
    subs: list[dict[str, Any]] = [{"url": "timezone", "valueCode": tz}, *times]
    for name, value in elements.items():
        if name == "notAvailable":
            subs.extend(
                {"url": "notAvailable", "extension": [{"url": "during", "valuePeriod": period}]}
                for period in value
            )
        else:
            subs.append({"url": name, kinds[name]: value})
    return {"url": AVAILABILITY_TEMPLATE_URL, "extension": subs}


def schedule(*templates: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Schedule", "id": "s", "extension": list(templates), **fields}


def one_template(tz: str, *times: dict[str, Any], **elements: Any) -> Template:
    (template,) = parse_templates(schedule(template_ext(tz, *times, **elements)))
    return template


def unit_starts(t: Template, start: str, end: str) -> list[datetime]:
    return [s for s, _ in iter_units(t, at(start), at(end))]


def calendar(
    key: str,
    *,
    days: tuple[str, ...] = ALL_DAYS,
    start: str = "09:00:00",
    end: str = "17:00:00",
    busy: list[Busy] | None = None,
    tz: str = "UTC",
    **elements: Any,
) -> ResourceCalendar:
    sched = schedule(template_ext(tz, hours(days, start, end), **elements))
    return ResourceCalendar(
        key=key,
        schedule_id=key.replace("/", "-"),
        templates=parse_templates(sched),
        horizon=horizon(sched),
        busy=sorted(busy or [], key=lambda b: b.start),
    )


def starts_of(items: list[Option] | list[tuple[datetime, datetime, str | None]]) -> list[str]:
    return [
        item[0].isoformat() if isinstance(item, tuple) else item.start.isoformat() for item in items
    ]


def local_clock(instants: list[datetime], tz: str) -> list[str]:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    return [i.astimezone(zone).strftime("%H:%M%z") for i in instants]


# ----------------------------------------------------------------------------- DST


def test_new_york_monday_after_spring_forward_starts_at_1300z() -> None:
    t = one_template("America/New_York", hours(WEEKDAYS, "09:00:00", "17:00:00"))
    friday = unit_starts(t, "2037-03-06T00:00:00Z", "2037-03-07T00:00:00Z")
    monday = unit_starts(t, "2037-03-09T00:00:00Z", "2037-03-10T00:00:00Z")
    assert (friday[0], friday[-1], len(friday)) == (
        at("2037-03-06T14:00:00Z"),
        at("2037-03-06T21:45:00Z"),
        32,
    )
    assert (monday[0], monday[-1], len(monday)) == (
        at("2037-03-09T13:00:00Z"),
        at("2037-03-09T20:45:00Z"),
        32,
    )


def test_new_york_monday_after_fall_back_starts_at_1400z() -> None:
    t = one_template("America/New_York", hours(WEEKDAYS, "09:00:00", "17:00:00"))
    friday = unit_starts(t, "2037-10-30T00:00:00Z", "2037-10-31T00:00:00Z")
    monday = unit_starts(t, "2037-11-02T00:00:00Z", "2037-11-03T00:00:00Z")
    assert (friday[0], len(friday)) == (at("2037-10-30T13:00:00Z"), 32)
    assert (monday[0], len(monday)) == (at("2037-11-02T14:00:00Z"), 32)


def test_berlin_mondays_keep_local_hours_across_both_changes() -> None:
    t = one_template("Europe/Berlin", hours(WEEKDAYS, "09:00:00", "17:00:00"))
    first = {
        day: unit_starts(t, f"{day}T00:00:00Z", f"{day}T23:00:00Z")[0]
        for day in ("2037-03-27", "2037-03-30", "2037-10-23", "2037-10-26")
    }
    assert first == {
        "2037-03-27": at("2037-03-27T08:00:00Z"),
        "2037-03-30": at("2037-03-30T07:00:00Z"),
        "2037-10-23": at("2037-10-23T07:00:00Z"),
        "2037-10-26": at("2037-10-26T08:00:00Z"),
    }


@pytest.mark.parametrize(
    ("tz", "day", "first_z"),
    [
        ("America/New_York", "2037-03-08", "2037-03-08T13:00:00Z"),
        ("America/New_York", "2037-11-01", "2037-11-01T14:00:00Z"),
        ("Europe/Berlin", "2037-03-29", "2037-03-29T07:00:00Z"),
        ("Europe/Berlin", "2037-10-25", "2037-10-25T08:00:00Z"),
    ],
)
def test_nine_to_five_on_the_change_day_itself_stays_local(tz: str, day: str, first_z: str) -> None:
    t = one_template(tz, hours(("sun",), "09:00:00", "17:00:00"))
    units = unit_starts(t, f"{day}T00:00:00Z", f"{day}T23:59:00Z")
    clock = [c[:5] for c in local_clock(units, tz)]
    expected = [f"{h:02d}:{m:02d}" for h in range(9, 17) for m in (0, 15, 30, 45)]
    assert (units[0], clock) == (at(first_z), expected)


def test_berlin_spring_forward_never_offers_the_missing_hour() -> None:
    t = one_template("Europe/Berlin", hours(("sun",), "01:00:00", "04:00:00"))
    units = unit_starts(t, "2037-03-28T12:00:00Z", "2037-03-29T12:00:00Z")
    assert [u.isoformat() for u in units] == [
        "2037-03-29T00:00:00+00:00",  # 01:00 CET
        "2037-03-29T00:15:00+00:00",
        "2037-03-29T00:30:00+00:00",
        "2037-03-29T00:45:00+00:00",
        "2037-03-29T01:00:00+00:00",  # 03:00 CEST: 02:00-02:59 does not exist
        "2037-03-29T01:15:00+00:00",
        "2037-03-29T01:30:00+00:00",
        "2037-03-29T01:45:00+00:00",
    ]


def test_berlin_fall_back_offers_the_repeated_hour_once_per_instant() -> None:
    t = one_template("Europe/Berlin", hours(("sun",), "01:00:00", "04:00:00"))
    units = unit_starts(t, "2037-10-24T12:00:00Z", "2037-10-25T12:00:00Z")
    expected = [at("2037-10-24T23:00:00Z") + k * MIN15 for k in range(16)]  # 4 real hours
    clock = local_clock(units, "Europe/Berlin")
    assert units == expected
    assert clock.count("02:00+0200") == clock.count("02:00+0100") == 1


def test_overnight_hours_run_into_the_next_day() -> None:
    t = one_template("UTC", hours(("fri",), "22:00:00", "02:00:00"), slotMinutes=60)
    units = unit_starts(t, "2037-03-06T00:00:00Z", "2037-03-09T00:00:00Z")
    assert [u.isoformat() for u in units] == [
        "2037-03-06T22:00:00+00:00",
        "2037-03-06T23:00:00+00:00",
        "2037-03-07T00:00:00+00:00",
        "2037-03-07T01:00:00+00:00",
    ]


def test_alignment_grid_counts_from_the_opening_time() -> None:
    t = one_template(
        "UTC", hours(("mon",), "09:10:00", "10:30:00"), slotMinutes=30, alignmentMinutes=20
    )
    units = unit_starts(t, "2037-03-02T00:00:00Z", "2037-03-03T00:00:00Z")
    assert [u.strftime("%H:%M") for u in units] == ["09:10", "09:30", "09:50"]


def test_same_instant_written_with_different_offsets_gives_identical_units() -> None:
    t = one_template("America/New_York", hours(WEEKDAYS, "09:00:00", "17:00:00"))
    utc = list(iter_units(t, at("2037-03-02T12:00:00Z"), at("2037-03-04T12:00:00Z")))
    east = list(iter_units(t, at("2037-03-02T17:00:00+05:00"), at("2037-03-04T17:00:00+05:00")))
    west = list(iter_units(t, at("2037-03-02T05:00:00-07:00"), at("2037-03-04T05:00:00-07:00")))
    assert utc == east == west
    assert len(utc) == 64


# ----------------------------------------------------------------------------- bounds


def test_not_available_removes_exactly_the_overlapped_units() -> None:
    block = {"start": "2037-03-02T10:10:00Z", "end": "2037-03-02T10:40:00Z"}
    t = one_template("UTC", hours(("mon",), "09:00:00", "17:00:00"), notAvailable=[block])
    units = unit_starts(t, "2037-03-02T00:00:00Z", "2037-03-03T00:00:00Z")
    every = [at("2037-03-02T09:00:00Z") + k * MIN15 for k in range(32)]
    removed = {at("2037-03-02T10:00:00Z"), at("2037-03-02T10:15:00Z"), at("2037-03-02T10:30:00Z")}
    assert units == [u for u in every if u not in removed]


def test_date_only_not_available_blocks_that_whole_local_day() -> None:
    t = one_template(
        "America/New_York",
        hours(ALL_DAYS, "09:00:00", "17:00:00"),
        notAvailable=[{"start": "2037-12-25", "end": "2037-12-25"}],
    )
    days = {
        u.date().isoformat() for u in unit_starts(t, "2037-12-24T00:00:00Z", "2037-12-27T00:00:00Z")
    }
    assert days == {"2037-12-24", "2037-12-26"}


def test_valid_period_bounds_the_template() -> None:
    t = one_template(
        "UTC",
        hours(ALL_DAYS, "09:00:00", "10:00:00"),
        validPeriod={"start": "2037-03-03", "end": "2037-03-04"},
    )
    days = {
        u.date().isoformat() for u in unit_starts(t, "2037-03-01T00:00:00Z", "2037-03-08T00:00:00Z")
    }
    assert days == {"2037-03-03", "2037-03-04"}


def test_templates_for_different_date_ranges_are_merged() -> None:
    winter = template_ext(
        "UTC", hours(ALL_DAYS, "09:00:00", "10:00:00"), validPeriod={"end": "2037-03-31"}
    )
    summer = template_ext(
        "UTC", hours(ALL_DAYS, "07:00:00", "08:00:00"), validPeriod={"start": "2037-04-01"}
    )
    sched = schedule(winter, summer)
    cal = ResourceCalendar("Practitioner/p", "s", parse_templates(sched), horizon(sched), [])
    starts = starts_of(
        list(
            free_units(
                cal, at("2037-03-31T00:00:00Z"), at("2037-04-02T00:00:00Z"), timedelta(hours=1)
            )
        )
    )
    assert starts == ["2037-03-31T09:00:00+00:00", "2037-04-01T07:00:00+00:00"]


def test_planning_horizon_bounds_free_units() -> None:
    sched = schedule(
        template_ext("UTC", hours(ALL_DAYS, "09:00:00", "17:00:00")),
        planningHorizon={"start": "2037-03-02T16:00:00Z", "end": "2037-03-03T09:30:00Z"},
    )
    cal = ResourceCalendar("Practitioner/p", "s", parse_templates(sched), horizon(sched), [])
    units = list(free_units(cal, at("2037-03-01T00:00:00Z"), at("2037-03-10T00:00:00Z"), MIN15))
    assert starts_of(units) == [
        "2037-03-02T16:00:00+00:00",
        "2037-03-02T16:15:00+00:00",
        "2037-03-02T16:30:00+00:00",
        "2037-03-02T16:45:00+00:00",
        "2037-03-03T09:00:00+00:00",
        "2037-03-03T09:15:00+00:00",
    ]


def test_horizon_is_utc_and_a_date_end_includes_its_local_day() -> None:
    sched = schedule(
        template_ext("America/New_York", hours(WEEKDAYS, "09:00:00", "17:00:00")),
        planningHorizon={"start": "2037-03-02T09:00:00-05:00", "end": "2037-03-31"},
    )
    assert horizon(sched) == (at("2037-03-02T14:00:00Z"), at("2037-04-01T04:00:00Z"))


# ----------------------------------------------------------------------------- capacity, buffers


def _busy_at_nine(n: int) -> list[Busy]:
    return [Busy(at("2037-03-02T09:00:00Z"), at("2037-03-02T09:15:00Z")) for _ in range(n)]


def test_capacity_three_is_full_with_three_busy() -> None:
    cal = calendar("Location/room", busy=_busy_at_nine(3), capacity=3, end="09:30:00")
    units = list(free_units(cal, at("2037-03-02T00:00:00Z"), at("2037-03-03T00:00:00Z"), MIN15))
    assert starts_of(units) == ["2037-03-02T09:15:00+00:00"]


def test_capacity_three_stays_open_with_two_busy() -> None:
    cal = calendar("Location/room", busy=_busy_at_nine(2), capacity=3, end="09:30:00")
    units = list(free_units(cal, at("2037-03-02T00:00:00Z"), at("2037-03-03T00:00:00Z"), MIN15))
    assert starts_of(units) == ["2037-03-02T09:00:00+00:00", "2037-03-02T09:15:00+00:00"]


def test_busy_count_takes_that_much_capacity() -> None:
    busy = [
        Busy(at("2037-03-02T09:00:00Z"), at("2037-03-02T09:15:00Z"), count=2),
        *_busy_at_nine(1),
    ]
    cal = calendar("Location/room", busy=busy, capacity=3, end="09:30:00")
    units = list(free_units(cal, at("2037-03-02T00:00:00Z"), at("2037-03-03T00:00:00Z"), MIN15))
    assert starts_of(units) == ["2037-03-02T09:15:00+00:00"]


def test_overlapping_busy_that_never_coincide_leave_capacity() -> None:
    # 09:00-09:20 and 09:20-09:40 both touch the 09:15-09:30 unit but are never concurrent.
    busy = [
        Busy(at("2037-03-02T09:00:00Z"), at("2037-03-02T09:20:00Z")),
        Busy(at("2037-03-02T09:20:00Z"), at("2037-03-02T09:40:00Z")),
    ]
    cal = calendar("Location/room", busy=busy, capacity=2, end="10:00:00")
    units = list(free_units(cal, at("2037-03-02T00:00:00Z"), at("2037-03-03T00:00:00Z"), MIN15))
    assert len(units) == 4


def test_buffer_after_hides_the_unit_right_before_busy() -> None:
    busy = [Busy(at("2037-03-02T10:30:00Z"), at("2037-03-02T11:00:00Z"))]
    cal = calendar(
        "Location/room",
        busy=busy,
        slotMinutes=30,
        bufferAfterMinutes=10,
        start="09:00:00",
        end="12:00:00",
    )
    units = list(
        free_units(
            cal, at("2037-03-02T00:00:00Z"), at("2037-03-03T00:00:00Z"), timedelta(minutes=30)
        )
    )
    assert starts_of(units) == [
        "2037-03-02T09:00:00+00:00",
        "2037-03-02T09:30:00+00:00",
        "2037-03-02T11:00:00+00:00",
        "2037-03-02T11:30:00+00:00",
    ]


def test_buffer_before_hides_the_unit_right_after_busy() -> None:
    busy = [Busy(at("2037-03-02T10:30:00Z"), at("2037-03-02T11:00:00Z"))]
    cal = calendar(
        "Location/room",
        busy=busy,
        slotMinutes=30,
        bufferBeforeMinutes=5,
        start="10:00:00",
        end="12:00:00",
    )
    units = list(
        free_units(
            cal, at("2037-03-02T00:00:00Z"), at("2037-03-03T00:00:00Z"), timedelta(minutes=30)
        )
    )
    assert starts_of(units) == ["2037-03-02T10:00:00+00:00", "2037-03-02T11:30:00+00:00"]


def test_long_visit_needs_consecutive_units_inside_hours() -> None:
    cal = calendar("Practitioner/p", start="09:00:00", end="10:00:00")
    units = list(
        free_units(
            cal, at("2037-03-02T00:00:00Z"), at("2037-03-03T00:00:00Z"), timedelta(minutes=45)
        )
    )
    assert [(s.isoformat(), e.isoformat()) for s, e, _ in units] == [
        ("2037-03-02T09:00:00+00:00", "2037-03-02T09:45:00+00:00"),
        ("2037-03-02T09:15:00+00:00", "2037-03-02T10:00:00+00:00"),
    ]


def test_long_visit_is_not_offered_across_an_exception() -> None:
    block = {"start": "2037-03-02T09:30:00Z", "end": "2037-03-02T09:45:00Z"}
    cal = calendar("Practitioner/p", start="09:00:00", end="10:30:00", notAvailable=[block])
    units = list(
        free_units(
            cal, at("2037-03-02T00:00:00Z"), at("2037-03-03T00:00:00Z"), timedelta(minutes=45)
        )
    )
    assert starts_of(units) == ["2037-03-02T09:45:00+00:00"]


def test_explicit_free_slot_is_offered_with_its_id() -> None:
    cal = ResourceCalendar(
        "Device/us1",
        "s",
        [],
        (None, None),
        [],
        [(at("2037-03-02T12:00:00Z"), at("2037-03-02T12:30:00Z"), 1, "slot-1")],
    )
    units = list(
        free_units(
            cal, at("2037-03-02T00:00:00Z"), at("2037-03-03T00:00:00Z"), timedelta(minutes=20)
        )
    )
    assert units == [(at("2037-03-02T12:00:00Z"), at("2037-03-02T12:20:00Z"), "slot-1")]


def test_explicit_free_slot_that_is_taken_is_not_offered() -> None:
    cal = ResourceCalendar(
        "Device/us1",
        "s",
        [],
        (None, None),
        [Busy(at("2037-03-02T12:00:00Z"), at("2037-03-02T12:30:00Z"))],
        [(at("2037-03-02T12:00:00Z"), at("2037-03-02T12:30:00Z"), 1, "slot-1")],
    )
    assert (
        list(free_units(cal, at("2037-03-02T00:00:00Z"), at("2037-03-03T00:00:00Z"), MIN15)) == []
    )


def test_unsorted_busy_is_rejected() -> None:
    cal = calendar("Practitioner/p")
    cal.busy = [
        Busy(at("2037-03-02T11:00:00Z"), at("2037-03-02T11:15:00Z")),
        Busy(at("2037-03-02T09:00:00Z"), at("2037-03-02T09:15:00Z")),
    ]
    with pytest.raises(ValueError, match="sorted"):
        list(free_units(cal, at("2037-03-02T00:00:00Z"), at("2037-03-03T00:00:00Z"), MIN15))


# ----------------------------------------------------------------------------- several resources

MON = ("2037-03-02T00:00:00Z", "2037-03-03T00:00:00Z")


def _clinic() -> list[list[ResourceCalendar]]:
    doctor = calendar("Practitioner/doc", start="09:00:00", end="12:00:00")
    room = calendar(
        "Location/room", busy=[Busy(at("2037-03-02T09:00:00Z"), at("2037-03-02T10:00:00Z"))]
    )
    device = calendar(
        "Device/us", busy=[Busy(at("2037-03-02T10:30:00Z"), at("2037-03-02T11:00:00Z"))]
    )
    return [[doctor], [room], [device]]


def test_option_needs_practitioner_room_and_device_free_together() -> None:
    options = find_options(_clinic(), at(MON[0]), at(MON[1]), MIN15, count=50)
    assert [o.start.strftime("%H:%M") for o in options] == [
        "10:00",
        "10:15",
        "11:00",
        "11:15",
        "11:30",
        "11:45",
    ]
    assert options[0] == Option(
        at("2037-03-02T10:00:00Z"),
        at("2037-03-02T10:15:00Z"),
        ("Practitioner/doc", "Location/room", "Device/us"),
        (None, None, None),
    )


def test_preference_order_breaks_ties_at_the_same_start() -> None:
    doctors = [calendar("Practitioner/b"), calendar("Practitioner/a")]
    rooms = [
        calendar(
            "Location/r1", busy=[Busy(at("2037-03-02T09:00:00Z"), at("2037-03-02T09:15:00Z"))]
        ),
        calendar("Location/r2"),
    ]
    options = find_options([doctors, rooms], at(MON[0]), at(MON[1]), MIN15, count=3)
    assert [(o.start.strftime("%H:%M"), o.resources) for o in options] == [
        ("09:00", ("Practitioner/b", "Location/r2")),
        ("09:00", ("Practitioner/a", "Location/r2")),
        ("09:15", ("Practitioner/b", "Location/r1")),
    ]


def test_patient_own_bookings_are_avoided() -> None:
    doctor = calendar("Practitioner/doc", start="09:00:00", end="10:00:00")
    own = [(at("2037-03-02T09:10:00Z"), at("2037-03-02T09:40:00Z"))]
    options = find_options([[doctor]], at(MON[0]), at(MON[1]), MIN15, count=10, avoid=own)
    assert [o.start.strftime("%H:%M") for o in options] == ["09:45"]


def test_count_is_honoured() -> None:
    options = find_options(_clinic(), at(MON[0]), at(MON[1]), MIN15, count=2)
    assert [o.start.strftime("%H:%M") for o in options] == ["10:00", "10:15"]


def test_results_are_identical_across_runs() -> None:
    def run() -> list[Option]:
        doctors = [calendar(f"Practitioner/p{i}", busy=_busy_at_nine(i % 2)) for i in range(5)]
        rooms = [calendar(f"Location/r{i}", busy=_busy_at_nine(1 - i % 2)) for i in range(3)]
        return find_options(
            [doctors, rooms],
            at(MON[0]),
            at("2037-03-09T00:00:00Z"),
            timedelta(minutes=30),
            count=40,
        )

    first = run()
    assert len(first) == 40
    assert all(run() == first for _ in range(3))


def test_find_options_ignores_the_offset_its_inputs_are_written_in() -> None:
    utc = find_options(_clinic(), at(MON[0]), at(MON[1]), MIN15, count=50)
    shifted = find_options(
        _clinic(), at("2037-03-02T05:30:00+05:30"), at("2037-03-02T19:00:00-05:00"), MIN15, count=50
    )
    assert shifted == utc


def test_prefer_puts_accepted_options_first() -> None:
    doctor = calendar("Practitioner/doc", start="09:00:00", end="12:00:00")
    options = find_options(
        [[doctor]], at(MON[0]), at(MON[1]), MIN15, count=4, prefer=lambda s: s.hour >= 11
    )
    assert [o.start.strftime("%H:%M") for o in options] == ["11:00", "11:15", "11:30", "11:45"]


def test_prefer_fills_up_with_the_earliest_other_options() -> None:
    doctor = calendar("Practitioner/doc", start="09:00:00", end="12:00:00")
    options = find_options(
        [[doctor]],
        at(MON[0]),
        at(MON[1]),
        MIN15,
        count=6,
        prefer=lambda s: s.hour >= 11 and s.minute >= 30,
    )
    assert [o.start.strftime("%H:%M") for o in options] == [
        "11:30",
        "11:45",
        "09:00",
        "09:15",
        "09:30",
        "09:45",
    ]


def test_one_resource_is_not_used_for_two_needs() -> None:
    shared = calendar("Device/both")
    other = calendar("Device/other", start="10:00:00")
    options = find_options([[shared], [shared, other]], at(MON[0]), at(MON[1]), MIN15, count=1)
    assert [(o.start.strftime("%H:%M"), o.resources) for o in options] == [
        ("10:00", ("Device/both", "Device/other"))
    ]


def test_nothing_is_offered_when_a_need_has_no_candidate() -> None:
    assert (
        find_options([[calendar("Practitioner/p")], []], at(MON[0]), at(MON[1]), MIN15, count=5)
        == []
    )


# ----------------------------------------------------------------------------- reference check


def _oracle_peak(busy: list[Busy], start: datetime, end: datetime) -> int:
    points = [start] + [b.start for b in busy if start <= b.start < end]
    return max(sum(b.count for b in busy if b.start <= p < b.end) for p in points)


def _oracle_free(
    cal: ResourceCalendar, start: datetime, end: datetime, duration: timedelta
) -> list[tuple[datetime, datetime, str | None]]:
    """free_units by brute force: every candidate checked against every busy entry."""
    lo, hi = start, end
    if cal.horizon[0] is not None:
        lo = max(lo, cal.horizon[0])
    if cal.horizon[1] is not None:
        hi = min(hi, cal.horizon[1])
    candidates: list[tuple[datetime, int, int, timedelta, timedelta, str | None]] = []
    for s, e, capacity, slot_id in sorted(cal.free_slots, key=lambda x: (x[0], x[2], x[3])):
        if s >= lo and s + duration <= min(e, hi):
            candidates.append((s, 0, capacity, timedelta(0), timedelta(0), slot_id))
    for index, t in enumerate(cal.templates):
        units = list(iter_units(t, lo, hi)) if lo < hi else []
        for u, _ in units:
            covered = u
            for us, ue in units:
                if us <= covered < ue:
                    covered = ue
            if covered >= u + duration:
                candidates.append((u, 1 + index, t.capacity, t.buffer_before, t.buffer_after, None))
    out: list[tuple[datetime, datetime, str | None]] = []
    for s, _, capacity, before, after, slot_id in sorted(candidates, key=lambda c: (c[0], c[1])):
        if out and out[-1][0] == s:
            continue
        if _oracle_peak(cal.busy, s - before, s + duration + after) < capacity:
            out.append((s, s + duration, slot_id))
    return out


def _oracle_options(
    needs: list[list[ResourceCalendar]],
    start: datetime,
    end: datetime,
    duration: timedelta,
    count: int,
    avoid: list[tuple[datetime, datetime]],
    prefer: Any,
) -> list[Option]:
    free = {
        id(c): {s: sid for s, _, sid in _oracle_free(c, start, end, duration)}
        for n in needs
        for c in n
    }
    options: list[Option] = []
    for t in sorted({s for times in free.values() for s in times}):
        if any(a < t + duration and t < b for a, b in avoid):
            continue
        for first in needs[0]:
            if t not in free[id(first)]:
                continue
            chosen = [first]
            for need in needs[1:]:
                pick = next(
                    (c for c in need if t in free[id(c)] and c.key not in {x.key for x in chosen}),
                    None,
                )
                if pick is None:
                    break
                chosen.append(pick)
            else:
                options.append(
                    Option(
                        t,
                        t + duration,
                        tuple(c.key for c in chosen),
                        tuple(free[id(c)][t] for c in chosen),
                    )
                )
    if prefer is not None:
        options = [o for o in options if prefer(o.start)] + [
            o for o in options if not prefer(o.start)
        ]
    return options[:count]


def _random_calendar(rng: random.Random, key: str, base: datetime) -> ResourceCalendar:
    tz = rng.choice(["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata"])
    exts = []
    for _ in range(rng.choice([1, 1, 2])):
        slot = rng.choice([10, 15, 30])
        days = tuple(rng.sample(ALL_DAYS, rng.randint(2, 7)))
        open_h = rng.randint(0, 10)
        elements: dict[str, Any] = {
            "slotMinutes": slot,
            "alignmentMinutes": rng.choice([slot, 5, 15]),
            "bufferBeforeMinutes": rng.choice([0, 0, 5, 10]),
            "bufferAfterMinutes": rng.choice([0, 0, 5, 15]),
            "capacity": rng.choice([1, 1, 2, 3]),
        }
        if rng.random() < 0.5:
            s = base + timedelta(minutes=5 * rng.randint(0, 2000))
            elements["notAvailable"] = [
                {
                    "start": s.isoformat(),
                    "end": (s + timedelta(minutes=5 * rng.randint(1, 100))).isoformat(),
                }
            ]
        if rng.random() < 0.3:
            elements["validPeriod"] = {
                "start": (base + timedelta(days=rng.randint(0, 4))).isoformat()
            }
        exts.append(
            template_ext(
                tz,
                hours(days, f"{open_h:02d}:30:00", f"{open_h + rng.randint(2, 12):02d}:00:00"),
                **elements,
            )
        )
    busy = []
    for _ in range(rng.randint(0, rng.choice([60, 600]))):
        s = base + timedelta(minutes=5 * rng.randint(0, 2500))
        busy.append(Busy(s, s + timedelta(minutes=5 * rng.randint(1, 30)), rng.choice([1, 1, 2])))
    slots = []
    for n in range(rng.randint(0, 3)):
        s = base + timedelta(minutes=5 * rng.randint(0, 2500))
        slots.append(
            (
                s,
                s + timedelta(minutes=rng.choice([15, 30, 60])),
                rng.choice([1, 2]),
                f"{key}-slot{n}",
            )
        )
    sched = schedule(*exts)
    if rng.random() < 0.3:
        sched["planningHorizon"] = {"end": (base + timedelta(days=rng.randint(1, 8))).isoformat()}
    return ResourceCalendar(
        key, key, parse_templates(sched), horizon(sched), sorted(busy, key=lambda b: b.start), slots
    )


@pytest.mark.parametrize("seed", range(40))
def test_free_units_match_a_brute_force_reference(seed: int) -> None:
    rng = random.Random(seed)
    base = at("2037-03-05T00:00:00Z")
    cal = _random_calendar(rng, "Practitioner/p", base)
    duration = timedelta(minutes=rng.choice([10, 15, 20, 30, 45, 60]))
    end = base + timedelta(days=9)
    assert list(free_units(cal, base, end, duration)) == _oracle_free(cal, base, end, duration)


@pytest.mark.parametrize("seed", range(40))
def test_find_options_match_a_brute_force_reference(seed: int) -> None:
    rng = random.Random(1000 + seed)
    base = at("2037-03-05T00:00:00Z")
    needs = [
        [_random_calendar(rng, f"Kind{k}/c{i}", base) for i in range(rng.randint(1, 3))]
        for k in range(rng.randint(1, 3))
    ]
    duration = timedelta(minutes=rng.choice([10, 15, 30, 45]))
    end = base + timedelta(days=9)
    avoid = []
    for _ in range(rng.randint(0, 4)):
        s = base + timedelta(minutes=5 * rng.randint(0, 2500))
        avoid.append((s, s + timedelta(minutes=5 * rng.randint(1, 40))))
    prefer = rng.choice([None, lambda t: t.hour % 2 == 0])
    count = rng.randint(1, 40)
    got = find_options(needs, base, end, duration, count, avoid, prefer)
    assert got == _oracle_options(needs, base, end, duration, count, avoid, prefer)


# ----------------------------------------------------------------------------- laziness


class _CountingUnits:
    """Counts units a template cursor hands out, passing skips through untouched."""

    def __init__(self, inner: Iterator[tuple[datetime, datetime]], counter: list[int]) -> None:
        self._inner = inner
        self._counter = counter

    def __iter__(self) -> _CountingUnits:
        return self

    def __next__(self) -> tuple[datetime, datetime]:
        unit = next(self._inner)
        self._counter[0] += 1
        return unit

    def skip_to(self, when: datetime) -> None:
        self._inner.skip_to(when)  # type: ignore[attr-defined]


class _UnitCounter:
    """Counts units the engine pulls from templates: a wall-clock-free measure of work done."""

    def __init__(self) -> None:
        self.count = [0]

    @property
    def pulled(self) -> int:
        return self.count[0]

    def __call__(self, t: Template, start: datetime, end: datetime) -> _CountingUnits:
        return _CountingUnits(iter_units(t, start, end), self.count)


def _busy_clinic() -> list[list[ResourceCalendar]]:
    doctors = [
        calendar(
            f"Practitioner/p{i}",
            days=WEEKDAYS,
            busy=[Busy(at("2037-03-02T09:00:00Z"), at("2037-03-02T12:00:00Z"))],
        )
        for i in range(25)
    ]
    room = calendar("Location/room", days=WEEKDAYS, capacity=2)
    device = calendar(
        "Device/us",
        days=WEEKDAYS,
        busy=[Busy(at("2037-03-02T12:00:00Z"), at("2037-03-02T14:00:00Z"))],
    )
    return [doctors, [room], [device]]


def _units_pulled(
    monkeypatch: pytest.MonkeyPatch, days: int, **kwargs: Any
) -> tuple[int, list[Option]]:
    counter = _UnitCounter()
    monkeypatch.setattr(availability, "iter_units", counter)
    start = at("2037-03-02T00:00:00Z")
    options = find_options(
        _busy_clinic(),
        start,
        start + timedelta(days=days),
        timedelta(minutes=30),
        count=10,
        **kwargs,
    )
    return counter.pulled, options


def test_a_year_window_costs_no_more_units_than_a_month(monkeypatch: pytest.MonkeyPatch) -> None:
    month, month_options = _units_pulled(monkeypatch, 31)
    year, year_options = _units_pulled(monkeypatch, 365)
    assert year_options == month_options
    assert len(year_options) == 10
    assert year == month
    assert year < 27 * 32  # under a day's worth of units per calendar; a year is 27 * 32 * 261


def test_preferred_options_found_early_keep_a_year_window_cheap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    afternoons: dict[str, Any] = {"prefer": lambda s: s.hour >= 15}
    month, month_options = _units_pulled(monkeypatch, 31, **afternoons)
    year, year_options = _units_pulled(monkeypatch, 365, **afternoons)
    assert year_options == month_options
    assert all(o.start.hour >= 15 for o in year_options)
    assert year == month
    assert year < 27 * 40


# ----------------------------------------------------------------------------- parse errors


def test_missing_timezone_names_the_template() -> None:
    ext = template_ext("UTC", hours(WEEKDAYS, "09:00:00", "17:00:00"))
    ext["extension"] = ext["extension"][1:]
    with pytest.raises(TemplateError, match="timezone") as err:
        parse_templates(schedule({"url": "http://example.org/other"}, ext))
    assert err.value.path == "Schedule.extension[1]"


def test_bad_time_names_the_value_path() -> None:
    with pytest.raises(TemplateError) as err:
        parse_templates(schedule(template_ext("UTC", hours(("mon",), "25:00:00", "17:00:00"))))
    assert err.value.path == "Schedule.extension[0].extension[1].extension[1].valueTime"
    assert str(err.value).startswith("Schedule.extension[0].extension[1].extension[1].valueTime: ")


def test_unknown_day_names_the_value_path() -> None:
    with pytest.raises(TemplateError) as err:
        parse_templates(
            schedule(template_ext("UTC", hours(("mon", "funday"), "09:00:00", "17:00:00")))
        )
    assert err.value.path == "Schedule.extension[0].extension[1].extension[1].valueCode"


def test_unknown_time_zone_names_the_value_path() -> None:
    with pytest.raises(TemplateError) as err:
        parse_templates(schedule(template_ext("Mars/Olympus_Mons")))
    assert err.value.path == "Schedule.extension[0].extension[0].valueCode"


def test_misspelt_element_is_rejected_rather_than_defaulted() -> None:
    ext = template_ext("UTC")
    ext["extension"].append({"url": "slotMinute", "valuePositiveInt": 30})
    with pytest.raises(TemplateError) as err:
        parse_templates(schedule(ext))
    assert err.value.path == "Schedule.extension[0].extension[1].url"


def test_datetime_without_offset_is_rejected() -> None:
    with pytest.raises(TemplateError) as err:
        horizon(schedule(planningHorizon={"start": "2037-03-02T09:00:00"}))
    assert err.value.path == "Schedule.planningHorizon.start"


def test_defaults_follow_the_extension_definition() -> None:
    t = one_template("UTC", hours(("mon",), "09:00:00", "17:00:00"))
    assert (t.slot_minutes, t.alignment_minutes, t.capacity, t.buffer_before, t.buffer_after) == (
        15,
        15,
        1,
        timedelta(0),
        timedelta(0),
    )
    assert t.weekly == ((frozenset({0}), time(9), time(17)),)


# ----------------------------------------------------------------------------- visit types, kinds


def _service() -> dict[str, Any]:
    return {
        "resourceType": "HealthcareService",
        "extension": [
            {
                "url": VISIT_TYPE_URL,
                "extension": [
                    {
                        "url": "code",
                        "valueCoding": {"system": "http://example.org/vt", "code": "us-30"},
                    },
                    {"url": "minutesDuration", "valuePositiveInt": 30},
                    {
                        "url": "need",
                        "extension": [{"url": "actorType", "valueCode": "Practitioner"}],
                    },
                    {
                        "url": "need",
                        "extension": [
                            {"url": "actorType", "valueCode": "Device"},
                            {
                                "url": "kind",
                                "valueCodeableConcept": {
                                    "coding": [
                                        {
                                            "system": "https://fhir-sched.org/fhir/CodeSystem/resource-kind",
                                            "code": "ultrasound",
                                        }
                                    ]
                                },
                            },
                        ],
                    },
                ],
            }
        ],
    }


def test_parse_visit_types_reads_code_duration_and_needs() -> None:
    (vt,) = parse_visit_types(_service())
    kind = ("https://fhir-sched.org/fhir/CodeSystem/resource-kind", "ultrasound")
    assert (vt.system, vt.code, vt.duration) == (
        "http://example.org/vt",
        "us-30",
        timedelta(minutes=30),
    )
    assert vt.needs == (Need("Practitioner"), Need("Device", (), (kind,)))


def test_visit_type_matches_fhir_tokens() -> None:
    (vt,) = parse_visit_types(_service())
    matches = {
        token: vt.matches_token(token)
        for token in (
            "us-30",
            "http://example.org/vt|us-30",
            "|us-30",
            "http://example.org/vt|",
            "other|us-30",
        )
    }
    assert matches == {
        "us-30": True,
        "http://example.org/vt|us-30": True,
        "|us-30": False,
        "http://example.org/vt|": True,
        "other|us-30": False,
    }


def test_need_kind_matches_the_schedule_resource_kind() -> None:
    (vt,) = parse_visit_types(_service())
    device_need = vt.needs[1]
    system = "https://fhir-sched.org/fhir/CodeSystem/resource-kind"
    ultrasound = schedule(
        {
            "url": RESOURCE_KIND_URL,
            "valueCodeableConcept": {"coding": [{"system": system, "code": "ultrasound"}]},
        }
    )
    xray = schedule(
        {
            "url": RESOURCE_KIND_URL,
            "valueCodeableConcept": {"coding": [{"system": system, "code": "x-ray"}]},
        }
    )
    assert device_need.accepts("Device", kind=parse_resource_kind(ultrasound))
    assert not device_need.accepts("Device", kind=parse_resource_kind(xray))
    assert not device_need.accepts("Location", kind=parse_resource_kind(ultrasound))


def test_visit_type_without_duration_is_rejected() -> None:
    service = _service()
    del service["extension"][0]["extension"][1]
    with pytest.raises(VisitTypeError) as err:
        parse_visit_types(service)
    assert err.value.path == "HealthcareService.extension[0]"


# ----------------------------------------------------------------------------- conformance


def _structure_definition(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (CONFORMANCE / f"StructureDefinition-{name}.json").read_text()
    )
    return data


@pytest.mark.parametrize("name", ["availability-template", "resource-kind", "visit-type"])
def test_structure_definition_is_valid_r4(name: str) -> None:
    from tests.support.fhir_assets import assert_valid

    sd = _structure_definition(name)
    assert_valid(sd)
    ids = [e["id"] for e in sd["differential"]["element"]]
    assert len(ids) == len(set(ids))
    assert sd["url"] == f"https://fhir-sched.org/fhir/StructureDefinition/{name}"
    assert (sd["kind"], sd["type"], sd["derivation"], sd["fhirVersion"]) == (
        "complex-type",
        "Extension",
        "constraint",
        "4.0.1",
    )


def test_structure_definitions_declare_what_the_parsers_read() -> None:
    def slices(name: str) -> set[str]:
        return {
            e["id"].split("Extension.", 1)[1]
            for e in _structure_definition(name)["differential"]["element"]
            if "sliceName" in e
        }

    assert slices("availability-template") == {
        "extension:timezone",
        "extension:availableTime",
        "extension:availableTime.extension:daysOfWeek",
        "extension:availableTime.extension:allDay",
        "extension:availableTime.extension:availableStartTime",
        "extension:availableTime.extension:availableEndTime",
        "extension:slotMinutes",
        "extension:alignmentMinutes",
        "extension:bufferBeforeMinutes",
        "extension:bufferAfterMinutes",
        "extension:capacity",
        "extension:notAvailable",
        "extension:notAvailable.extension:description",
        "extension:notAvailable.extension:during",
        "extension:validPeriod",
    }
    from fhir_sched.scheduling.booking_rules import SETTINGS
    from fhir_sched.scheduling.notices import SETTINGS as NOTICES

    assert slices("visit-type") == {
        "extension:code",
        "extension:minutesDuration",
        "extension:maxMinutesDuration",
        *(f"extension:{setting}" for setting in SETTINGS | NOTICES),
        "extension:need",
        "extension:need.extension:actorType",
        "extension:need.extension:specialty",
        "extension:need.extension:kind",
    }
    assert _structure_definition("resource-kind")["context"] == [
        {"type": "element", "expression": "Schedule"}
    ]
