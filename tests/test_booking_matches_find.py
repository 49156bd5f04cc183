"""What ``$find`` offers and what a booking may take are the same set, for random clinics.

Each seeded clinic gets a random calendar (zone, working days, opening hours with a break, slot
length, grid, an afternoon off). Then:

- every option ``$find`` offers can be held and then booked;
- a booking of any other time, through any door, is refused: random starts on the 5-minute
  grid (and each offered start nudged by 5 minutes) are tried by plain POST; one is accepted
  only if ``$find`` offered it, and is deleted again so the calendar stays as it was found.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import httpx
import pytest

from tests.support.scheduling import (
    book_id,
    bundle_resource,
    find,
    hold,
    hours,
    put_all,
    schedule,
    template,
    uid,
    utc,
)

ZONES = ("America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Sydney", "UTC")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WINDOW_START = datetime.fromisoformat("2037-06-01T00:00:00+00:00")  # a Monday
WINDOW = timedelta(days=2)
TRIES = 40


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


async def random_clinic(fhir: httpx.AsyncClient, rng: random.Random) -> tuple[str, int]:
    """A practitioner with a random calendar; returns (reference, slot minutes)."""
    pid = f"rnd-{uid()}"
    slot = rng.choice((20, 30, 45, 60))
    days = sorted(rng.sample(DAYS, rng.randint(3, 7)), key=DAYS.index)
    opens = rng.randrange(6 * 60, 10 * 60, 15)
    lunch = rng.randrange(11 * 60, 13 * 60, 15)
    closes = rng.randrange(15 * 60, 19 * 60, 15)
    t = template(rng.choice(ZONES), hours(days, _clock(opens), _clock(lunch)),
                 hours(days, _clock(lunch + rng.choice((30, 45, 60))), _clock(closes)),
                 slot=slot, alignment=rng.choice((None, 15, slot)))
    off = (WINDOW_START + timedelta(days=1, hours=rng.randrange(10, 16))).isoformat()
    off_end = (WINDOW_START + timedelta(days=1, hours=18)).isoformat()
    t["extension"].append({"url": "notAvailable", "extension": [
        {"url": "during", "valuePeriod": {"start": off, "end": off_end}}]})
    await put_all(fhir, {"resourceType": "Practitioner", "id": pid},
                  schedule(f"s-{pid}", f"Practitioner/{pid}", t))
    return f"Practitioner/{pid}", slot


async def offered(fhir: httpx.AsyncClient, dr: str) -> list[dict[str, object]]:
    options = await find(fhir, start=WINDOW_START.isoformat(),
                         end=(WINDOW_START + WINDOW).isoformat(), practitioner=dr, _count=100)
    assert len(options) < 100, "the window must hold fewer options than one page"
    return options


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_offered_option_can_be_held_and_booked(fhir: httpx.AsyncClient,
                                                           seed: int) -> None:
    rng = random.Random(seed)
    dr, _slot = await random_clinic(fhir, rng)
    options = await offered(fhir, dr)
    assert options
    rng.shuffle(options)
    chosen: list[dict[str, object]] = []
    for option in options:  # options may overlap (a 15-minute grid of 45-minute visits)
        if len(chosen) < 6 and all(utc(str(option["end"])) <= utc(str(c["start"]))
                                   or utc(str(option["start"])) >= utc(str(c["end"]))
                                   for c in chosen):
            chosen.append(option)
    for option in chosen:
        held = await hold(fhir, option)
        assert held.status_code == 200, (option["start"], held.text)
        booked = await book_id(fhir, bundle_resource(held)["id"])
        assert booked.status_code == 200, (option["start"], booked.text)
        assert bundle_resource(booked)["status"] == "booked"


@pytest.mark.parametrize("seed", [4, 5, 6])
async def test_no_booking_outside_what_find_offers_is_accepted(fhir: httpx.AsyncClient,
                                                               seed: int) -> None:
    rng = random.Random(seed)
    dr, slot = await random_clinic(fhir, rng)
    options = await offered(fhir, dr)
    offered_starts = {utc(str(o["start"])) for o in options}
    # starts whose visit ends inside the window, where $find looked
    grid_points = int((WINDOW - timedelta(minutes=slot)).total_seconds() // 300)
    candidates = [WINDOW_START + timedelta(minutes=5 * rng.randrange(grid_points))
                  for _ in range(TRIES)]
    some = rng.sample(sorted(offered_starts), min(5, len(offered_starts)))
    candidates += some + [s + timedelta(minutes=5) for s in some]
    accepted = 0
    for start in candidates:
        r = await fhir.post("/Appointment", json={
            "resourceType": "Appointment", "status": "booked", "start": start.isoformat(),
            "end": (start + timedelta(minutes=slot)).isoformat(),
            "participant": [{"actor": {"reference": dr}, "status": "accepted"}]})
        if r.status_code == 201:
            assert start in offered_starts, f"{start} was booked but never offered"
            accepted += 1
            assert (await fhir.delete(f"/Appointment/{r.json()['id']}")).status_code in (200, 204)
        else:
            assert r.status_code == 409, r.text
            assert start not in offered_starts, f"{start} was offered but refused: {r.text}"
    assert accepted >= len(some)
