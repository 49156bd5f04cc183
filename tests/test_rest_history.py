"""``_history`` at instance, type and system level, with ``_since``, ``_count`` and next links.

History is read from the change log, so it must show every version (newest first), deletes
included, and page through them without gaps or repeats.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

SYSTEM = "urn:fhir-sched:test:history"


def patient() -> dict[str, Any]:
    return {"resourceType": "Patient",
            "identifier": [{"system": SYSTEM, "value": uuid.uuid4().hex}]}


async def create(fhir: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await fhir.post(f"/{body['resourceType']}", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def all_pages(fhir: httpx.AsyncClient, url: str, params: dict[str, str] | None = None
                    ) -> list[dict[str, Any]]:
    """Every page's bundle, following ``next`` links as given (absolute URLs)."""
    pages = []
    r = await fhir.get(url, params=params)
    while True:
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["type"] == "history"
        pages.append(page)
        nxt = [link["url"] for link in page.get("link", []) if link["relation"] == "next"]
        if not nxt:
            return pages
        r = await fhir.get(nxt[0])


def versions(bundle: dict[str, Any]) -> list[str]:
    return [e["response"]["etag"] for e in bundle.get("entry", [])]


async def test_instance_history_lists_create_update_delete_newest_first(
        fhir: httpx.AsyncClient) -> None:
    p = await create(fhir, patient())
    await fhir.put(f"/Patient/{p['id']}", json={**p, "gender": "male"})
    await fhir.delete(f"/Patient/{p['id']}")
    r = await fhir.get(f"/Patient/{p['id']}/_history")
    assert r.status_code == 200
    entries = r.json()["entry"]
    assert [e["request"]["method"] for e in entries] == ["DELETE", "PUT", "POST"]
    assert [e["response"]["etag"] for e in entries] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert "resource" not in entries[0]
    assert entries[1]["resource"]["gender"] == "male"
    assert entries[2]["resource"] == p
    assert [e["response"]["status"] for e in entries] == ["204 No Content", "200 OK",
                                                          "201 Created"]


async def test_instance_history_of_an_unknown_resource_is_404(fhir: httpx.AsyncClient) -> None:
    r = await fhir.get(f"/Patient/{uuid.uuid4().hex}/_history")
    assert r.status_code == 404


async def test_instance_history_pages_with_count_and_next_links(fhir: httpx.AsyncClient) -> None:
    p = await create(fhir, patient())
    for _ in range(4):
        await fhir.put(f"/Patient/{p['id']}", json=p)
    pages = await all_pages(fhir, f"/Patient/{p['id']}/_history", {"_count": "2"})
    assert [len(page["entry"]) for page in pages] == [2, 2, 1]
    seen = [v for page in pages for v in versions(page)]
    assert seen == [f'W/"{n}"' for n in (5, 4, 3, 2, 1)]


async def test_type_history_since_excludes_earlier_changes(fhir: httpx.AsyncClient) -> None:
    before = await create(fhir, patient())
    await asyncio.sleep(0.01)  # lastUpdated has millisecond precision
    after = await create(fhir, patient())
    r = await fhir.get("/Patient/_history", params={"_since": after["meta"]["lastUpdated"]})
    ids = {e["resource"]["id"] for e in r.json().get("entry", []) if "resource" in e}
    assert after["id"] in ids
    assert before["id"] not in ids


async def test_type_history_holds_only_that_type(fhir: httpx.AsyncClient) -> None:
    p = await create(fhir, patient())
    await create(fhir, {"resourceType": "Practitioner", "name": [{"family": "Osei"}]})
    r = await fhir.get("/Patient/_history", params={"_since": p["meta"]["lastUpdated"]})
    entries = r.json()["entry"]
    assert {e["fullUrl"].split("/")[-2] for e in entries} == {"Patient"}


async def test_type_history_pages_without_gaps_or_repeats(fhir: httpx.AsyncClient) -> None:
    first = await create(fhir, patient())
    made = [first["id"]] + [(await create(fhir, patient()))["id"] for _ in range(4)]
    pages = await all_pages(fhir, "/Patient/_history",
                            {"_since": first["meta"]["lastUpdated"], "_count": "2"})
    assert all(len(page.get("entry", [])) <= 2 for page in pages)
    seen = [e["resource"]["id"] for page in pages for e in page.get("entry", [])
            if "resource" in e]
    assert len(seen) == len(set(seen))
    assert set(made) <= set(seen)


async def test_system_history_spans_types_and_honours_since(fhir: httpx.AsyncClient) -> None:
    p = await create(fhir, patient())
    pr = await create(fhir, {"resourceType": "Practitioner", "name": [{"family": "Mensah"}]})
    pages = await all_pages(fhir, "/_history", {"_since": p["meta"]["lastUpdated"],
                                                "_count": "1"})
    assert len(pages) >= 2  # _count=1 with two or more changes: a next link was followed
    urls = {e["fullUrl"].split("/fhir/")[1] for page in pages for e in page.get("entry", [])}
    assert {f"Patient/{p['id']}", f"Practitioner/{pr['id']}"} <= urls


async def test_history_with_since_without_offset_is_400(fhir: httpx.AsyncClient) -> None:
    r = await fhir.get("/Patient/_history", params={"_since": "2024-01-01T10:00:00"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["_since"]
