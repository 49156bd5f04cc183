"""A small demo clinic: an organization, two locations, three practitioners, their schedules and
two weeks of free 30-minute slots. Loaded through the service layer (the same validation and
change log as any client), with identifiers so that loading twice changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from .compose import build
from .context import RequestContext
from .search.parse import query_for
from .settings import Settings

SYSTEM = "https://fhir-sched.org/demo"


def _ident(value: str) -> list[dict[str, str]]:
    return [{"system": SYSTEM, "value": value}]


def demo_resources(today: datetime | None = None) -> list[dict[str, Any]]:
    today = (today or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    res: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": "demo-clinic", "identifier": _ident("org-1"),
         "active": True, "name": "Riverside Family Clinic"},
        {"resourceType": "Location", "id": "demo-main", "identifier": _ident("loc-main"),
         "status": "active", "name": "Riverside Main Street",
         "telecom": [{"system": "phone", "value": "+1-217-555-0100"},
                     {"system": "url", "value": "https://riverside.example"}],
         "address": {"line": ["12 Main Street"], "city": "Springfield", "state": "IL",
                     "postalCode": "62701", "country": "US"},
         "managingOrganization": {"reference": "Organization/demo-clinic"}},
        {"resourceType": "Location", "id": "demo-north", "identifier": _ident("loc-north"),
         "status": "active", "name": "Riverside North",
         "telecom": [{"system": "phone", "value": "+1-217-555-0130"},
                     {"system": "url", "value": "https://riverside.example"}],
         "address": {"line": ["3 Hill Road"], "city": "Springfield", "state": "IL",
                     "postalCode": "62704", "country": "US"},
         "managingOrganization": {"reference": "Organization/demo-clinic"}},
        {"resourceType": "Patient", "id": "demo-patient", "identifier": _ident("mrn-1001"),
         "name": [{"family": "Müller", "given": ["Anna"]}], "gender": "female",
         "birthDate": "1984-05-02"},
    ]
    doctors = [("demo-dr-lee", "Lee", "Grace", "394814009", "General practice"),
               ("demo-dr-okafor", "Okafor", "Chidi", "394582007", "Dermatology"),
               ("demo-dr-silva", "Silva", "Rosa", "394537008", "Pediatric specialty")]
    for n, (pid, family, given, code, display) in enumerate(doctors):
        res.append({"resourceType": "Practitioner", "id": pid, "identifier": _ident(pid),
                    "active": True, "name": [{"family": family, "given": [given],
                                              "prefix": ["Dr."]}]})
        loc = "demo-main" if n % 2 == 0 else "demo-north"
        specialty = [{"coding": [{"system": "http://snomed.info/sct", "code": code,
                                  "display": display}]}]
        res.append({"resourceType": "PractitionerRole", "id": f"{pid}-role",
                    "identifier": _ident(f"{pid}-role"), "active": True,
                    "practitioner": {"reference": f"Practitioner/{pid}"},
                    "organization": {"reference": "Organization/demo-clinic"},
                    "location": [{"reference": f"Location/{loc}"}], "specialty": specialty})
        sched = f"{pid}-schedule"
        res.append({"resourceType": "Schedule", "id": sched, "identifier": _ident(sched),
                    "active": True, "specialty": specialty,
                    "actor": [{"reference": f"Practitioner/{pid}"},
                              {"reference": f"Location/{loc}"}],
                    "planningHorizon": {"start": today.isoformat(),
                                        "end": (today + timedelta(days=90)).isoformat()}})
        for day in range(14):
            date = today + timedelta(days=day)
            if date.weekday() >= 5:
                continue
            for half_hour in range(16):  # 09:00-17:00 UTC
                start = date + timedelta(hours=9, minutes=30 * half_hour)
                sid = f"{sched}-{start:%Y%m%d%H%M}"
                res.append({"resourceType": "Slot", "id": sid, "identifier": _ident(sid),
                            "schedule": {"reference": f"Schedule/{sched}"}, "status": "free",
                            "start": start.isoformat().replace("+00:00", "Z"),
                            "end": (start + timedelta(minutes=30)).isoformat().replace(
                                "+00:00", "Z")})
    return res


async def load_demo(settings: Settings) -> int:
    core = build(settings)
    store, service = core.store, core.services.resources
    await core.start()
    ctx = RequestContext.system("demo")
    created = 0
    try:
        for res in demo_resources():
            ident = res["identifier"][0]
            q = query_for(res["resourceType"], [("identifier", f"{SYSTEM}|{ident['value']}")])
            found = await store.search(q)
            if found.rows:
                continue
            saved = await service.update(ctx, res["resourceType"], res["id"], res)
            created += int(saved.created)
    finally:
        await core.close()
    return created
