"""Holds: they expire on time, say when in ``Expires``, and stop blocking the moment they do.

Two servers with two-second holds are started for this module: one whose sweeper effectively
never runs, to show that expiry alone frees the time (correctness must not wait for a sweeper),
and one sweeping every second, to show the tidying the sweeper owes (cancelled hold, free Slot).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from tests.support.scheduling import (
    HOLD_EXPIRES_URL,
    Calendar,
    Json,
    book_id,
    book_option,
    bundle_resource,
    find,
    hold,
    outcome,
    patient,
    practitioner_calendar,
    put_all,
    schedule,
    set_status,
    starts,
    uid,
)
from tests.support.server import ServerProcess, clients, servers, store_url

HOLD_SECONDS = 2
WINDOW = {"start": "2037-12-01T00:00:00Z", "end": "2037-12-08T00:00:00Z"}


@pytest.fixture(scope="module")
def short_holds(store_kind: str, mongo_uri: str | None) -> Iterator[list[ServerProcess]]:
    """[no sweeping to speak of, sweeping every second], both with two-second holds."""
    env = {"FHIR_SCHED_HOLD_SECONDS": str(HOLD_SECONDS)}
    lazy_url = store_url(store_kind, mongo_uri, "holds_lazy")
    busy_url = store_url(store_kind, mongo_uri, "holds_swept")
    with servers(lazy_url, 1, {**env, "FHIR_SCHED_SWEEP_SECONDS": "3600"}) as lazy, \
            servers(busy_url, 1, {**env, "FHIR_SCHED_SWEEP_SECONDS": "1"}) as swept:
        yield [lazy[0], swept[0]]


@pytest.fixture
async def unswept(short_holds: list[ServerProcess], fhir_schema: Any
                  ) -> AsyncIterator[httpx.AsyncClient]:
    async with clients(short_holds[:1], fhir_schema) as cs:
        yield cs[0]


@pytest.fixture
async def swept(short_holds: list[ServerProcess], fhir_schema: Any
                ) -> AsyncIterator[httpx.AsyncClient]:
    async with clients(short_holds[1:], fhir_schema) as cs:
        yield cs[0]


async def first_option(client: httpx.AsyncClient, cal: Calendar) -> Json:
    options = await find(client, **WINDOW, specialty=cal.specialty, _count=1)
    assert options
    return options[0]


async def wait_past(expires: str) -> None:
    """Sleep until the hold's expiry instant has passed (plus a little clock slack)."""
    when = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    delay = (when - datetime.now(UTC)).total_seconds() + 0.3
    await asyncio.sleep(max(delay, 0))


def expiry_of(appointment: Json) -> str:
    [ext] = [e for e in appointment["extension"] if e["url"] == HOLD_EXPIRES_URL]
    return ext["valueInstant"]


async def test_unexpired_hold_blocks_find_and_another_booking(
    unswept: httpx.AsyncClient
) -> None:
    cal = await practitioner_calendar(unswept)
    option = await first_option(unswept, cal)
    assert (await hold(unswept, option)).status_code == 200
    assert (await first_option(unswept, cal))["start"] != option["start"]
    r = await book_option(unswept, option)
    assert r.status_code == 409
    assert outcome(r)["issue"][0]["code"] == "conflict"


async def test_expired_hold_no_longer_blocks_find(unswept: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(unswept)
    option = await first_option(unswept, cal)
    held = bundle_resource(await hold(unswept, option))
    assert option["start"] not in starts(await find(unswept, **WINDOW, specialty=cal.specialty))
    await wait_past(expiry_of(held))
    assert (await first_option(unswept, cal))["start"] == option["start"]
    # Nothing swept it: the hold is still stored as pending, and still the time is free.
    stored = (await unswept.get(f"/Appointment/{held['id']}")).json()
    assert stored["status"] == "pending"


async def test_expired_hold_time_goes_to_another_client_and_the_hold_cannot_be_booked(
    unswept: httpx.AsyncClient
) -> None:
    cal = await practitioner_calendar(unswept)
    option = await first_option(unswept, cal)
    held = bundle_resource(await hold(unswept, option))
    await wait_past(expiry_of(held))
    other = bundle_resource(await book_option(unswept, option))
    assert other["status"] == "booked"
    late = await book_id(unswept, held["id"])
    assert late.status_code == 409
    assert outcome(late)["issue"][0]["code"] == "conflict"
    assert (await unswept.get(f"/Appointment/{other['id']}")).json()["status"] == "booked"


async def test_expires_header_equals_the_hold_expiry(unswept: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(unswept)
    option = await first_option(unswept, cal)
    before = datetime.now(UTC)
    r = await hold(unswept, option)
    held = bundle_resource(r)
    header = parsedate_to_datetime(r.headers["expires"])
    stored = datetime.fromisoformat(expiry_of(held).replace("Z", "+00:00"))
    assert header == stored.replace(microsecond=0)  # HTTP dates carry whole seconds
    assert abs(stored - (before + timedelta(seconds=HOLD_SECONDS))) <= timedelta(seconds=1)


async def test_hold_booked_before_expiry_is_booked_and_stops_expiring(
    unswept: httpx.AsyncClient
) -> None:
    cal = await practitioner_calendar(unswept)
    option = await first_option(unswept, cal)
    held = bundle_resource(await hold(unswept, option))
    booked = bundle_resource(await book_id(unswept, held["id"]))
    assert booked["status"] == "booked"
    assert all(e["url"] != HOLD_EXPIRES_URL for e in booked.get("extension", []))
    await wait_past(expiry_of(held))
    assert option["start"] not in starts(await find(unswept, **WINDOW, specialty=cal.specialty))


async def test_releasing_a_hold_frees_the_time_at_once(fhir: httpx.AsyncClient) -> None:
    """On the default server holds last ten minutes: only the release can free this time."""
    cal = await practitioner_calendar(fhir)
    option = await first_option(fhir, cal)
    held = bundle_resource(await hold(fhir, option))
    assert (await first_option(fhir, cal))["start"] != option["start"]
    released = await set_status(fhir, held["id"], "cancelled")
    assert released.status_code == 200, released.text
    assert (await first_option(fhir, cal))["start"] == option["start"]
    assert bundle_resource(await book_option(fhir, option))["status"] == "booked"


async def test_releasing_a_hold_by_put_frees_the_time_at_once(fhir: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(fhir)
    option = await first_option(fhir, cal)
    held = bundle_resource(await hold(fhir, option))
    body = {k: v for k, v in held.items() if k != "meta"} | {"status": "cancelled"}
    r = await fhir.put(f"/Appointment/{held['id']}", json=body)
    assert r.status_code == 200, r.text
    assert (await first_option(fhir, cal))["start"] == option["start"]


async def test_sweeper_cancels_an_expired_hold_and_frees_its_slot(
    swept: httpx.AsyncClient
) -> None:
    key = uid()
    who = await patient(swept)
    code = f"swept-{key}"
    await put_all(
        swept,
        {"resourceType": "Practitioner", "id": f"pr-{key}"},
        schedule(f"sc-{key}", f"Practitioner/pr-{key}",
                 specialty=("http://example.org/specialty", code)),
        {"resourceType": "Slot", "id": f"sl-{key}", "schedule": {"reference": f"Schedule/sc-{key}"},
         "status": "free", "start": "2037-12-01T10:00:00-05:00",
         "end": "2037-12-01T10:30:00-05:00"},
    )
    [option] = await find(swept, **WINDOW, specialty=f"http://example.org/specialty|{code}",
                          patient=who)
    assert option["slot"] == [{"reference": f"Slot/sl-{key}"}]
    held = bundle_resource(await hold(swept, option))
    assert (await swept.get(f"/Slot/sl-{key}")).json()["status"] == "busy-tentative"
    deadline = time.monotonic() + HOLD_SECONDS + 8
    while time.monotonic() < deadline:
        stored = (await swept.get(f"/Appointment/{held['id']}")).json()
        if stored["status"] != "pending":
            break
        await asyncio.sleep(0.25)
    assert stored["status"] == "cancelled"
    assert {p["status"] for p in stored["participant"]} == {"declined"}
    assert (await swept.get(f"/Slot/sl-{key}")).json()["status"] == "free"
    late = await book_id(swept, held["id"])
    assert late.status_code == 409
    assert outcome(late)["issue"][0]["code"] == "conflict"
    [again] = await find(swept, **WINDOW, specialty=f"http://example.org/specialty|{code}")
    assert again["slot"] == [{"reference": f"Slot/sl-{key}"}]
