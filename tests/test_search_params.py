"""Search parameter semantics per type, over a real server, against hand-computed answers.

The world is described in ``tests/support/search_world.py``; every expected set below was worked out
by hand from that table and the R4 search page (prefix ranges, token forms, reference forms,
string matching), so a wrong reading of the spec in the server shows up as a wrong set here.
Placeholders: ``{P1}`` is ``Patient/<id>``, ``{P1_id}`` the bare id, ``{sys}``/``{sys2}`` this
world's identifier systems, ``{local}`` its code system, ``{uri}`` its protocol URI prefix.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio

from fhir_sched.query import AnyOf, Cond, Entry
from fhir_sched.search.parse import parse_param, range_expr, split_values
from tests.support.client import fhir_client
from tests.support.search_world import SNOMED, World, build_world, found, q, search_all
from tests.support.server import ServerProcess


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(server: ServerProcess, fhir_schema: object) -> AsyncIterator[World]:
    async with fhir_client(server.base, fhir_schema) as client:
        yield await build_world(client)


def fill(w: World, text: str) -> str:
    values: dict[str, str] = {"sys": w.sys, "sys2": w.sys2, "local": w.local, "uri": w.uri,
                              "base": w.base, "snomed": SNOMED}
    for name in w.ids:
        values[name] = w.ref(name)
        values[f"{name}_id"] = w.id(name)
    return text.format(**values)


async def check(fhir: httpx.AsyncClient, w: World, type_: str, query: str,
                expected: set[str]) -> None:
    got = await found(fhir, w, type_, q(fill(w, query)))
    assert got == expected, f"{type_}?{query}"


def case(query: str, *expected: str) -> object:
    return pytest.param(query, set(expected), id=query)


# -- date ----------------------------------------------------------------------------------------
APPOINTMENT_DATES = [
    case("date=2037-03-14", "A1"),  # a UTC day: A2 (23:30-05:00) is already the 15th
    case("date=2037-03-15", "A2", "A3"),
    case("date=2037-03", "A1", "A2", "A3", "A5"),
    case("date=2037", "A1", "A2", "A3", "A5", "A6", "A7"),  # A7 is 2037-01-01T01:00Z
    case("date=2036"),  # ... so 2036 has nothing, although A7 was written as 2036-12-31
    case("date=eq2037-03-15T00:00:00Z", "A3"),  # boundary instant, second precision
    case("date=2037-03-15T00:00Z", "A3"),  # minute precision
    case("date=ge2037-03-15", "A2", "A3", "A6"),
    case("date=gt2037-03-14", "A2", "A3", "A6"),
    case("date=lt2037-03-14", "A5", "A7"),  # A5 at 23:59:59 the day before
    case("date=le2037-03-14", "A1", "A5", "A7"),
    case("date=ge2037-03-14T00:00:00Z", "A1", "A2", "A3", "A6"),
    case("date=lt2037-03-15T00:00:00Z", "A1", "A5", "A7"),
    case("date=ge2037-03-14T19:00:00-05:00", "A2", "A3", "A6"),  # = 03-15T00:00Z
    case("date=lt2037-03-14T19:00:00-05:00", "A1", "A5", "A7"),
    case("date=ne2037-03-14", "A2", "A3", "A5", "A6", "A7"),  # A4 has no date to compare
    case("date=sa2037-03-14", "A2", "A3", "A6"),
    case("date=eb2037-03-15", "A1", "A5", "A7"),
    case("date:missing=true", "A4"),
    case("date:missing=false", "A1", "A2", "A3", "A5", "A6", "A7"),
    case("date=2037-03-14,2037-04", "A1", "A6"),  # comma: OR
    case("date=ge2037-03-14&date=lt2037-03-15", "A1"),  # repeat: AND
    case("date=ge2037-03-14&date=lt2037-03-14"),
]


@pytest.mark.parametrize(("query", "expected"), APPOINTMENT_DATES)
async def test_date_prefixes_on_instants_with_offsets(
        fhir: httpx.AsyncClient, world: World, query: str, expected: set[str]) -> None:
    await check(fhir, world, "Appointment", query, expected)


PERIOD_DATES = [
    # PR1 2037-01-01..06-30, PR2 from 03-01 open, PR3 until 02-15 open, PR4 none,
    # PR5 2037-03-10 07:00Z..16:00Z
    case("date=2037-03", "PR5"),  # eq: the search range must contain the whole period
    case("date=2037-03-10", "PR5"),
    case("date=ge2037-03", "PR1", "PR2", "PR5"),  # ends after March, or within it
    case("date=le2037-03", "PR1", "PR3", "PR5"),  # starts before March, or within it
    case("date=gt2037-06-30", "PR2"),  # PR1 ends on the last instant of 06-30
    case("date=lt2037-01-01", "PR3"),  # PR1 starts on the first instant of 01-01
    case("date=sa2037-02-15", "PR2", "PR5"),
    case("date=eb2037-03-01", "PR3"),
    case("date=ne2037-03", "PR1", "PR2", "PR3"),
    case("date:missing=true", "PR4"),
]


@pytest.mark.parametrize(("query", "expected"), PERIOD_DATES)
async def test_date_prefixes_on_periods_open_and_closed(
        fhir: httpx.AsyncClient, world: World, query: str, expected: set[str]) -> None:
    await check(fhir, world, "PractitionerRole", query, expected)


PARTIAL_DATES = [
    # P1 1980-05-03, P2 1980-05, P3 1981, P4 1979-12-31, P5 none
    case("birthdate=1980", "P1", "P2"),
    case("birthdate=1980-05", "P1", "P2"),
    case("birthdate=1980-05-03", "P1"),  # P2's whole May is not inside one day
    case("birthdate=ge1980-05-03", "P1", "P2", "P3"),
    case("birthdate=lt1980-05-03", "P2", "P4"),
    case("birthdate=le1979-12-31", "P4"),
    case("birthdate=gt1980", "P3"),
    case("birthdate=sa1979", "P1", "P2", "P3"),
    case("birthdate:missing=true", "P5"),
]


@pytest.mark.parametrize(("query", "expected"), PARTIAL_DATES)
async def test_date_partial_precision_targets_are_ranges(
        fhir: httpx.AsyncClient, world: World, query: str, expected: set[str]) -> None:
    await check(fhir, world, "Patient", query, expected)


async def test_date_ap_widens_by_a_tenth_of_the_distance_from_now(
        fhir: httpx.AsyncClient, world: World) -> None:
    # ap2037-03-14: the day widened by 10% of its (larger) distance from now, either side.
    day_lo = datetime(2037, 3, 14, tzinfo=UTC).timestamp()
    day_hi = datetime(2037, 3, 15, tzinfo=UTC).timestamp()
    now = time.time() // 86_400 * 86_400  # "now" is the start of the current UTC day
    widen = max(abs(now - day_lo), abs(now - day_hi)) / 10
    starts = {"A1": "2037-03-14T09:00:00+00:00", "A2": "2037-03-15T04:30:00+00:00",
              "A3": "2037-03-15T00:00:00+00:00", "A5": "2037-03-13T23:59:59+00:00",
              "A6": "2037-04-01T08:00:00+00:00", "A7": "2037-01-01T01:00:00+00:00"}
    expected = {n for n, s in starts.items()
                if day_lo - widen <= datetime.fromisoformat(s).timestamp() < day_hi + widen}
    assert "A1" in expected
    await check(fhir, world, "Appointment", "date=ap2037-03-14", expected)


async def test_last_updated_brackets_the_world(fhir: httpx.AsyncClient, world: World) -> None:
    got = await found(fhir, world, "Slot", [("_lastUpdated", f"ge{world.created}")])
    assert got == {f"SL{n}" for n in range(1, 7)}
    assert await found(fhir, world, "Slot", [("_lastUpdated", f"lt{world.created}")]) == set()


# -- token ---------------------------------------------------------------------------------------
IDENTIFIERS = [
    # P1 sys|A1 + sys2|A1, P2 sys|A2, P3 A3 (no system), P4 sys|A4 (type text) + sys2|X4, P5 -
    case("identifier=A1", "P1"),
    case("identifier={sys}|A1", "P1"),
    case("identifier={sys2}|A1", "P1"),
    case("identifier=A3", "P3"),
    case("identifier=|A3", "P3"),
    case("identifier=|A1"),  # A1 only exists with a system
    case("identifier={sys}|", "P1", "P2", "P4"),
    case("identifier={sys2}|", "P1", "P4"),
    case("identifier={sys}|A1,{sys}|A2", "P1", "P2"),
    case("identifier={sys}|A1&identifier={sys2}|A1", "P1"),
    case("identifier={sys}|A2&identifier={sys2}|A1"),
    case("identifier:text=medical", "P4"),
    case("identifier:text=record", "P4"),  # any word of the text
    case("identifier:missing=true", "P5"),
    case("identifier:not={sys}|A1", "P2", "P3", "P4", "P5"),
]


@pytest.mark.parametrize(("query", "expected"), IDENTIFIERS)
async def test_token_on_identifiers(fhir: httpx.AsyncClient, world: World, query: str,
                                    expected: set[str]) -> None:
    await check(fhir, world, "Patient", query, expected)


CODES_AND_BOOLEANS = [
    # gender: P1 male, P2 female, P3 -, P4 female, P5 other; active: P1 T, P2 F, P4 T
    case("gender=female", "P2", "P4"),
    case("gender=male,other", "P1", "P5"),
    case("gender:not=female", "P1", "P3", "P5"),  # :not includes "no value"
    case("gender:missing=true", "P3"),
    case("active=true", "P1", "P4"),
    case("active=false", "P2"),
    case("active:not=true", "P2", "P3", "P5"),
    case("active:missing=true", "P3", "P5"),
    case("deceased=true", "P5"),
    case("deceased=false", "P1", "P2", "P3", "P4"),
]


@pytest.mark.parametrize(("query", "expected"), CODES_AND_BOOLEANS)
async def test_token_on_codes_and_booleans(fhir: httpx.AsyncClient, world: World, query: str,
                                           expected: set[str]) -> None:
    await check(fhir, world, "Patient", query, expected)


CODEABLE_CONCEPTS = [
    # A1 snomed 11429006 "Consultation"; A2 snomed 394814009 "General practice" + text "GP
    # visit"; A3 walkin (no system); A5 text only; A6 snomed 11429006 + local C1; A4, A7 none
    case("service-type=11429006", "A1", "A6"),
    case("service-type={snomed}|11429006", "A1", "A6"),
    case("service-type={local}|C1", "A6"),
    case("service-type=walkin", "A3"),
    case("service-type=|walkin", "A3"),
    case("service-type=|11429006"),
    case("service-type={snomed}|", "A1", "A2", "A6"),
    case("service-type:text=consult", "A1"),
    case("service-type:text=GP", "A2"),
    case("service-type:text=practice", "A2"),
    case("service-type:text=physio", "A5"),
    case("service-type:missing=true", "A4", "A7"),
    case("service-type:not=11429006", "A2", "A3", "A4", "A5", "A7"),
    case("status=booked", "A1", "A2", "A6"),
    case("status:not=booked,cancelled", "A4", "A5", "A7"),
    case("part-status=needs-action", "A4"),
]


@pytest.mark.parametrize(("query", "expected"), CODEABLE_CONCEPTS)
async def test_token_on_codeable_concepts_and_codes(
        fhir: httpx.AsyncClient, world: World, query: str, expected: set[str]) -> None:
    await check(fhir, world, "Appointment", query, expected)


# -- reference -----------------------------------------------------------------------------------
REFERENCES = [
    case("patient={P1}", "A1", "A2", "A4"),
    case("patient={P1_id}", "A1", "A2", "A4"),
    case("patient={base}/{P1}", "A1", "A2", "A4"),  # our own absolute URL
    case("patient={P1}/_history/1", "A1", "A2", "A4"),
    case("patient=http://elsewhere.example/fhir/{P1}"),  # someone else's Patient
    case("actor={DR2}", "A2", "A6"),
    case("actor={DR2_id}", "A2", "A6"),  # a bare id across every target type
    case("actor:Practitioner={DR2_id}", "A2", "A6"),
    case("actor:Patient={DR2_id}"),
    case("practitioner={DR1_id}", "A1", "A3", "A4", "A5", "A7"),
    case("location={L1}", "A1", "A3", "A6"),
    case("location:missing=true", "A4", "A7"),
    case("location:missing=false", "A1", "A2", "A3", "A5", "A6"),
    case("patient={P1},{P2}", "A1", "A2", "A3", "A4", "A6"),
    case("patient={P1}&practitioner={DR1}", "A1", "A4"),
    case("actor:identifier={sys}|D1", "A7"),
    case("practitioner:identifier=D1", "A7"),
    case("based-on={SR1}", "A1"),
    case("slot={SL5}", "A1"),
]


@pytest.mark.parametrize(("query", "expected"), REFERENCES)
async def test_reference_forms(fhir: httpx.AsyncClient, world: World, query: str,
                               expected: set[str]) -> None:
    await check(fhir, world, "Appointment", query, expected)


# -- string --------------------------------------------------------------------------------------
STRINGS = [
    # families: P1 Müller, P2 Muller, P3 Mullins, P4 O'Brien-Smith (text "Dr. Zoë O'Brien-
    # Smith"), P5 Ødegård; givens: Jürgen / Anna Maria / Seán (prefix Mr) / Zoë / Åse
    case("family=muller", "P1", "P2"),
    case("family=Mul", "P1", "P2", "P3"),
    case("family=MÜL", "P1", "P2", "P3"),
    case("family=ller"),  # starts-with, not contains
    case("family:exact=Müller", "P1"),
    case("family:exact=Muller", "P2"),
    case("family:exact=muller"),
    case("family:contains=ULL", "P1", "P2", "P3"),
    case("family:contains=brien", "P4"),
    case("family=odegard", "P5"),  # Ø does not decompose, and is still found
    case("given=maria", "P2"),
    case("given=zoe", "P4"),
    case("given=ase", "P5"),
    case("name=sean", "P3"),
    case("name=mr", "P3"),
    case("name=dr", "P4"),  # the text part
    case("name=jurgen", "P1"),
    case("family=mul&given=anna", "P2"),
    case("family=mullins,odegard", "P3", "P5"),
    case("address-city=sao paulo", "P1"),
    case("address=rua", "P1"),
    case("address-country=br", "P1"),
    case("address-city:missing=true", "P2", "P3", "P4", "P5"),
]


@pytest.mark.parametrize(("query", "expected"), STRINGS)
async def test_string_matching_on_names_and_addresses(
        fhir: httpx.AsyncClient, world: World, query: str, expected: set[str]) -> None:
    await check(fhir, world, "Patient", query, expected)


# -- uri, _id ------------------------------------------------------------------------------------
URIS = [
    case("instantiates-uri={uri}/intake", "SR2"),
    case("instantiates-uri:below={uri}/intake", "SR1", "SR2"),
    case("instantiates-uri:above={uri}/intake/v1", "SR1", "SR2"),
    case("instantiates-uri={uri}"),
]


@pytest.mark.parametrize(("query", "expected"), URIS)
async def test_uri_exact_below_and_above(fhir: httpx.AsyncClient, world: World, query: str,
                                         expected: set[str]) -> None:
    await check(fhir, world, "ServiceRequest", query, expected)


IDS = [
    case("_id={A1_id}", "A1"),
    case("_id={A1_id},{A3_id}", "A1", "A3"),
    case("_id={A1_id}&status=cancelled"),
    case("_id={A1_id},{A3_id}&status=cancelled", "A3"),
    case("_id:not={A1_id}&identifier={sys}|", "A2", "A3", "A4", "A5", "A6", "A7"),
]


@pytest.mark.parametrize(("query", "expected"), IDS)
async def test_id_parameter(fhir: httpx.AsyncClient, world: World, query: str,
                            expected: set[str]) -> None:
    await check(fhir, world, "Appointment", query, expected)


# -- request handling ----------------------------------------------------------------------------
async def test_post_search_form_matches_get(fhir: httpx.AsyncClient, world: World) -> None:
    params = q(fill(world, "patient={P1}&date=ge2037-03-14&status=booked,proposed"))
    get = await search_all(fhir, "Appointment", params)
    post = await search_all(fhir, "Appointment", params, method="POST")
    assert [r["id"] for r in get] == [r["id"] for r in post]
    assert world.names([r["id"] for r in get]) == {"A1", "A2"}


async def test_empty_parameter_is_ignored(fhir: httpx.AsyncClient, world: World) -> None:
    params = [("identifier", f"{world.sys}|A1"), ("family", "")]
    r = await fhir.get("/Patient", params=params)
    assert r.status_code == 200
    assert world.names([e["resource"]["id"] for e in r.json()["entry"]]) == {"P1"}
    self_link = next(link["url"] for link in r.json()["link"] if link["relation"] == "self")
    assert "family" not in self_link


async def test_unknown_parameter_is_ignored_and_left_out_of_self_link(
        fhir: httpx.AsyncClient, world: World) -> None:
    r = await fhir.get("/Patient", params=[("identifier", f"{world.sys}|A1"),
                                           ("favourite-colour", "blue")])
    assert r.status_code == 200
    body = r.json()
    assert world.names([e["resource"]["id"] for e in body["entry"]]) == {"P1"}
    self_link = next(link["url"] for link in body["link"] if link["relation"] == "self")
    assert "favourite-colour" not in self_link
    assert "identifier=" in self_link


async def test_unknown_parameter_under_strict_handling_is_400_naming_it(
        fhir: httpx.AsyncClient, world: World) -> None:
    r = await fhir.get("/Patient", params=[("identifier", f"{world.sys}|A1"),
                                           ("favourite-colour", "blue")],
                       headers={"prefer": "handling=strict"})
    assert r.status_code == 400
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["favourite-colour"]
    assert "favourite-colour" in issue["diagnostics"]


MALFORMED = [
    ("Appointment", "date", "2037-13-01"),
    ("Appointment", "date", "2037-03-14T10:00:00"),  # a time without an offset
    ("Appointment", "date", "2037-03-14T25:00Z"),
    ("Appointment", "date", "xx2037-03-14"),  # unknown prefix
    ("Appointment", "date", "tomorrow"),
    ("Appointment", "date:exact", "2037"),  # modifier not allowed on dates
    ("Appointment", "status:contains", "book"),
    ("Appointment", "patient:Practitioner", "x"),  # not a target type of patient
    ("Appointment", "patient", "Practitioner/x"),
    ("Appointment", "actor:missing", "maybe"),
    ("Appointment", "_count", "-1"),
    ("Appointment", "_count", "ten"),
    ("Appointment", "_sort", "colour"),
    ("Appointment", "_summary", "everything"),
    ("Appointment", "_total", "lots"),
    ("Appointment", "_include", "Appointment:colour"),
    ("Appointment", "_include", "Nonsense:patient"),
    ("Appointment", "patient.organization.name", "x"),  # two levels of chaining
    ("Patient", "_has:Appointment:patient:_has:Slot:schedule:status", "free"),
    ("Patient", "identifier", "|"),
    ("Slot", "date", "2037-03-14,"),  # an empty alternative
]


@pytest.mark.parametrize(("type_", "name", "value"), MALFORMED,
                         ids=[f"{t}?{n}={v}" for t, n, v in MALFORMED])
async def test_malformed_value_is_400_naming_the_parameter(
        fhir: httpx.AsyncClient, type_: str, name: str, value: str) -> None:
    if (type_, name) == ("Slot", "date"):
        name = "start"
    r = await fhir.get(f"/{type_}", params=[(name, value)])
    assert r.status_code == 400, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [name]


# -- pure parsing (no server): number/quantity ranges and escapes ---------------------------------
def test_number_precision_is_the_implied_range() -> None:
    assert range_expr("n", "eq", 99.5, 100.5) == Entry(
        "n", (Cond("lo", ">=", 99.5), Cond("hi", "<=", 100.5)))
    assert range_expr("n", "gt", 99.5, 100.5) == Entry("n", (Cond("hi", ">", 100.5),))
    assert range_expr("n", "ge", 1, 2) == AnyOf((Entry("n", (Cond("hi", ">", 2),)), Entry(
        "n", (Cond("lo", ">=", 1), Cond("hi", "<=", 2)))))


def test_escaped_comma_and_pipe_are_literal() -> None:
    assert split_values(r"a\,b,c") == ["a,b", "c"]
    expr = parse_param("Patient", "identifier", r"urn:x\|y|v\,1")
    assert expr == Entry("identifier", (Cond("val", "=", "v,1"), Cond("sys", "=", "urn:x|y")))
