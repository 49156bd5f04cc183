"""The DocumentStore port and its adapters, selected by one URL."""

from __future__ import annotations

from ..settings import Settings
from .base import DocumentStore


def open_store(settings: Settings) -> DocumentStore:
    url = settings.store
    if url.startswith("sqlite:"):
        from .sqlite import SqliteStore, path_from_url

        return SqliteStore(path_from_url(url), synchronous=settings.sqlite_synchronous,
                           search_seconds=settings.search_max_ms / 1000)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from .mongo import MongoStore

        return MongoStore(url, search_seconds=settings.search_max_ms / 1000)
    raise SystemExit(f"unsupported store URL {url!r}: use sqlite:///path.db or "
                     "mongodb://host:port/db")
