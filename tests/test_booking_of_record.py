"""A calendar of record (the server's own jobs now, the EHR's SIU feed next) is told what
happened: a booking that breaks a rule is recorded, still takes its time, and carries a
booking-flag extension per rule it breaks, so staff can find it; fixing it clears the flags.

Driven through the composed services on a real store of each kind, as the door that will use
this (the HL7 v2 listener) does; there is no REST way to act as a calendar of record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from fhir_sched.compose import Core, build
from fhir_sched.context import RequestContext
from fhir_sched.errors import FhirError
from fhir_sched.settings import Settings
from tests.support import web
from tests.support.scheduling import hours, schedule, template, uid
from tests.support.server import cleanup_dir, servers, store_url

FLAG = "https://fhir-sched.org/fhir/StructureDefinition/booking-flag"
FEED = RequestContext.system("test-feed")
SATURDAY = ("2037-12-05T03:00:00-05:00", "2037-12-05T03:30:00-05:00")
TUESDAY = ("2037-12-01T09:00:00-05:00", "2037-12-01T09:30:00-05:00")


@pytest.fixture
async def core(store_kind: str, mongo_uri: str | None) -> AsyncIterator[Core]:
    url = store_url(store_kind, mongo_uri, "of_record")
    c = build(Settings(store=url))
    await c.start()
    try:
        yield c
    finally:
        await c.close()
        if url.startswith("sqlite"):
            cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


async def practitioner(core: Core) -> str:
    pid = f"dr-{uid()}"
    res = core.services.resources
    await res.update(FEED, "Practitioner", pid, {"resourceType": "Practitioner", "id": pid})
    await res.update(FEED, "Schedule", f"s-{pid}", schedule(
        f"s-{pid}", f"Practitioner/{pid}",
        template("America/New_York", hours(("tue",), "09:00:00", "12:00:00"))))
    return f"Practitioner/{pid}"


def appointment(actor: str, at: tuple[str, str], id_: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Appointment", "status": "booked", "start": at[0], "end": at[1],
        "participant": [{"actor": {"reference": actor}, "status": "accepted"}]}
    if id_ is not None:
        body["id"] = id_
    return body


def flags(body: bytes | None) -> list[str]:
    assert body is not None
    resource = orjson.loads(body)
    return [next(s["valueCode"] for s in e["extension"] if s["url"] == "rule")
            for e in resource.get("extension", []) if e["url"] == FLAG]


async def test_booking_of_record_outside_hours_is_stored_and_flagged(core: Core) -> None:
    dr = await practitioner(core)
    saved = await core.services.resources.create(FEED, "Appointment", appointment(dr, SATURDAY))
    assert flags(saved.record.body) == ["outside-availability"]


async def test_booking_of_record_still_takes_its_time(core: Core) -> None:
    dr = await practitioner(core)
    await core.services.resources.create(FEED, "Appointment", appointment(dr, TUESDAY))
    with pytest.raises(FhirError) as refused:
        await core.services.resources.create(RequestContext(), "Appointment",
                                             appointment(dr, TUESDAY))
    assert refused.value.status == 409


async def test_double_booking_of_record_is_stored_with_a_capacity_flag(core: Core) -> None:
    dr = await practitioner(core)
    first = await core.services.resources.create(FEED, "Appointment", appointment(dr, TUESDAY))
    assert flags(first.record.body) == []
    second = await core.services.resources.create(FEED, "Appointment", appointment(dr, TUESDAY))
    assert flags(second.record.body) == ["capacity"]


async def test_fixing_a_flagged_booking_clears_its_flags(core: Core) -> None:
    dr = await practitioner(core)
    res = core.services.resources
    saved = await res.create(FEED, "Appointment", appointment(dr, SATURDAY))
    aid = saved.record.id
    fixed = await res.update(FEED, "Appointment", aid, appointment(dr, TUESDAY, aid))
    assert flags(fixed.record.body) == []


async def test_the_same_booking_from_an_ordinary_caller_is_refused(core: Core) -> None:
    dr = await practitioner(core)
    with pytest.raises(FhirError) as refused:
        await core.services.resources.create(RequestContext(), "Appointment",
                                             appointment(dr, SATURDAY))
    assert refused.value.status == 409
    assert "not available" in str(refused.value)


async def test_staff_find_flagged_bookings_by_the_rule_they_break(
        store_kind: str, mongo_uri: str | None) -> None:
    url = store_url(store_kind, mongo_uri, "of_record_search")
    c = build(Settings(store=url))
    await c.start()
    try:
        dr = await practitioner(c)
        res = c.services.resources
        clean = await res.create(FEED, "Appointment", appointment(dr, TUESDAY))
        flagged = await res.create(FEED, "Appointment", appointment(dr, SATURDAY))
    finally:
        await c.close()
    with servers(url) as [server]:
        async with web.async_client(base_url=server.base) as fhir:
            by_rule = await fhir.get("/Appointment", params={
                "actor": dr, "booking-flag": "outside-availability"})
            any_flag = await fhir.get("/Appointment", params={
                "actor": dr, "booking-flag:missing": "false"})
    assert [e["resource"]["id"] for e in by_rule.json()["entry"]] == [flagged.record.id]
    assert [e["resource"]["id"] for e in any_flag.json()["entry"]] == [flagged.record.id]
    assert clean.record.id != flagged.record.id
