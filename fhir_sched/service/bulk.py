"""Bulk data in and out: FHIR Bulk Data NDJSON export (one file per type) and an idempotent
import of NDJSON files or Bundles, both through the store and the one write pipeline.

Export reads each type's current, non-deleted resources a page at a time (keyset paging,
so memory stays one page whatever the store holds) and writes them as stored. Each page is
consistent; for one point-in-time copy of a running SQLite store use ``fhir-sched backup``.

Import writes each resource by its id, as a PUT would, with the system's own context (the
calendar of record: a booking that breaks a rule is recorded with a flag, not refused), so
every rule and index applies as for any client, and a rerun changes nothing: a resource whose
content equals what is stored is skipped, not versioned again. A resource without an id gets
one derived from its content, so the same input names the same resource on every run, which
is what makes an import killed half-way safe to run again. Types are written in reference
order (organizations and people before schedules, slots before appointments) so references
resolve; what still fails (a reference to a later resource of the same type) is retried once
at the end. Every refusal is reported with its file, line and reason.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import orjson

from ..context import RequestContext
from ..errors import FhirError
from ..query import Query
from ..resources.registry import HOSTED_TYPES
from ..search.compartment import PATIENT_COMPARTMENT
from ..search.extract import reference_targets
from ..search.parse import parse_search
from ..storage.base import DocumentStore, Unit
from ..storage.errors import StoreError, StoreUnavailable
from .resources import ResourceService

PAGE = 1000
# Units in flight at once. SQLite's writer commits concurrent units in groups, so many in
# flight is many per commit; on MongoDB every write still touches the one sequence document,
# so concurrent units only conflict there (see the MongoDB numbering item of issue 13).
IN_FLIGHT = 32
IN_FLIGHT_MONGODB = 1
MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_JSON_FILE_BYTES = 256 * 1024 * 1024  # a Bundle or resource file, parsed in one piece
CHUNK = 5000  # items an import holds in memory at once

# Referenced before referencing: what each type points at is written before it.
ORDER = ("Organization", "Location", "Practitioner", "HealthcareService", "PractitionerRole",
         "Patient", "RelatedPerson", "Device", "Endpoint", "Coverage", "CoverageEligibilityRequest",
         "CoverageEligibilityResponse", "ServiceRequest", "Schedule", "Slot", "Appointment",
         "AppointmentResponse", "CommunicationRequest", "Communication")


def export_types(only: Iterable[str] | None = None) -> list[str]:
    """The hosted types to export (all of them, or ``only``), in reference order."""
    if only is None:
        wanted = list(HOSTED_TYPES)
    else:
        wanted = list(dict.fromkeys(only))
        unknown = [t for t in wanted if t not in HOSTED_TYPES]
        if unknown:
            raise ValueError(f"not a type this server holds: {', '.join(unknown)}")
    return sorted(wanted, key=_rank)


def in_some_patient_compartment(type_: str, body: bytes) -> bool:
    """For a Patient-level export: a Patient, or a resource some patient's compartment holds."""
    if type_ == "Patient":
        return True
    resource = orjson.loads(body)
    return any(ref.startswith("Patient/") for p in PATIENT_COMPARTMENT.get(type_, ())
               for ref in reference_targets(type_, p, resource))


def import_paths(paths: Iterable[Path]) -> list[Path]:
    """Files in reference order of the type their name says (``Slot.ndjson`` after
    ``Schedule.ndjson``, as an export writes them); other names after, as given."""
    def key(p: Path) -> tuple[int, str]:
        stem = p.name.split(".", 1)[0]
        return _rank(stem) if stem in HOSTED_TYPES else (len(ORDER) + 1, "")
    return sorted(paths, key=key)


def _rank(type_: str) -> tuple[int, str]:
    return (ORDER.index(type_) if type_ in ORDER else len(ORDER), type_)


async def resources_of(store: DocumentStore, type_: str, since: str | None = None
                       ) -> AsyncIterator[bytes]:
    """Every current resource of ``type_`` as its stored JSON bytes, page by page."""
    query = Query(type_, count=PAGE)
    if since:
        query = parse_search(type_, [("_lastUpdated", f"ge{since}")], strict=True,
                             default_count=PAGE, max_count=PAGE).query
    while True:
        page = await store.search(query)
        for _id, body in page.rows:
            yield body
        if page.next_after is None or not page.rows:
            return
        query = replace(query, after=page.next_after)


async def export_ndjson(store: DocumentStore, directory: Path, types: list[str],
                        since: str | None = None,
                        progress: Callable[[str, int], None] | None = None,
                        keep: Callable[[str, bytes], bool] | None = None) -> dict[str, int]:
    """Write ``<Type>.ndjson`` for each type that has resources (that ``keep`` keeps); the
    count per type. Files are written under a temporary name and renamed, so a reader never
    sees half. The file writes are small and buffered; a page's worth at a time."""
    directory.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for type_ in types:
        target = directory / f"{type_}.ndjson"
        partial = directory / f".{type_}.ndjson.partial"
        n = 0
        with open(partial, "wb") as out:
            async for body in resources_of(store, type_, since):
                if keep is not None and not keep(type_, body):
                    continue
                out.write(body)
                out.write(b"\n")
                n += 1
                if progress is not None and n % PAGE == 0:
                    progress(type_, n)
        if n:
            partial.replace(target)
            counts[type_] = n
        else:
            partial.unlink()
        if progress is not None:
            progress(type_, n)
    return counts


# -- import ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """One resource to import and where it came from (for the report)."""

    where: str  # "file:line" or "file#entry"
    type: str
    id: str
    body: dict[str, Any]


@dataclass(slots=True)
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged + len(self.refused)


def content_id(body: dict[str, Any]) -> str:
    """A stable id for a resource given without one: the same content, the same id."""
    canonical = orjson.dumps({k: v for k, v in body.items() if k not in ("id", "meta")},
                             option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:32]


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def read_items(paths: Iterable[Path]) -> Iterator[Item | tuple[str, str]]:
    """Items from NDJSON files (``.ndjson``, ``.ndjson.gz``) and JSON files holding a Bundle
    or one resource; a line or entry that is not a resource yields ``(where, reason)``."""
    for path in paths:
        name = path.name
        if name.endswith((".ndjson", ".ndjson.gz", ".jsonl")):
            with _open(path) as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    where = f"{name}:{n}"
                    if len(line) > MAX_LINE_BYTES:
                        yield where, f"the line is over {MAX_LINE_BYTES} bytes"
                        continue
                    try:
                        yield _item(where, orjson.loads(line))
                    except (orjson.JSONDecodeError, ValueError) as exc:
                        yield where, _reason(exc)
            continue
        try:
            with _open(path) as fh:
                raw = fh.read(MAX_JSON_FILE_BYTES + 1)
            if len(raw) > MAX_JSON_FILE_BYTES:
                yield name, (f"a JSON file is read whole, and this one is over "
                             f"{MAX_JSON_FILE_BYTES // 2**20} MB: give it as NDJSON, one "
                             "resource per line")
                continue
            doc = orjson.loads(raw)
        except (OSError, orjson.JSONDecodeError) as exc:
            yield name, _reason(exc)
            continue
        if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
            for n, entry in enumerate(doc.get("entry") or [], 1):
                where = f"{name}#entry{n}"
                resource = entry.get("resource") if isinstance(entry, dict) else None
                try:
                    yield _item(where, resource, _bundle_id(entry))
                except ValueError as exc:
                    yield where, str(exc)
        else:
            try:
                yield _item(name, doc)
            except ValueError as exc:
                yield name, str(exc)


def _reason(exc: Exception) -> str:
    if isinstance(exc, orjson.JSONDecodeError):
        return f"not JSON: {exc.msg} at character {exc.pos}"
    return str(exc)


def _bundle_id(entry: Any) -> str | None:
    """The id a transaction entry's ``PUT Type/id`` names, when the resource has none."""
    request = entry.get("request") if isinstance(entry, dict) else None
    if not isinstance(request, dict):
        return None
    url = request.get("url")
    if isinstance(url, str) and request.get("method") == "PUT" and "?" not in url:
        parts = url.strip("/").split("/")
        if len(parts) == 2:
            return parts[1]
    return None


def _item(where: str, body: Any, fallback_id: str | None = None) -> Item:
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise ValueError("not a FHIR resource (no resourceType)")
    type_ = body["resourceType"]
    if type_ not in HOSTED_TYPES:
        raise ValueError(f"{type_} is not a type this server holds")
    id_ = body.get("id") or fallback_id or content_id(body)
    if not isinstance(id_, str):
        raise ValueError("id must be a string")
    return Item(where, type_, id_, {**body, "id": id_})


def _same(stored: dict[str, Any], incoming: dict[str, Any]) -> bool:
    def strip(b: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (b.get("meta") or {}).items()
                if k not in ("versionId", "lastUpdated")}
        out = {k: v for k, v in b.items() if k != "meta"}
        if meta:
            out["meta"] = meta
        return out
    return strip(stored) == strip(incoming)


class Importer:
    """Write items through the pipeline, idempotently; ``report`` says what happened."""

    def __init__(self, resources: ResourceService, job: str = "import",
                 in_flight: int = IN_FLIGHT) -> None:
        self.resources = resources
        self.in_flight = in_flight
        self.ctx = RequestContext.system(job)
        self.report = ImportReport()

    async def run(self, items: Iterable[Item | tuple[str, str]],
                  progress: Callable[[int], None] | None = None) -> ImportReport:
        """In chunks of CHUNK items, each written in reference order of its types, so memory
        stays a chunk's worth whatever the input holds (inputs are best given in reference
        order too, as ``import_paths`` sorts Bulk Data files). What failed on a reference
        not yet written is tried again at the end, once."""
        retry: list[Item] = []
        chunk: list[Item] = []
        for it in items:
            if not isinstance(it, Item):
                self.report.refused.append(it)
                continue
            chunk.append(it)
            if len(chunk) >= CHUNK:
                retry += await self._write_chunk(chunk, progress)
                chunk = []
        retry += await self._write_chunk(chunk, progress)
        if retry:
            await self._write_all(retry, progress, final=True)
        return self.report

    async def _write_chunk(self, chunk: list[Item], progress: Callable[[int], None] | None
                           ) -> list[Item]:
        by_type: dict[str, list[Item]] = {}
        for it in chunk:
            by_type.setdefault(it.type, []).append(it)
        later: list[Item] = []
        for type_ in sorted(by_type, key=_rank):
            later += await self._write_all(by_type[type_], progress, final=False)
        return later

    async def _write_all(self, items: list[Item], progress: Callable[[int], None] | None,
                         final: bool) -> list[Item]:
        gate = asyncio.Semaphore(self.in_flight)
        later: list[Item] = []

        async def one(item: Item) -> None:
            async with gate:
                try:
                    outcome = await self._write_retrying(item)
                except StoreError as exc:
                    self.report.refused.append((item.where, f"store error: {type(exc).__name__}"))
                    return
                except FhirError as exc:
                    if not final and exc.status == 422 and "not-found" in exc.code:
                        later.append(item)  # a reference written later in this run
                        return
                    self.report.refused.append((item.where, exc.diagnostics))
                else:
                    if outcome == "created":
                        self.report.created += 1
                    elif outcome == "updated":
                        self.report.updated += 1
                    else:
                        self.report.unchanged += 1
                if progress is not None:
                    progress(1)

        await asyncio.gather(*(one(it) for it in items))
        return later

    async def _write_retrying(self, item: Item) -> str:
        """A unit that lost to others (busy store, write conflicts) is tried again, a few
        times, before the item is reported; a rerun picks up whatever is left."""
        for attempt in range(3):
            try:
                return await self._write(item)
            except StoreUnavailable:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _write(self, item: Item) -> str:
        body = self.resources.prepare(item.type, item.body, item.id)

        async def run(unit: Unit) -> str:
            prev = await unit.get(item.type, item.id)
            if prev is not None and not prev.deleted and prev.body is not None and _same(
                    orjson.loads(prev.body), body):
                return "unchanged"
            saved = await self.resources.put_in_unit(unit, self.ctx, item.type, item.id, body)
            return "created" if saved.created else "updated"

        return await self.resources.atomic(run)
