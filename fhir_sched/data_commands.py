"""``fhir-sched backup``, ``export`` and ``import``: getting data out of and into a store.

Each works on a running server's store as well as a stopped one: backup through SQLite's
online backup, export by reading pages, import through the same write pipeline (and so the
same locks, rules and change feed) as the server's own writes. On a terminal they show a
progress bar (rich); elsewhere they print one summary line, so a cron job's mail stays short.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .settings import Settings

MONGO_BACKUP = """\
A MongoDB store is backed up with MongoDB's own tools, which know its replica set:
  mongodump --uri "{url}" --oplog --gzip --archive=fhir-sched-$(date +%F).gz
(--oplog makes the dump one point in time while the server keeps writing; restore with
mongorestore --oplogReplay --gzip --archive=...). Managed services (Atlas, DocumentDB) take
snapshots on their own schedule. For a portable copy of the data alone, use
  fhir-sched export --store "{url}" --to DIR
"""


def backup_command(args: argparse.Namespace) -> int:
    settings = Settings.from_env(store=args.store)
    url = settings.store
    if url.startswith(("mongodb://", "mongodb+srv://")):
        scheme, _, rest = url.partition("://")
        print(MONGO_BACKUP.format(url=f"{scheme}://{rest.rpartition('@')[2]}"),
              file=sys.stderr)  # without the credentials: this goes to a terminal or a log
        return 2
    from .storage.sqlite import path_from_url
    from .storage.sqlite.backup import BackupError, backup

    try:
        result = backup(Path(path_from_url(url)), Path(args.to), overwrite=args.force)
    except BackupError as exc:
        print(f"backup: {exc}", file=sys.stderr)
        return 1
    print(f"backup of {url} written to {result.path}: {result.bytes} bytes, "
          f"{result.resources} resources, integrity ok")
    return 0


@contextmanager
def _bar(label: str, total: int | None) -> Iterator[Any]:
    """A rich progress bar on a terminal; None elsewhere."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def export_command(args: argparse.Namespace) -> int:
    from .compose import build
    from .service.bulk import export_ndjson, export_types

    settings = Settings.from_env(store=args.store)
    try:
        types = export_types(args.type.split(",") if args.type else None)
    except ValueError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2

    async def run() -> dict[str, int]:
        core = build(settings)
        await core.start()
        try:
            with _bar("exporting", None) as advance:
                seen: dict[str, int] = {}

                def progress(type_: str, n: int) -> None:
                    if advance is not None:
                        advance(n - seen.get(type_, 0))
                    seen[type_] = n

                return await export_ndjson(core.store, Path(args.to), types, args.since,
                                           progress)
        finally:
            await core.close()

    counts = asyncio.run(run())
    total = sum(counts.values())
    detail = ", ".join(f"{t} {n}" for t, n in counts.items()) or "nothing to export"
    print(f"exported {total} resources to {args.to} ({detail})")
    return 0


def _inputs(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")
                          and q.name.endswith((".ndjson", ".ndjson.gz", ".jsonl", ".json")))
        else:
            out.append(p)
    return out


def import_command(args: argparse.Namespace) -> int:
    from .compose import build
    from .service.bulk import (
        IN_FLIGHT,
        IN_FLIGHT_MONGODB,
        Importer,
        ImportReport,
        import_paths,
        read_items,
    )

    settings = Settings.from_env(store=args.store)
    paths = import_paths(_inputs(args.files))
    missing = [str(p) for p in paths if not p.exists()]
    if missing or not paths:
        print(f"import: no such file: {', '.join(missing) or 'none given'}", file=sys.stderr)
        return 2

    async def run() -> ImportReport:
        core = build(settings)
        await core.start()
        try:
            with _bar("importing", None) as advance:
                flight = IN_FLIGHT_MONGODB if settings.store.startswith("mongodb") else IN_FLIGHT
                return await Importer(core.services.resources, in_flight=flight).run(
                    read_items(paths), advance)
        finally:
            await core.close()

    report = asyncio.run(run())
    print(f"imported {report.total} entries from {len(paths)} file(s): {report.created} "
          f"created, {report.updated} updated, {report.unchanged} unchanged, "
          f"{len(report.refused)} refused")
    for where, reason in report.refused[:20]:
        print(f"  {where}: {reason}", file=sys.stderr)
    if len(report.refused) > 20:
        print(f"  ... and {len(report.refused) - 20} more", file=sys.stderr)
    return 1 if report.refused else 0


def add_parsers(sub: Any) -> None:
    backup = sub.add_parser("backup", help="a consistent copy of a SQLite store, safe while "
                            "the server runs (MongoDB: prints how to back it up)")
    backup.add_argument("--store", default=None, help="the store, as for serve")
    backup.add_argument("--to", required=True, help="the file to write")
    backup.add_argument("--force", action="store_true", help="replace an existing file")
    backup.set_defaults(fn=backup_command)
    export = sub.add_parser("export", help="FHIR Bulk Data NDJSON, one file per type")
    export.add_argument("--store", default=None, help="the store, as for serve")
    export.add_argument("--to", required=True, help="the directory to write <Type>.ndjson to")
    export.add_argument("--type", default=None, help="only these types (comma-separated)")
    export.add_argument("--since", default=None,
                        help="only resources changed at or after this instant")
    export.set_defaults(fn=export_command)
    imp = sub.add_parser("import", help="load NDJSON files or Bundles (idempotent: a rerun "
                         "changes nothing)")
    imp.add_argument("files", nargs="+", help="files (.ndjson, .ndjson.gz, .json Bundles or "
                     "resources) or directories of them")
    imp.add_argument("--store", default=None, help="the store, as for serve")
    imp.set_defaults(fn=import_command)
