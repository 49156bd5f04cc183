"""$find pages like a FHIR search: an honest total, stateless links, a capped and checked _count,
and never a time that has already passed.

One practitioner works weekdays 09:00-12:00 New York time in 30-minute slots, so a window's
options are known exactly: six a weekday. Paging links are followed across a server restart and
across two server processes on one database, which only a stateless cursor survives.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.support.client import fhir_client
from tests.support.scheduling import (
    ALL_DAYS,
    Calendar,
    Json,
    find_response,
    names_parameter,
    parameters,
    practitioner_calendar,
    utc,
)
from tests.support.server import ServerProcess, cleanup_dir, store_url

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
# 2037-12-01 is a Tuesday: ten weekdays before the 15th, six options each.
TWO_WEEKS = {"start": "2037-12-01T00:00:00Z", "end": "2037-12-15T00:00:00Z"}
IN_TWO_WEEKS = 60
MONTH = {"start": "2037-12-01T00:00:00Z", "end": "2038-01-01T00:00:00Z"}  # 138 options


async def weekday_mornings(client: httpx.AsyncClient) -> Calendar:
    return await practitioner_calendar(client, days=WEEKDAYS, start="09:00:00", end="12:00:00")


def link(bundle: Json, relation: str) -> str | None:
    return next((lk["url"] for lk in bundle.get("link", []) if lk["relation"] == relation), None)


def matches(bundle: Json) -> list[Json]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def outcome_issues(bundle: Json) -> list[Json]:
    return [i for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"
            for i in e["resource"]["issue"]]


async def page(client: httpx.AsyncClient, url: str) -> Json:
    r = await client.get(url)
    assert r.status_code == 200, r.text
    return r.json()


async def first_page(client: httpx.AsyncClient, **params: Any) -> Json:
    r = await find_response(client, **params)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset"
    return bundle


def starts(bundle: Json) -> list[str]:
    return [o["start"] for o in matches(bundle)]


# --------------------------------------------------------------------------- total and links


async def test_total_is_the_window_count_when_one_page_holds_it(
    fhir: httpx.AsyncClient
) -> None:
    cal = await weekday_mornings(fhir)
    bundle = await first_page(fhir, **TWO_WEEKS, specialty=cal.specialty, _count=100)
    assert len(matches(bundle)) == IN_TWO_WEEKS
    assert bundle["total"] == IN_TWO_WEEKS
    assert link(bundle, "next") is None
    assert link(bundle, "self") is not None


async def test_next_and_previous_walk_every_option_once_in_order(
    fhir: httpx.AsyncClient
) -> None:
    cal = await weekday_mornings(fhir)
    everything = starts(await first_page(fhir, **TWO_WEEKS, specialty=cal.specialty,
                                         _count=100))
    first = await first_page(fhir, **TWO_WEEKS, specialty=cal.specialty, _count=25)
    assert "total" not in first  # 60 options, 25 shown: not counted, a next link instead
    assert link(first, "previous") is None
    second = await page(fhir, link(first, "next") or "")
    third = await page(fhir, link(second, "next") or "")
    assert [len(matches(p)) for p in (first, second, third)] == [25, 25, 10]
    assert third["total"] == IN_TWO_WEEKS  # the last page exhausts the window: exact
    assert link(third, "next") is None
    assert starts(first) + starts(second) + starts(third) == everything
    assert starts(await page(fhir, link(third, "previous") or "")) == starts(second)
    assert starts(await page(fhir, link(second, "previous") or "")) == starts(first)
    assert starts(await page(fhir, link(second, "self") or "")) == starts(second)


async def test_total_accurate_counts_the_whole_window(fhir: httpx.AsyncClient) -> None:
    cal = await weekday_mornings(fhir)
    bundle = await first_page(fhir, **TWO_WEEKS, specialty=cal.specialty, _count=5,
                              _total="accurate")
    assert len(matches(bundle)) == 5
    assert bundle["total"] == IN_TWO_WEEKS
    assert link(bundle, "next") is not None


async def test_total_none_leaves_the_total_out(fhir: httpx.AsyncClient) -> None:
    cal = await weekday_mornings(fhir)
    bundle = await first_page(fhir, **TWO_WEEKS, specialty=cal.specialty, _count=100,
                              _total="none")
    assert len(matches(bundle)) == IN_TWO_WEEKS
    assert "total" not in bundle


async def test_count_zero_returns_the_count_only(fhir: httpx.AsyncClient) -> None:
    cal = await weekday_mornings(fhir)
    bundle = await first_page(fhir, **TWO_WEEKS, specialty=cal.specialty, _count=0)
    assert bundle["total"] == IN_TWO_WEEKS
    assert "entry" not in bundle
    assert link(bundle, "next") is None


async def test_count_zero_past_the_counting_limit_warns_instead_of_a_total(
    fhir: httpx.AsyncClient
) -> None:
    """Round the clock in 15-minute slots for a year: far more than 1000 options."""
    cal = await practitioner_calendar(fhir, days=ALL_DAYS, start="00:00:00", end="00:00:00",
                                      slot=15)
    bundle = await first_page(fhir, start="2037-12-01T00:00:00Z", end="2037-12-31T00:00:00Z",
                              specialty=cal.specialty, _count=0)
    assert "total" not in bundle
    issues = outcome_issues(bundle)
    assert issues and issues[0]["severity"] == "warning"
    assert "1000" in issues[0]["diagnostics"]


async def test_count_over_the_maximum_is_capped_with_a_warning_entry(
    fhir: httpx.AsyncClient
) -> None:
    cal = await weekday_mornings(fhir)
    bundle = await first_page(fhir, **MONTH, specialty=cal.specialty, _count=500)
    assert len(matches(bundle)) == 100
    issues = outcome_issues(bundle)
    assert len(issues) == 1
    assert issues[0]["severity"] == "warning" and issues[0]["expression"] == ["_count"]
    nxt = await page(fhir, link(bundle, "next") or "")
    assert len(matches(nxt)) == 38  # the next page goes on from the capped page
    assert nxt["total"] == 138


@pytest.mark.parametrize("how", ["get", "form", "parameters", "post-query"])
async def test_negative_count_is_a_400_naming_it(fhir: httpx.AsyncClient, how: str) -> None:
    window = [("start", TWO_WEEKS["start"]), ("end", TWO_WEEKS["end"])]
    if how == "get":
        r = await fhir.get("/Appointment/$find", params=[*window, ("_count", "-5")])
    elif how == "form":
        r = await fhir.post("/Appointment/$find", data=dict([*window, ("_count", "-5")]))
    elif how == "parameters":
        body = parameters(*window)
        body["parameter"].append({"name": "_count", "valueInteger": -5})
        r = await fhir.post("/Appointment/$find", json=body)
    else:
        r = await fhir.post("/Appointment/$find?_count=-5", json=parameters(*window))
    assert r.status_code == 400, r.text
    assert names_parameter(r, "_count")


# --------------------------------------------------------------------------- cursors


def cursor(fields: dict[str, Any]) -> str:
    """A cursor written by hand in the documented form: 'j' + base64url(JSON), unpadded."""
    return "j" + base64.urlsafe_b64encode(orjson.dumps(fields)).decode().rstrip("=")


@pytest.mark.parametrize("token", ["garbage!", "zAAAA", "j" + "e30",  # {} lacks start/end
                                   cursor({"start": "2037-12-01T00:00:00Z",
                                           "end": "2037-12-02T00:00:00Z", "bogus": 1}),
                                   cursor({"start": "yesterday", "end": "2037-12-02T00:00:00Z"}),
                                   cursor({"start": "2037-12-01T00:00:00Z",
                                           "end": "2037-12-02T00:00:00Z", "offset": "ten"})])
async def test_a_malformed_cursor_is_a_400_naming_it(fhir: httpx.AsyncClient,
                                                     token: str) -> None:
    r = await fhir.get("/Appointment/$find", params={"_cursor": token})
    assert r.status_code == 400, r.text
    assert names_parameter(r, "_cursor")


async def test_a_forged_cursor_is_checked_like_any_request(fhir: httpx.AsyncClient) -> None:
    too_long = cursor({"start": "2037-12-01T00:00:00Z", "end": "2038-12-03T00:00:00Z"})
    r = await fhir.get("/Appointment/$find", params={"_cursor": too_long})
    assert r.status_code == 400 and names_parameter(r, "end")
    negative = cursor({"start": "2037-12-01T00:00:00Z", "end": "2037-12-03T00:00:00Z",
                       "count": -1})
    r = await fhir.get("/Appointment/$find", params={"_cursor": negative})
    assert r.status_code == 400 and names_parameter(r, "_count")
    cal = await weekday_mornings(fhir)
    mine = cursor({**TWO_WEEKS, "specialty": [cal.specialty], "count": 3, "offset": 6})
    bundle = await page(fhir, f"/Appointment/$find?_cursor={mine}")
    assert starts(bundle) == [f"2037-12-02T{h}:00-05:00" for h in ("09:00", "09:30", "10:00")]


async def test_a_cursor_comes_alone(fhir: httpx.AsyncClient) -> None:
    cal = await weekday_mornings(fhir)
    first = await first_page(fhir, **TWO_WEEKS, specialty=cal.specialty, _count=5)
    r = await fhir.get((link(first, "next") or "") + "&_count=7")
    assert r.status_code == 400
    assert names_parameter(r, "_cursor")


# --------------------------------------------------------------------------- the clock


async def test_find_never_offers_time_before_now(fhir: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(fhir, days=ALL_DAYS, start="00:00:00", end="00:00:00")
    now = datetime.now(UTC)
    bundle = await first_page(
        fhir, start=(now - timedelta(days=3)).isoformat(),
        end=(now + timedelta(days=1)).isoformat(), specialty=cal.specialty, _count=100)
    options = matches(bundle)
    assert options, "the part of the window still ahead has free time"
    assert all(utc(o["start"]) >= now for o in options), options[0]["start"]
    assert utc(options[0]["start"]) - now <= timedelta(minutes=30)  # clamped, not skipped


async def test_a_window_wholly_in_the_past_has_no_options(fhir: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(fhir, days=ALL_DAYS, start="00:00:00", end="00:00:00")
    bundle = await first_page(fhir, start="2017-03-01T00:00:00Z", end="2017-03-08T00:00:00Z",
                              specialty=cal.specialty)
    assert "entry" not in bundle
    assert bundle["total"] == 0


async def test_a_window_of_366_days_is_refused_saying_365(fhir: httpx.AsyncClient) -> None:
    r = await find_response(fhir, start="2037-12-01T00:00:00Z", end="2038-12-02T00:00:00Z")
    assert r.status_code == 400
    assert names_parameter(r, "end")
    assert "365 days" in r.json()["issue"][0]["diagnostics"]


# --------------------------------------------------------------------------- restarts, workers


@pytest.fixture
def own_store(store_kind: str, mongo_uri: str | None) -> Iterator[str]:
    url = store_url(store_kind, mongo_uri, "find_paging")
    yield url
    if url.startswith("sqlite"):
        cleanup_dir(url.removeprefix("sqlite:///").rsplit("/", 1)[0])


async def test_links_and_proposal_ids_survive_a_restart(own_store: str,
                                                        fhir_schema: object) -> None:
    proc = ServerProcess(own_store).start()
    try:
        async with fhir_client(proc.base, fhir_schema) as client:
            cal = await weekday_mornings(client)
            everything = starts(await first_page(client, **TWO_WEEKS, specialty=cal.specialty,
                                                 _count=100))
            first = await first_page(client, **TWO_WEEKS, specialty=cal.specialty, _count=20)
            offered = matches(first)[3]["id"]
        proc.stop()
        proc.start()  # same port, same database, nothing in memory
        async with fhir_client(proc.base, fhir_schema) as client:
            second = await page(client, link(first, "next") or "")
            back = await page(client, link(second, "previous") or "")
            r = await client.post("/Appointment/$hold", json=parameters(
                ("appointment-reference", {"reference": f"Appointment/{offered}"})))
            assert r.status_code == 200, r.text
    finally:
        proc.stop()
    assert starts(second) == everything[20:40]
    assert starts(back) == starts(first)


async def test_a_link_from_one_worker_works_on_another(own_store: str,
                                                       fhir_schema: object) -> None:
    one, two = ServerProcess(own_store).start(), ServerProcess(own_store).start()
    try:
        async with fhir_client(one.base, fhir_schema) as a, \
                fhir_client(two.base, fhir_schema) as b:
            cal = await weekday_mornings(a)
            first = await first_page(a, **TWO_WEEKS, specialty=cal.specialty, _count=50)
            nxt = (link(first, "next") or "").replace(one.base, two.base)
            assert nxt.startswith(two.base)
            second = await page(b, nxt)
    finally:
        one.stop()
        two.stop()
    assert len(matches(second)) == 10
    assert second["total"] == IN_TWO_WEEKS
    assert not set(starts(first)) & set(starts(second))


async def test_paging_stops_at_the_stated_limit_with_a_warning(fhir: httpx.AsyncClient) -> None:
    cal = await practitioner_calendar(fhir, days=ALL_DAYS, start="00:00:00", end="00:00:00",
                                      slot=15)
    last = cursor({"start": "2037-12-01T00:00:00Z", "end": "2037-12-31T00:00:00Z",
                   "specialty": [cal.specialty], "count": 50, "offset": 950})
    bundle = await page(fhir, f"/Appointment/$find?_cursor={last}")
    assert len(matches(bundle)) == 50
    assert link(bundle, "next") is None
    assert link(bundle, "previous") is not None
    assert any("1000" in i["diagnostics"] for i in outcome_issues(bundle))
    beyond = cursor({"start": "2037-12-01T00:00:00Z", "end": "2037-12-31T00:00:00Z",
                     "specialty": [cal.specialty], "offset": 1001})
    r = await fhir.get("/Appointment/$find", params={"_cursor": beyond})
    assert r.status_code == 400 and names_parameter(r, "_cursor")


async def test_the_capability_statement_states_the_find_limits(fhir: httpx.AsyncClient) -> None:
    cs = (await fhir.get("/metadata")).json()
    [appointment] = [r for r in cs["rest"][0]["resource"] if r["type"] == "Appointment"]
    [find_op] = [o for o in appointment["operation"] if o["name"] == "find"]
    text = find_op["documentation"]
    for fact in ("maximum 100", "up to 1000", "_cursor", "365", "before now"):
        assert fact in text, fact
