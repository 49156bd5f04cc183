"""Embedded SQLite adapter of the DocumentStore port: the zero-configuration default store.

``store`` (connections, threads, atomic units, reads), ``unit`` (operations inside a unit),
``batching`` (hand-offs to the writer and reader threads), ``changes`` (the change log and
feed), ``query`` (the Query-to-SQL compiler), ``schema`` (tables, upgrades), ``checkpoint`` (WAL
checkpoints off the write path) and ``faults`` (SQLite errors as the port's errors).
"""

from .store import SqliteStore, path_from_url
from .unit import SqliteUnit

__all__ = ["SqliteStore", "SqliteUnit", "path_from_url"]
