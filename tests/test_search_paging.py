"""Paging: ``next``/``previous``/``self`` links that stay exact while other clients insert.

The promise (issue 3): paging through a result while another client inserts matching resources
yields no duplicate and skips nothing that existed when the search began. Each test makes its own
resources under a fresh identifier system, so the expected sets are known exactly.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from tests.support.client import fhir_client
from tests.support.server import ServerProcess, store_url

Json = dict[str, Any]


def system() -> str:
    return f"urn:paging-test:{uuid.uuid4().hex[:12]}"


async def make_patients(fhir: httpx.AsyncClient, sys: str, births: list[str]) -> list[str]:
    ids = []
    for n, birth in enumerate(births):
        r = await fhir.post("/Patient", json={
            "resourceType": "Patient", "birthDate": birth,
            "identifier": [{"system": sys, "value": f"n{n}-{uuid.uuid4().hex[:6]}"}]})
        assert r.status_code == 201
        ids.append(r.json()["id"])
    return ids


def link(bundle: Json, relation: str) -> str | None:
    return next((lk["url"] for lk in bundle.get("link", []) if lk["relation"] == relation), None)


def ids_of(bundle: Json) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


async def get(fhir: httpx.AsyncClient, url: str, params: list[tuple[str, str]] | None = None,
              ) -> Json:
    r = await fhir.get(url, params=params)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("sort", [None, "birthdate", "-birthdate,_id"])
async def test_paging_while_another_client_inserts_skips_and_repeats_nothing(
        fhir: httpx.AsyncClient, server: ServerProcess, fhir_schema: object,
        sort: str | None) -> None:
    sys = system()
    births = [f"19{50 + n}-01-01" for n in range(13)]
    before = await make_patients(fhir, sys, births)
    params = [("identifier", f"{sys}|"), ("_count", "3")]
    if sort:
        params.append(("_sort", sort))
    seen: list[str] = []
    inserted: list[str] = []
    page = await get(fhir, "/Patient", params)
    async with fhir_client(server.base, fhir_schema) as other:
        n = 0
        while True:
            seen.extend(ids_of(page))
            # another client adds matches that sort before, among and after the cursor
            inserted += await make_patients(other, sys, [f"19{48 + n % 20}-06-01", "2001-01-01"])
            n += 1
            nxt = link(page, "next")
            if nxt is None:
                break
            page = await get(fhir, nxt)
    assert len(seen) == len(set(seen)), "a resource was returned twice"
    assert set(before) <= set(seen), "a resource that existed at the start was skipped"
    assert set(seen) <= set(before) | set(inserted)


async def test_paging_with_concurrent_writer_task(fhir: httpx.AsyncClient,
                                                  server: ServerProcess,
                                                  fhir_schema: object) -> None:
    sys = system()
    before = await make_patients(fhir, sys, ["1970-01-01"] * 20)
    stop = asyncio.Event()

    async def writer() -> None:
        async with fhir_client(server.base, fhir_schema) as other:
            while not stop.is_set():
                await make_patients(other, sys, ["1970-01-01"])

    task = asyncio.create_task(writer())
    try:
        seen: list[str] = []
        page = await get(fhir, "/Patient", [("identifier", f"{sys}|"), ("_count", "2")])
        while True:
            seen.extend(ids_of(page))
            nxt = link(page, "next")
            if nxt is None or set(before) <= set(seen):
                break
            page = await get(fhir, nxt)
    finally:
        stop.set()
        await task
    assert len(seen) == len(set(seen))
    assert set(before) <= set(seen)


async def test_previous_link_returns_the_page_before(fhir: httpx.AsyncClient) -> None:
    sys = system()
    await make_patients(fhir, sys, [f"19{60 + n}-01-01" for n in range(7)])
    params = [("identifier", f"{sys}|"), ("_count", "3"), ("_sort", "-birthdate")]
    page1 = await get(fhir, "/Patient", params)
    assert link(page1, "previous") is None
    page2 = await get(fhir, link(page1, "next") or "")
    page3 = await get(fhir, link(page2, "next") or "")
    assert link(page3, "next") is None
    assert len(ids_of(page3)) == 1
    assert ids_of(await get(fhir, link(page3, "previous") or "")) == ids_of(page2)
    assert ids_of(await get(fhir, link(page2, "previous") or "")) == ids_of(page1)
    births = [e["resource"]["birthDate"] for p in (page1, page2, page3) for e in p["entry"]]
    assert births == sorted(births, reverse=True)


async def test_self_link_reproduces_the_page(fhir: httpx.AsyncClient) -> None:
    sys = system()
    await make_patients(fhir, sys, ["1990-01-01"] * 5)
    page1 = await get(fhir, "/Patient", [("identifier", f"{sys}|"), ("_count", "2")])
    page2 = await get(fhir, link(page1, "next") or "")
    self2 = link(page2, "self") or ""
    assert "_page=" in self2
    assert ids_of(await get(fhir, self2)) == ids_of(page2)
    assert "_page=" not in (link(page1, "self") or "")


async def test_page_token_of_another_search_is_refused(fhir: httpx.AsyncClient) -> None:
    sys = system()
    await make_patients(fhir, sys, ["1990-01-01"] * 3)
    page1 = await get(fhir, "/Patient", [("identifier", f"{sys}|"), ("_count", "1")])
    token = (link(page1, "next") or "").split("_page=")[1].split("&")[0]
    r = await fhir.get("/Patient", params=[("identifier", f"{sys}|"), ("_count", "1"),
                                           ("_sort", "birthdate"), ("_page", token)])
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["_page"]
    r = await fhir.get("/Patient", params=[("identifier", f"{sys}|"), ("_page", "garbage!")])
    assert r.status_code == 400


async def test_previous_link_works_under_inserts(fhir: httpx.AsyncClient) -> None:
    sys = system()
    await make_patients(fhir, sys, ["1990-01-01"] * 6)
    page1 = await get(fhir, "/Patient", [("identifier", f"{sys}|"), ("_count", "2")])
    page2 = await get(fhir, link(page1, "next") or "")
    await make_patients(fhir, sys, ["1990-01-01"] * 3)  # insertion order: after the cursor
    back = await get(fhir, link(page2, "previous") or "")
    assert ids_of(back) == ids_of(page1)


async def test_total_accurate_none_and_free(fhir: httpx.AsyncClient) -> None:
    sys = system()
    await make_patients(fhir, sys, ["1990-01-01"] * 5)
    base = [("identifier", f"{sys}|")]
    assert (await get(fhir, "/Patient", base))["total"] == 5  # one page: counted for free
    assert "total" not in await get(fhir, "/Patient", [*base, ("_count", "2")])
    paged = await get(fhir, "/Patient", [*base, ("_count", "2"), ("_total", "accurate")])
    assert paged["total"] == 5
    assert len(paged["entry"]) == 2
    assert "total" not in await get(fhir, "/Patient", [*base, ("_total", "none")])


async def test_summary_count_and_count_zero_return_only_the_total(
        fhir: httpx.AsyncClient) -> None:
    sys = system()
    await make_patients(fhir, sys, ["1990-01-01"] * 4)
    for extra in (("_summary", "count"), ("_count", "0")):
        b = await get(fhir, "/Patient", [("identifier", f"{sys}|"), extra])
        assert b["total"] == 4
        assert "entry" not in b
        assert link(b, "next") is None


async def test_sort_is_multi_key_and_stable(fhir: httpx.AsyncClient) -> None:
    sys = system()
    births = ["1980-01-01", "1975-01-01", "1980-01-01", "1990-01-01", "1975-01-01"]
    ids = await make_patients(fhir, sys, births)
    params = [("identifier", f"{sys}|"), ("_count", "2"), ("_sort", "birthdate")]
    order: list[str] = []
    page = await get(fhir, "/Patient", params)
    while True:
        order.extend(ids_of(page))
        nxt = link(page, "next")
        if nxt is None:
            break
        page = await get(fhir, nxt)
    # ties keep creation order
    assert order == [ids[1], ids[4], ids[0], ids[2], ids[3]]
    desc = ids_of(await get(fhir, "/Patient", [("identifier", f"{sys}|"),
                                                ("_sort", "-birthdate,_id")]))
    expected = [ids[3], *sorted([ids[0], ids[2]]), *sorted([ids[1], ids[4]])]
    assert desc == expected


async def test_summary_and_elements_shape_entries(fhir: httpx.AsyncClient) -> None:
    sys = system()
    r = await fhir.post("/Patient", json={
        "resourceType": "Patient", "identifier": [{"system": sys, "value": "x"}],
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">"
                 "Pat</div>"},
        "name": [{"family": "Summary"}], "gender": "female", "birthDate": "1990-01-01",
        "maritalStatus": {"text": "single"}})
    assert r.status_code == 201
    base = [("identifier", f"{sys}|")]
    full = (await get(fhir, "/Patient", base))["entry"][0]["resource"]
    assert "maritalStatus" in full and "text" in full
    summary = (await get(fhir, "/Patient", [*base, ("_summary", "true")]))["entry"][0]["resource"]
    assert "maritalStatus" not in summary  # not a summary element of Patient
    assert summary["name"] == [{"family": "Summary"}]
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    data = (await get(fhir, "/Patient", [*base, ("_summary", "data")]))["entry"][0]["resource"]
    assert "text" not in data and "maritalStatus" in data
    elements = (await get(fhir, "/Patient", [*base, ("_elements", "gender")]))["entry"][0]
    assert set(elements["resource"]) == {"resourceType", "id", "meta", "gender"}


# -- configured default and maximum _count ------------------------------------------------------
@pytest.fixture(scope="module")
def small_pages(store_kind: str, mongo_uri: str | None) -> Iterator[ServerProcess]:
    db_name = f"paging_{uuid.uuid4().hex[:10]}"
    url = store_url(store_kind, mongo_uri, db_name)
    proc = ServerProcess(url, env={"FHIR_SCHED_DEFAULT_COUNT": "3",
                                   "FHIR_SCHED_MAX_COUNT": "5"}).start()
    yield proc
    proc.stop()
    if url.startswith("sqlite"):
        shutil.rmtree(url.removeprefix("sqlite:///").rsplit("/", 1)[0], ignore_errors=True)
    elif mongo_uri is not None:
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
        client.drop_database(db_name)
        client.close()


async def test_count_default_and_maximum_are_configurable(small_pages: ServerProcess,
                                                          fhir_schema: object) -> None:
    sys = system()
    async with fhir_client(small_pages.base, fhir_schema) as client:
        await make_patients(client, sys, ["1990-01-01"] * 7)
        default = await get(client, "/Patient", [("identifier", f"{sys}|")])
        assert len(default["entry"]) == 3
        capped = await get(client, "/Patient", [("identifier", f"{sys}|"), ("_count", "50")])
        assert len(capped["entry"]) == 5
        assert "_count=5" in (link(capped, "self") or "")
        assert "_count=5" in (link(capped, "next") or "")
