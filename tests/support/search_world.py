"""A small world of resources built for search edge cases, and helpers to query it.

Every search test module builds its own world (``build_world``) on the shared server: its
identifier systems, URIs and codes carry a fresh tag, and results are intersected with the ids
the world created, so other modules' data can neither add to nor hide from an expected set. The
expected sets in the tests are computed by hand from the table below, never by running the
server's own code.

Times (UTC unless the value carries another offset):

========  ==========================================  ===========  ====  ====  ====
resource  start                                       status       pat   prac  loc
========  ==========================================  ===========  ====  ====  ====
A1        2037-03-14T09:00:00Z                        booked       P1    DR1   L1
A2        2037-03-14T23:30:00-05:00 (= 03-15 04:30Z)  booked       P1    DR2   L2
A3        2037-03-15T00:00:00Z (day boundary)         cancelled    P2    DR1   L1
A4        (none: proposed)                            proposed     P1    DR1   -
A5        2037-03-13T23:59:59Z                        pending      P3    DR1   L2
A6        2037-04-01T10:00:00+02:00 (= 08:00Z)        booked       P2    DR2   L1
A7        2036-12-31T23:00:00-02:00 (= 2037-01-01Z)   fulfilled    P4    DR1   -
========  ==========================================  ===========  ====  ====  ====

Slots (S1 = DR1 + L1, active; S2 = DR2, inactive; S3 = L2, active absent): SL1 03-14T09:00Z free,
SL2 03-14T23:30-05:00 free, SL3 03-15T00:00Z busy, SL4 03-13T23:59:59.999Z free, SL5
03-14T10:00+01:00 busy, the slot of A1 (all on S1); SL6 03-14T09:00Z free on S2. A1 is also
based on SR1; A7's practitioner reference also carries an identifier (sys|D1).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

SNOMED = "http://snomed.info/sct"
Json = dict[str, Any]


@dataclass
class World:
    tag: str
    sys: str  # identifier system, unique to this world
    sys2: str
    local: str  # a local code system, unique to this world
    uri: str  # prefix of ServiceRequest.instantiatesUri values
    base: str
    ids: dict[str, str] = field(default_factory=dict)  # "P1" -> server id
    types: dict[str, str] = field(default_factory=dict)  # "P1" -> "Patient"
    created: str = ""  # a lastUpdated instant taken just before the world was written

    def id(self, name: str) -> str:
        return self.ids[name]

    def ref(self, name: str) -> str:
        return f"{self.types[name]}/{self.ids[name]}"

    def names(self, ids: list[str] | set[str], type_: str | None = None) -> set[str]:
        """Server ids back to fixture names, dropping anything this world did not create."""
        back = {v: k for k, v in self.ids.items()
                if type_ is None or self.types[k] == type_}
        return {back[i] for i in ids if i in back}

    def ordered(self, ids: list[str]) -> list[str]:
        back = {v: k for k, v in self.ids.items()}
        return [back[i] for i in ids if i in back]


async def _create(client: httpx.AsyncClient, world: World, name: str, body: Json) -> None:
    r = await client.post(f"/{body['resourceType']}", json=body)
    assert r.status_code == 201, f"{name}: {r.status_code} {r.text}"
    world.ids[name] = r.json()["id"]
    world.types[name] = body["resourceType"]


async def build_world(client: httpx.AsyncClient) -> World:
    tag = uuid.uuid4().hex[:12]
    w = World(tag=tag, sys=f"urn:search-test:{tag}:id", sys2=f"urn:search-test:{tag}:alt",
              local=f"urn:search-test:{tag}:codes", uri=f"http://example.org/{tag}/protocols",
              base=str(client.base_url).rstrip("/"))
    r = await client.get("/metadata")
    assert r.status_code == 200
    # a lower bound for _lastUpdated: the server's clock, read from the metadata timestamp
    w.created = r.json()["date"]

    async def mk(name: str, body: Json) -> None:
        await _create(client, w, name, body)

    await mk("ORG", {"resourceType": "Organization", "name": f"Search Org {tag}",
                     "identifier": [{"system": w.sys, "value": "ORG"}]})
    await mk("P1", {
        "resourceType": "Patient", "active": True, "gender": "male", "birthDate": "1980-05-03",
        "identifier": [{"system": w.sys, "value": "A1"}, {"system": w.sys2, "value": "A1"}],
        "name": [{"family": "Müller", "given": ["Jürgen"]}],
        "address": [{"line": ["Rua Augusta 100"], "city": "São Paulo", "country": "BR"}],
        "managingOrganization": {"reference": w.ref("ORG")}})
    await mk("P2", {
        "resourceType": "Patient", "active": False, "gender": "female", "birthDate": "1980-05",
        "identifier": [{"system": w.sys, "value": "A2"}],
        "name": [{"family": "Muller", "given": ["Anna", "Maria"]}]})
    await mk("P3", {
        "resourceType": "Patient", "birthDate": "1981",
        "identifier": [{"value": "A3"}],
        "name": [{"family": "Mullins", "given": ["Seán"], "prefix": ["Mr"]}]})
    await mk("P4", {
        "resourceType": "Patient", "active": True, "gender": "female", "birthDate": "1979-12-31",
        "identifier": [{"system": w.sys, "value": "A4",
                        "type": {"text": "Medical record number"}},
                       {"system": w.sys2, "value": "X4"}],
        "name": [{"text": "Dr. Zoë O'Brien-Smith", "family": "O'Brien-Smith",
                  "given": ["Zoë"]}]})
    await mk("P5", {
        "resourceType": "Patient", "gender": "other", "deceasedBoolean": True,
        "name": [{"family": "Ødegård", "given": ["Åse"]}]})
    await mk("DR1", {
        "resourceType": "Practitioner", "active": True, "gender": "male",
        "identifier": [{"system": w.sys, "value": "D1"}],
        "name": [{"family": "Okafor", "given": ["Chidi"]}]})
    await mk("DR2", {
        "resourceType": "Practitioner", "active": False,
        "identifier": [{"system": w.sys, "value": "D2"}, {"system": w.sys2, "value": "D2b"}],
        "name": [{"family": "Nguyễn", "given": ["Thị"]}]})
    await mk("L1", {"resourceType": "Location", "status": "active", "name": f"Room 1 {tag}",
                    "address": {"city": "Zürich"}})
    await mk("L2", {"resourceType": "Location", "status": "active", "name": f"Room 2 {tag}"})
    roles: list[tuple[str, Json | None]] = [
        ("PR1", {"start": "2037-01-01", "end": "2037-06-30"}),
        ("PR2", {"start": "2037-03-01"}),
        ("PR3", {"end": "2037-02-15"}),
        ("PR4", None),
        ("PR5", {"start": "2037-03-10T08:00:00+01:00", "end": "2037-03-10T17:00:00+01:00"}),
    ]
    for name, period in roles:
        role: Json = {"resourceType": "PractitionerRole", "practitioner": {"reference":
                      w.ref("DR1")}, "organization": {"reference": w.ref("ORG")},
                      "identifier": [{"system": w.sys, "value": name}]}
        if period is not None:
            role["period"] = period
        await mk(name, role)
    await mk("SR1", {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                     "identifier": [{"system": w.sys, "value": "SR1"}],
                     "subject": {"reference": w.ref("P1")}, "authoredOn": "2037-03-01",
                     "instantiatesUri": [f"{w.uri}/intake/v1"]})
    await mk("SR2", {"resourceType": "ServiceRequest", "status": "completed", "intent": "order",
                     "identifier": [{"system": w.sys, "value": "SR2"}],
                     "subject": {"reference": w.ref("P2")},
                     "instantiatesUri": [f"{w.uri}/intake"]})
    await mk("SR3", {"resourceType": "ServiceRequest", "status": "active", "intent": "plan",
                     "identifier": [{"system": w.sys, "value": "SR3"}],
                     "subject": {"reference": w.ref("P2")},
                     "instantiatesUri": [f"{w.uri}/other"]})
    await mk("C1", {"resourceType": "Coverage", "status": "active",
                    "identifier": [{"system": w.sys, "value": "C1"}],
                    "beneficiary": {"reference": w.ref("P1")},
                    "payor": [{"reference": w.ref("ORG")}]})

    def part(name: str, **extra: Any) -> Json:
        return {"actor": {"reference": w.ref(name), **extra}, "status": "accepted"}

    consult = {"system": SNOMED, "code": "11429006", "display": "Consultation"}
    appointments: list[tuple[str, Json]] = [
        ("A1", {"status": "booked", "start": "2037-03-14T09:00:00Z",
                "end": "2037-03-14T09:30:00Z",
                "basedOn": [{"reference": w.ref("SR1")}],
                "serviceType": [{"coding": [consult]}],
                "comment": "bring the referral letter",
                "participant": [part("P1"), part("DR1"), part("L1")]}),
        ("A2", {"status": "booked", "start": "2037-03-14T23:30:00-05:00",
                "end": "2037-03-15T00:00:00-05:00",
                "serviceType": [{"coding": [{"system": SNOMED, "code": "394814009",
                                             "display": "General practice"}],
                                 "text": "GP visit"}],
                "participant": [part("P1"), part("DR2"), part("L2")]}),
        ("A3", {"status": "cancelled", "start": "2037-03-15T00:00:00Z",
                "end": "2037-03-15T00:30:00Z",
                "serviceType": [{"coding": [{"code": "walkin"}]}],
                "participant": [part("P2"), part("DR1"), part("L1")]}),
        ("A4", {"status": "proposed",
                "participant": [part("P1"), {"actor": {"reference": w.ref("DR1")},
                                             "status": "needs-action"}]}),
        ("A5", {"status": "pending", "start": "2037-03-13T23:59:59Z",
                "end": "2037-03-14T00:29:59Z",
                "serviceType": [{"text": "Physiotherapy review"}],
                "participant": [part("P3"), part("DR1"), part("L2")]}),
        ("A6", {"status": "booked", "start": "2037-04-01T10:00:00+02:00",
                "end": "2037-04-01T10:30:00+02:00",
                "serviceType": [{"coding": [{"system": SNOMED, "code": "11429006"},
                                            {"system": w.local, "code": "C1"}]}],
                "participant": [part("P2"), part("DR2"), part("L1")]}),
        ("A7", {"status": "fulfilled", "start": "2036-12-31T23:00:00-02:00",
                "end": "2036-12-31T23:30:00-02:00",
                "participant": [part("P4"),
                                part("DR1", identifier={"system": w.sys, "value": "D1"})]}),
    ]
    # The calendars come after the appointments that lie outside them, as in a clinic that
    # starts scheduling on the server: what was recorded before is not re-judged by them. A1
    # books the busy Slot SL5 inside them, so it waits for the calendars.
    async def calendars() -> None:
        await mk("S1", {"resourceType": "Schedule", "active": True,
                        "identifier": [{"system": w.sys, "value": "S1"}],
                        "actor": [{"reference": w.ref("DR1")}, {"reference": w.ref("L1")}],
                        "planningHorizon": {"start": "2037-03-01T00:00:00Z",
                                            "end": "2037-03-31T23:59:59Z"}})
        await mk("S2", {"resourceType": "Schedule", "active": False,
                        "identifier": [{"system": w.sys, "value": "S2"}],
                        "actor": [{"reference": w.ref("DR2")}]})
        await mk("S3", {"resourceType": "Schedule",
                        "identifier": [{"system": w.sys, "value": "S3"}],
                        "actor": [{"reference": w.ref("L2")}]})
        slots = [
            ("SL1", "S1", "2037-03-14T09:00:00Z", "2037-03-14T09:30:00Z", "free"),
            ("SL2", "S1", "2037-03-14T23:30:00-05:00", "2037-03-15T00:00:00-05:00", "free"),
            ("SL3", "S1", "2037-03-15T00:00:00Z", "2037-03-15T00:30:00Z", "busy"),
            ("SL4", "S1", "2037-03-13T23:59:59.999Z", "2037-03-14T00:29:59.999Z", "free"),
            ("SL5", "S1", "2037-03-14T10:00:00+01:00", "2037-03-14T10:30:00+01:00", "busy"),
            ("SL6", "S2", "2037-03-14T09:00:00Z", "2037-03-14T09:30:00Z", "free"),
        ]
        for name, sched, start, end, status in slots:
            await mk(name, {"resourceType": "Slot", "schedule": {"reference": w.ref(sched)},
                            "identifier": [{"system": w.sys, "value": name}],
                            "status": status, "start": start, "end": end})

    for name, body in appointments:
        if name == "A1":
            continue
        await mk(name, {"resourceType": "Appointment",
                        "identifier": [{"system": w.sys, "value": name}], **body})
    await calendars()
    name, body = appointments[0]
    await mk(name, {"resourceType": "Appointment",
                    "identifier": [{"system": w.sys, "value": name}], **body,
                    "slot": [{"reference": w.ref("SL5")}]})
    return w


# -- querying --------------------------------------------------------------------------------
async def search_all(client: httpx.AsyncClient, path: str, params: list[tuple[str, str]],
                     *, method: str = "GET") -> list[Json]:
    """Every match of a search, following ``next`` links; asserts 200 on every page."""
    if method == "GET":
        r = await client.get(f"/{path}", params=params)
    else:
        r = await client.post(f"/{path}/_search", content=urlencode(params),
                              headers={"content-type": "application/x-www-form-urlencoded"})
    out: list[Json] = []
    while True:
        assert r.status_code == 200, f"{path}?{urlencode(params)} -> {r.status_code} {r.text}"
        bundle = r.json()
        out.extend(e["resource"] for e in bundle.get("entry", [])
                   if e.get("search", {}).get("mode") == "match")
        nxt = next((link["url"] for link in bundle.get("link", [])
                    if link["relation"] == "next"), None)
        if nxt is None:
            return out
        r = await client.get(nxt)


async def found(client: httpx.AsyncClient, world: World, path: str,
                params: list[tuple[str, str]]) -> set[str]:
    """The fixture names (of this world) a search matches."""
    resources = await search_all(client, path, [*params, ("_count", "500")])
    return world.names([res["id"] for res in resources])


def q(query: str) -> list[tuple[str, str]]:
    """``"a=1&b=2"`` as pairs, without decoding (values here are written unencoded)."""
    pairs = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        pairs.append((name, value))
    return pairs
