"""SMART Scheduling Links: the published Locations, Schedules and Slots, made as files.

A publication is the chosen Schedules (``FHIR_SCHED_PUBLISH``) with their Locations and
their slots for the next ``FHIR_SCHED_PUBLISH_DAYS`` days, each slot free or busy by the
guard's rule (``scheduling/publishing.py``). It is made on demand and then served as stored
bytes: slot finders poll the manifest every minute or so, and a thousand of them must cost one
publication, not a thousand. A new one is made when the served one is older than
``FHIR_SCHED_PUBLISH_REFRESH_SECONDS`` and something it shows could have changed (a write to
the store, a slot whose start has passed, a new day); otherwise the same bytes, the same
ETags, 304s.

What is published is public by design (the spec's "open, publicly accessible endpoints"), so
it is built to hold no patient data: Schedules of a Patient or RelatedPerson are never
published, a Schedule is cut to its service, specialty and actors, a Location to its directory
details, and a slot says only free or busy.

Where the data cannot meet the profiles (a Location with no address, a Schedule with no
Location) the publication still goes out, and the manifest's ``error`` file says what is
missing, as an OperationOutcome per problem: the clinic sees it, and finders see what there is.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson

from ..query import AnyOf, Cond, Entry, Query
from ..scheduling.publishing import PublishedSlot, published_slots
from ..settings import Settings
from ..storage.base import DocumentStore
from ..timeutil import format_instant
from .find import FindService, Published

SMART = "http://fhir-registry.smarthealthit.org/StructureDefinition/"
DEEP_LINK = SMART + "booking-deep-link"
PHONE = SMART + "booking-phone"
CAPACITY = SMART + "slot-capacity"
MAX_SCHEDULES = 10_000
_PRIVATE = ("Patient/", "RelatedPerson/")
_CHUNK = 200
_SINCE_CHANGES = 10_000  # changes read to answer _since; more, and _since is ignored
_SINCE_DELETES = 500  # deleted resources looked up to place them; more, the same
_SINCE_KEPT = 32


@dataclass(frozen=True, slots=True)
class File:
    name: str  # "Slot-MA.ndjson"
    type: str  # "Location", "Schedule", "Slot" or "OperationOutcome"
    states: tuple[str, ...]
    body: bytes
    etag: str


@dataclass(slots=True)
class Publication:
    made: str  # transactionTime
    made_at: float  # time.monotonic() when made
    position: int  # the change feed's head it was made at
    day: date
    next_start: datetime | None  # the first published slot's start: past it, remake
    files: dict[str, File]
    # what _since picks from: each line with the schedule(s) it belongs to and its own time
    locations: list[tuple[str, str, bytes]] = field(default_factory=list)  # (ref, updated, line)
    schedules: list[tuple[str, str, bytes]] = field(default_factory=list)  # (id, updated, line)
    slots: dict[str, list[bytes]] = field(default_factory=dict)  # schedule id -> lines
    state_of: dict[str, str] = field(default_factory=dict)  # schedule id -> state ("" unknown)
    actors_of: dict[str, tuple[str, ...]] = field(default_factory=dict)  # schedule id -> refs
    # _since answers already made from this publication, by instant (None: serve it all):
    # anonymous pollers asking the same _since cost one history read, not one per file
    cuts: dict[str, dict[str, File] | None] = field(default_factory=dict)


class Publisher:
    def __init__(self, store: DocumentStore, find: FindService, settings: Settings) -> None:
        self.store = store
        self.find = find
        self.settings = settings
        self._current: Publication | None = None
        self._lock = asyncio.Lock()
        self.selectors = frozenset(s.strip() for s in settings.publish.split(",") if s.strip())

    @property
    def enabled(self) -> bool:
        return bool(self.selectors)

    async def current(self) -> Publication:
        """The publication to serve now (made again first when it may be out of date); one
        making at a time, so a crowd of pollers waits for one publication."""
        pub = self._current
        if pub is not None and not await self._stale(pub):
            return pub
        async with self._lock:
            pub = self._current
            if pub is None or await self._stale(pub):
                pub = self._current = await self._make()
            return pub

    async def _stale(self, pub: Publication) -> bool:
        if time.monotonic() - pub.made_at < self.settings.publish_refresh_seconds:
            return False
        now = datetime.now(UTC)
        return (pub.day != now.date() or (pub.next_start is not None and now >= pub.next_start)
                or await self.store.last_position() != pub.position)

    async def since(self, pub: Publication, since: str) -> dict[str, File] | None:
        """The publication cut to what changed at or after ``since`` (a ``format_instant``
        instant), or None when that cannot be told and everything is to be served: Locations
        and Schedules updated since, and all the slots of every Schedule whose resource,
        Appointments or Slots changed since (a finder replaces that Schedule's slots). Days
        that came into the window by the passing of time are in full publications only."""
        records = await self.store.history(None, None, since, _SINCE_CHANGES + 1, None)
        if len(records) > _SINCE_CHANGES:
            return None
        seen: list[tuple[str, dict[str, Any] | None]] = []
        for rec in records:
            if rec.type not in ("Appointment", "Slot", "Schedule"):
                continue
            body = rec.body
            if body is None and rec.version > 1:  # a delete: what it was, to place it
                before = await self.store.get_version(rec.type, rec.id, rec.version - 1)
                body = before.body if before is not None else None
            seen.append((rec.type, orjson.loads(body) if body else None))
        touched = changed_schedules(pub, seen)
        if touched is None:
            return None
        part = Publication(pub.made, pub.made_at, pub.position, pub.day, pub.next_start, {},
                          [x for x in pub.locations if x[1] >= since],
                          [x for x in pub.schedules if x[1] >= since or x[0] in touched],
                          {sid: lines for sid, lines in pub.slots.items() if sid in touched},
                          pub.state_of, pub.actors_of)
        return _files(part, [])

    # ------------------------------------------------------------------ making one

    async def _make(self) -> Publication:
        position = await self.store.last_position()
        now = datetime.now(UTC)
        lo = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        hi = lo + timedelta(days=self.settings.publish_days)
        problems: list[dict[str, Any]] = []
        rows = await self._chosen(problems)
        published = await self.find.calendars_of(rows, lo, hi)
        places = await self._places(published)
        locations = await self._locations(places, problems)
        pub = Publication(format_instant(now), time.monotonic(), position, now.date(), None, {})
        slot_lines, next_start, shown = await asyncio.to_thread(
            self._slot_lines, published, places, locations, lo, hi, problems)
        pub.next_start = next_start
        for item in published:
            sid = item.schedule["id"]
            if sid not in shown:
                continue
            loc = places.get(sid, ())
            pub.state_of[sid] = next((locations[r][2] for r in loc if r in locations), "")
            pub.actors_of[sid] = (*loc, item.actor)
            pub.slots[sid] = slot_lines.get(sid, [])
            pub.schedules.append((sid, _updated(item.schedule),
                                  _line(self._schedule(item, loc, locations, problems))))
        used = {r for sid in pub.slots for r in places.get(sid, ())}
        pub.locations = [(ref, updated, line) for ref, (line, updated, _s) in
                         sorted(locations.items()) if ref in used]
        pub.files = _files(pub, problems)
        return pub

    async def _chosen(self, problems: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
        page = await self.store.search(Query("Schedule", count=MAX_SCHEDULES + 1))
        rows = list(page.rows)
        if len(rows) > MAX_SCHEDULES:
            rows = rows[:MAX_SCHEDULES]
            problems.append(_problem("too-costly", f"more than {MAX_SCHEDULES} Schedules; only "
                                     f"the first {MAX_SCHEDULES} are considered"))
        out = []
        for sid, body in rows:
            sched = orjson.loads(body)
            actors = [str((a or {}).get("reference", "")) for a in sched.get("actor") or []
                      if isinstance(a, dict)]
            if sched.get("active") is False or any(a.startswith(_PRIVATE) for a in actors):
                continue
            if "all" in self.selectors or f"Schedule/{sid}" in self.selectors or any(
                    a in self.selectors for a in actors):
                out.append((sid, body))
        return out

    async def _places(self, published: list[Published]) -> dict[str, tuple[str, ...]]:
        """Each Schedule's Locations: its own Location actors; else those of its
        PractitionerRole and HealthcareService actors; else those of its Practitioner's active
        PractitionerRoles (the places the finder shows it at)."""
        out: dict[str, tuple[str, ...]] = {}
        wanted: dict[str, set[str]] = {}
        for item in published:
            refs = _refs(item.schedule.get("actor"))
            own = tuple(r for r in refs if r.startswith("Location/"))
            if own:
                out[item.schedule["id"]] = own
            else:
                wanted[item.schedule["id"]] = {r for r in refs if r.startswith(
                    ("PractitionerRole/", "HealthcareService/", "Practitioner/"))}
        if not wanted:
            return out
        refs_needed = sorted({r for rs in wanted.values() for r in rs})
        found: dict[str, list[str]] = {}
        for type_, param in (("PractitionerRole", "_id"), ("HealthcareService", "_id"),
                             ("PractitionerRole", "practitioner")):
            prefix = "Practitioner/" if param == "practitioner" else type_ + "/"
            asked = [r for r in refs_needed if r.startswith(prefix)]
            for n in range(0, len(asked), _CHUNK):
                chunk = asked[n:n + _CHUNK]
                values = [r.split("/", 1)[1] if param == "_id" else r for r in chunk]
                q = Query(type_, (AnyOf(tuple(Entry(param, (Cond("val", "=", v),))
                                             for v in values)),), count=10_000)
                for rid, body in (await self.store.search(q)).rows:
                    res = orjson.loads(body)
                    if res.get("active") is False:
                        continue
                    key = (f"{type_}/{rid}" if param == "_id"
                           else str((res.get("practitioner") or {}).get("reference", "")))
                    found.setdefault(key, []).extend(_refs(res.get("location")))
        for sid, refs_of in wanted.items():
            out[sid] = tuple(sorted({loc for r in refs_of for loc in found.get(r, [])}))
        return out

    async def _locations(self, places: dict[str, tuple[str, ...]],
                         problems: list[dict[str, Any]]) -> dict[str, tuple[bytes, str, str]]:
        """(line, lastUpdated, state) of each Location a published Schedule is at."""
        refs = sorted({r for rs in places.values() for r in rs})
        out: dict[str, tuple[bytes, str, str]] = {}
        for n in range(0, len(refs), _CHUNK):
            ids = [r.split("/", 1)[1] for r in refs[n:n + _CHUNK]]
            q = Query("Location", (AnyOf(tuple(Entry("_id", (Cond("val", "=", i),))
                                              for i in ids)),), count=len(ids))
            for lid, body in (await self.store.search(q)).rows:
                loc = orjson.loads(body)
                shown = _location(loc)
                problems.extend(_location_gaps(shown))
                state = str((shown.get("address") or {}).get("state") or "")
                out[f"Location/{lid}"] = (_line(shown), _updated(loc), state)
        return out

    def _slot_lines(self, published: list[Published], places: dict[str, tuple[str, ...]],
                    locations: dict[str, tuple[bytes, str, str]], lo: datetime, hi: datetime,
                    problems: list[dict[str, Any]]
                    ) -> tuple[dict[str, list[bytes]], datetime | None, set[str]]:
        """Every published Schedule's slot lines (in a thread: this is the CPU part), within
        the slot bound; the earliest start; the Schedules shown."""
        limit = self.settings.publish_max_slots
        phones = {ref: _phone(orjson.loads(line)) for ref, (line, _u, _s) in locations.items()}
        out: dict[str, list[bytes]] = {}
        shown: set[str] = set()
        first: datetime | None = None
        total = 0
        link = self.settings.booking_link
        for item in published:
            sid = item.schedule["id"]
            slots = published_slots(item.calendar, lo, hi)
            if total + len(slots) > limit:
                problems.append(_problem("too-costly", f"more than {limit} slots: Schedule/{sid} "
                                         "and those after it are left out "
                                         "(FHIR_SCHED_PUBLISH_MAX_SLOTS)"))
                break
            total += len(slots)
            shown.add(sid)
            phone = next((phones[r] for r in places.get(sid, ()) if phones.get(r)),
                         None) or self.settings.booking_phone
            lines = out[sid] = []
            for slot in slots:
                lines.append(_line(_slot(sid, slot, item, link, phone)))
                if first is None or slot.start < first:
                    first = slot.start
        return out, first, shown

    def _schedule(self, item: Published, locations: Iterable[str],
                  known: dict[str, tuple[bytes, str, str]], problems: list[dict[str, Any]]
                  ) -> dict[str, Any]:
        sched = item.schedule
        out: dict[str, Any] = {"resourceType": "Schedule", "id": sched["id"]}
        if "lastUpdated" in (sched.get("meta") or {}):
            out["meta"] = {"lastUpdated": sched["meta"]["lastUpdated"]}
        out["active"] = True
        service = sched.get("serviceType") or []
        if not service:
            # The profiles need a service; a Schedule that offers any visit type says what
            # its specialty is (text only: no code is claimed that the Schedule does not list)
            words = [c.get("text") or next((d.get("display") for d in c.get("coding") or []
                                            if d.get("display")), None)
                     for c in sched.get("specialty") or []]
            service = [{"text": w} for w in words if w] or [{"text": "Appointment"}]
        out["serviceType"] = service
        if sched.get("specialty"):
            out["specialty"] = sched["specialty"]
        actors = [a for a in sched.get("actor") or [] if isinstance(a, dict)
                  and str(a.get("reference", "")).startswith(_SHOWN_ACTORS)]
        listed = {a.get("reference") for a in actors}
        actors += [{"reference": r} for r in locations if r not in listed]
        for a in actors:
            ref = str(a.get("reference"))
            if ref in known and "display" not in a:
                name = orjson.loads(known[ref][0]).get("name")
                if name:
                    a["display"] = name
        out["actor"] = [{k: a[k] for k in ("reference", "display") if k in a} for a in actors]
        if not any(str(a.get("reference")).startswith("Location/") for a in actors):
            problems.append(_problem("incomplete", f"Schedule/{sched['id']} is at no Location "
                                     "(no Location actor, and none on its roles or services)",
                                     f"Schedule/{sched['id']}"))
        return out


_SHOWN_ACTORS = ("Practitioner/", "PractitionerRole/", "Location/", "HealthcareService/",
                 "Device/")
_LOCATION_KEEP = ("identifier", "status", "name", "alias", "description", "telecom", "address",
                  "position", "managingOrganization")


def _location(loc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Location", "id": loc["id"]}
    if "lastUpdated" in (loc.get("meta") or {}):
        out["meta"] = {"lastUpdated": loc["meta"]["lastUpdated"]}
    for key in _LOCATION_KEEP:
        if key in loc:
            out[key] = loc[key]
    if isinstance(out.get("telecom"), list):  # directory contacts only: phone, url, email
        out["telecom"] = [t for t in out["telecom"] if isinstance(t, dict)
                          and t.get("system") in ("phone", "url", "email")]
        if not out["telecom"]:
            del out["telecom"]
    return out


def _location_gaps(loc: dict[str, Any]) -> list[dict[str, Any]]:
    """What the SMART Scheduling Links Location profile needs and this Location lacks."""
    ref = f"Location/{loc['id']}"
    missing = [] if loc.get("name") else ["name"]
    if not any(t.get("system") == "phone" and t.get("value") for t in loc.get("telecom") or []):
        missing.append("telecom (a phone)")
    address: dict[str, Any] = loc["address"] if isinstance(loc.get("address"), dict) else {}
    missing += [f"address.{k}" for k in ("line", "city", "state", "postalCode")
                if not address.get(k)]
    return [_problem("incomplete", f"{ref} lacks {', '.join(missing)}", ref)] if missing else []


def _phone(loc: dict[str, Any]) -> str | None:
    return next((str(t["value"]) for t in loc.get("telecom") or []
                 if t.get("system") == "phone" and t.get("value")), None)


def _slot(sid: str, slot: PublishedSlot, item: Published, link: str, phone: str | None
          ) -> dict[str, Any]:
    start, end = slot.start.astimezone(item.zone), slot.end.astimezone(item.zone)
    slot_id = slot.slot_id or slot_key(sid, slot.start)
    out: dict[str, Any] = {"resourceType": "Slot", "id": slot_id,
                           "schedule": {"reference": f"Schedule/{sid}"},
                           "status": "free" if slot.free else "busy",
                           "start": start.isoformat(), "end": end.isoformat()}
    ext: list[dict[str, Any]] = []
    if slot.free and link:
        ext.append({"url": DEEP_LINK, "valueUrl": link.format(
            schedule=quote(sid, safe=""), start=quote(start.isoformat(), safe=""),
            end=quote(end.isoformat(), safe=""), slot=quote(slot_id, safe=""))})
    if slot.free and phone:
        ext.append({"url": PHONE, "valueString": phone})
    if slot.free and item.capacity > 1:
        ext.append({"url": CAPACITY, "valueInteger": slot.left})
    if ext:
        out["extension"] = ext
    return out


def slot_key(schedule_id: str, start: datetime) -> str:
    """A published template slot's id: the same slot keeps its id from one publication to
    the next (finders diff by id), within the 64 characters the profile allows."""
    digest = hashlib.blake2b(schedule_id.encode(), digest_size=6).hexdigest()
    return f"{start.astimezone(UTC):%Y%m%dT%H%M}-{digest}"


def _files(pub: Publication, problems: list[dict[str, Any]]) -> dict[str, File]:
    states = sorted({s for s in pub.state_of.values() if s})
    files = [_file("Location.ndjson", "Location", tuple(states),
                   [line for _r, _u, line in pub.locations]),
             _file("Schedule.ndjson", "Schedule", tuple(states),
                   [line for _i, _u, line in pub.schedules])]
    # One Slot file per state (when the Schedules are in more than one), so a finder that
    # serves one region fetches only its own; the split depends on the whole publication,
    # so a _since cut names its files as the full one does.
    groups = sorted(set(pub.state_of.values()))
    by_state: dict[str, list[bytes]] = {g: [] for g in groups}
    for sid, lines in pub.slots.items():
        by_state[pub.state_of.get(sid, "")].extend(lines)
    if len(groups) <= 1:
        files.append(_file("Slot.ndjson", "Slot", tuple(states),
                           next(iter(by_state.values()), [])))
    else:
        for state in sorted(by_state):
            name = f"Slot-{_safe(state)}.ndjson" if state else "Slot-other.ndjson"
            files.append(_file(name, "Slot", (state,) if state else (), by_state[state]))
    if problems:
        files.append(_file("OperationOutcome.ndjson", "OperationOutcome", (),
                           [_line(p) for p in problems]))
    return {f.name: f for f in files}


def _file(name: str, type_: str, states: tuple[str, ...], lines: list[bytes]) -> File:
    body = b"".join(lines)
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    return File(name, type_, states, body, etag)


def changed_schedules(pub: Publication, records: Iterable[tuple[str, dict[str, Any] | None]]
                      ) -> set[str] | None:
    """Schedules whose slots a list of changed resources may have moved; None when one of
    them cannot be placed (a deleted Appointment: its participants are gone with it)."""
    touched: set[str] = set()
    for type_, body in records:
        if body is None:
            return None
        if type_ == "Slot":
            ref = str((body.get("schedule") or {}).get("reference", ""))
            touched.add(ref.removeprefix("Schedule/"))
        elif type_ == "Schedule":
            touched.add(str(body.get("id")))
        else:  # an Appointment: every participant's calendars
            for p in body.get("participant") or []:
                touched.add("actor:" + str(((p or {}).get("actor") or {}).get("reference", "")))
    out = {sid for sid in pub.slots if sid in touched}
    actors = {t.removeprefix("actor:") for t in touched if t.startswith("actor:")}
    out |= {sid for sid, refs in pub.actors_of.items() if actors & set(refs)}
    return out


def _refs(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    return [str(i.get("reference")) for i in items if isinstance(i, dict) and i.get("reference")]


def _updated(res: dict[str, Any]) -> str:
    return str((res.get("meta") or {}).get("lastUpdated") or "")


def _line(res: dict[str, Any]) -> bytes:
    return orjson.dumps(res) + b"\n"


def _safe(state: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", state)[:32]


def _problem(code: str, text: str, where: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "warning", "code": code, "diagnostics": text}
    if where:
        issue["expression"] = [where]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


