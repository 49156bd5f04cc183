"""$find place filters know where people work: through Schedules, PractitionerRoles and
HealthcareServices, not only through Schedules that happen to list a Location.

A small world with two organizations, each with one clinic (Location):

- P1's Schedule lists no place; an active role puts P1 at clinic A (no organization named);
- P2's Schedule lists no place; an active role puts P2 at clinic B for organization B;
- P3 has no role at all, P5 only an inactive role at clinic A: neither works anywhere known;
- P4's role names no place but serves HealthcareService HS (at clinic A, provided by A);
- P6's Schedule lists clinic B, though P6 also has a role at clinic A: the Schedule decides.

Everyone shares one specialty code that nobody else on the server has, so the practitioners a
filter lets through are exactly the actors of the options it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tests.support.scheduling import (
    Json,
    actors,
    find,
    hours,
    put_all,
    schedule,
    template,
    uid,
)

SPECIALTY_SYSTEM = "http://example.org/specialty"
WINDOW = {"start": "2037-12-01T00:00:00Z", "end": "2037-12-02T00:00:00Z"}  # a Tuesday


@dataclass(frozen=True)
class World:
    key: str
    token: str

    def ref(self, kind: str, name: str) -> str:
        return f"{kind}/{name}-{self.key}"


def tuesday_schedule(sid: str, actor: str, *more_actors: str, key: str,
                     day: str = "tue") -> Json:
    body = schedule(sid, actor, template("America/New_York", hours([day], "09:00:00",
                                                                    "10:00:00")),
                    specialty=(SPECIALTY_SYSTEM, f"filters-{key}"))
    body["actor"] += [{"reference": a} for a in more_actors]
    return body


async def world(fhir: httpx.AsyncClient) -> World:
    key = uid()
    w = World(key, f"{SPECIALTY_SYSTEM}|filters-{key}")
    org_a, org_b = w.ref("Organization", "a"), w.ref("Organization", "b")
    loc_a, loc_b = w.ref("Location", "a"), w.ref("Location", "b")
    resources: list[Json] = [
        {"resourceType": "Organization", "id": f"a-{key}", "name": f"Org A {key}"},
        {"resourceType": "Organization", "id": f"b-{key}", "name": f"Org B {key}"},
        {"resourceType": "Location", "id": f"a-{key}", "name": f"Clinic Alpha {key}",
         "managingOrganization": {"reference": org_a}},
        {"resourceType": "Location", "id": f"b-{key}", "name": f"Clinic Beta {key}",
         "managingOrganization": {"reference": org_b}},
        {"resourceType": "HealthcareService", "id": f"hs-{key}", "active": True,
         "providedBy": {"reference": org_a}, "location": [{"reference": loc_a}]},
    ]
    for n in range(1, 7):
        resources.append({"resourceType": "Practitioner", "id": f"p{n}-{key}"})
    roles: list[Json] = [
        {"id": f"r1-{key}", "practitioner": {"reference": w.ref("Practitioner", "p1")},
         "location": [{"reference": loc_a}]},
        {"id": f"r2-{key}", "practitioner": {"reference": w.ref("Practitioner", "p2")},
         "organization": {"reference": org_b}, "location": [{"reference": loc_b}]},
        {"id": f"r4-{key}", "practitioner": {"reference": w.ref("Practitioner", "p4")},
         "healthcareService": [{"reference": w.ref("HealthcareService", "hs")}]},
        {"id": f"r5-{key}", "active": False,
         "practitioner": {"reference": w.ref("Practitioner", "p5")},
         "location": [{"reference": loc_a}]},
        {"id": f"r6-{key}", "practitioner": {"reference": w.ref("Practitioner", "p6")},
         "location": [{"reference": loc_a}]},
    ]
    resources += [{"resourceType": "PractitionerRole", **r} for r in roles]
    for n in range(1, 6):
        resources.append(tuesday_schedule(f"s{n}-{key}", w.ref("Practitioner", f"p{n}"),
                                          key=key))
    resources.append(tuesday_schedule(f"s6-{key}", w.ref("Practitioner", "p6"), loc_b,
                                      key=key))
    await put_all(fhir, *resources)
    return w


async def offered(fhir: httpx.AsyncClient, w: World, **filters: str) -> set[str]:
    options = await find(fhir, **WINDOW, specialty=w.token, _count=100, **filters)
    return {a.rsplit("/", 1)[1].split("-")[0] for o in options for a in actors(o)}


async def test_without_a_place_filter_everyone_is_offered(fhir: httpx.AsyncClient) -> None:
    w = await world(fhir)
    assert await offered(fhir, w) == {"p1", "p2", "p3", "p4", "p5", "p6"}


async def test_location_reference_places_people_through_roles_and_services(
    fhir: httpx.AsyncClient
) -> None:
    w = await world(fhir)
    assert await offered(fhir, w, location=w.ref("Location", "a")) == {"p1", "p4"}
    assert await offered(fhir, w, location=w.ref("Location", "b")) == {"p2", "p6"}


async def test_organization_places_people_through_roles_services_and_clinics(
    fhir: httpx.AsyncClient
) -> None:
    w = await world(fhir)
    # P1 by a role at a clinic A manages, P4 by a service A provides
    assert await offered(fhir, w, organization=w.ref("Organization", "a")) == {"p1", "p4"}
    # P2 by the role's organization, P6 by the clinic on the Schedule
    assert await offered(fhir, w, organization=w.ref("Organization", "b")) == {"p2", "p6"}


async def test_location_string_places_people_through_roles_and_services(
    fhir: httpx.AsyncClient
) -> None:
    w = await world(fhir)
    assert await offered(fhir, w, location_string=f"Clinic Alpha {w.key}") == {"p1", "p4"}
    assert await offered(fhir, w, location_string=f"Clinic Beta {w.key}") == {"p2", "p6"}


async def test_location_and_organization_must_both_hold(fhir: httpx.AsyncClient) -> None:
    w = await world(fhir)
    assert await offered(fhir, w, location=w.ref("Location", "a"),
                         organization=w.ref("Organization", "b")) == set()


async def test_a_role_confines_its_practitioner_to_the_roles_place(
    fhir: httpx.AsyncClient
) -> None:
    """practitioner=PractitionerRole/x: the role's own Schedule, and those of its practitioner
    that list one of the role's Locations (or none)."""
    key = uid()
    token = f"{SPECIALTY_SYSTEM}|filters-{key}"
    doc, role, clinic, other = (f"Practitioner/d-{key}", f"PractitionerRole/r-{key}",
                                f"Location/c-{key}", f"Location/o-{key}")
    await put_all(
        fhir,
        {"resourceType": "Practitioner", "id": f"d-{key}"},
        {"resourceType": "Location", "id": f"c-{key}", "name": "clinic"},
        {"resourceType": "Location", "id": f"o-{key}", "name": "elsewhere"},
        {"resourceType": "PractitionerRole", "id": f"r-{key}",
         "practitioner": {"reference": doc}, "location": [{"reference": clinic}]},
        tuesday_schedule(f"own-{key}", role, key=key, day="wed"),
        tuesday_schedule(f"here-{key}", doc, clinic, key=key, day="thu"),
        tuesday_schedule(f"there-{key}", doc, other, key=key, day="fri"),
    )
    week = {"start": "2037-12-01T00:00:00Z", "end": "2037-12-08T00:00:00Z"}
    options = await find(fhir, **week, specialty=token, practitioner=role, _count=100)
    days = {(o["start"][:10], actors(o)[0]) for o in options}
    assert days == {("2037-12-02", role), ("2037-12-03", doc)}  # Wednesday's and Thursday's
    everything = await find(fhir, **week, specialty=token, practitioner=doc, _count=100)
    assert {o["start"][:10] for o in everything} == {"2037-12-03", "2037-12-04"}
