"""The DocumentStore port: what the service layer needs from a database, and nothing more.

Documents are kept exactly as accepted plus ``meta`` (so reads serve stored bytes), search-index
entries live beside them, and every write appends to an ordered change log in the same atomic
unit. Correctness (version checks, uniqueness, booking claims) is enforced *in the database* so
that any number of server processes can share one store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..query import IndexEntry, Page, Query

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Origin:
    """Who made a change, through which door, under which request: recorded on every change
    row so that audit, subscriptions and outbound SIU can tell (and skip their own echoes)."""

    subject: str = "system"
    client_id: str | None = None
    door: str = "system"  # rest | operation | mllp | system
    request_id: str | None = None


SYSTEM_ORIGIN = Origin()


def stored_origin(subject: str | None, client_id: str | None, door: str | None,
                  request_id: str | None) -> Origin:
    """An origin as a change row stores it; rows from before origins were kept (no subject, no
    door) read as ``SYSTEM_ORIGIN``, as does any row that says nothing more."""
    if client_id is None and request_id is None and subject in (None, "system") and door in (
            None, "system"):
        return SYSTEM_ORIGIN
    return Origin(subject or "system", client_id, door or "system", request_id)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited interaction: who did what to which resource, through which door, and how it
    ended. Kept apart from the resources (nobody can edit it through the API) and rendered as
    an R4 AuditEvent. ``id`` orders entries by time; ``patient`` is the patient whose data was
    touched (``Patient/<id>``), when there is one; ``detail`` never holds PHI (parameter names,
    not values)."""

    id: str
    recorded: str
    door: str  # rest | operation | mllp | system
    action: str  # C R U D E (AuditEvent.action)
    subtype: str  # the FHIR interaction or operation: read, search-type, create, $book, ...
    outcome: str  # 0 success, 4 minor failure (client), 8 serious (server), 12 major
    who: str
    client_id: str | None
    request_id: str | None
    entity: str | None  # Type/id, or Type for a search
    patient: str | None
    detail: str = ""


@dataclass(slots=True)
class Record:
    """One version of one resource as stored. ``body`` is None for a delete (tombstone).

    ``seq`` is the change's position in the change feed (0 until the adapter has given it);
    ``origin`` says who made it. Current-row reads may leave ``origin`` at its default: only
    the change log keeps it.
    """

    type: str
    id: str
    version: int
    updated: str
    deleted: bool
    body: bytes | None
    method: str = "PUT"
    seq: int = 0
    origin: Origin = SYSTEM_ORIGIN


@dataclass(slots=True)
class InboundEntry:
    """One message that came in by the HL7 v2 door, with the answer it got.

    ``key`` is the idempotency key (sender and control id; a generated one when the message
    named none). Kept in the same unit as the writes the message made, so a stored entry means
    the message was applied (or refused) and its ``ack`` is the answer to repeat."""

    key: str
    received: str  # now_instant format
    sender: str  # "MSH-3/MSH-4" as sent
    control_id: str
    event: str  # "SIU^S12" as sent, "" when unreadable
    peer: str
    outcome: str  # applied | stale | rejected
    ack_code: str  # AA CA AE AR ...
    ack: bytes
    error: str = ""
    resources: tuple[str, ...] = ()  # "Type/id" written
    raw: bytes | None = None  # dropped after the retention period
    digest: str = ""  # of the content, MSH-7 aside: tells a resend from a reused control id


@dataclass(slots=True)
class OutboundEntry:
    """One HL7 v2 message owed to one subscriber (an Endpoint), for one change.

    ``id`` is ``{seq:020d}/{endpoint}``: enqueueing the same change twice makes one row, and
    string order is change order, which is the order a subscriber receives its messages in."""

    id: str
    endpoint: str  # Endpoint id
    seq: int  # the change's position in the change log
    appointment: str  # Appointment id
    event: str  # "S12" ...
    message: bytes  # the ER7 bytes, built when the change was read
    status: str = "pending"  # pending | done | dead
    attempts: int = 0
    next_at: str = ""  # now_instant format: not before
    error: str = ""
    ack: bytes | None = None
    created: str = ""


# One write of a unit: the record, its index entries and the version it expects (see ``write``).
Write = tuple[Record, list[IndexEntry], int | None]


class Unit(Protocol):
    """An atomic unit of work: all writes commit together or not at all, and the outcome is as
    if units ran one after another. Adapters that run units side by side (MongoDB) keep that
    for what a unit decides on: a resource it read (``get``) and a search it ran (``find_ids``,
    ``count_claims``) hold as if written, so a concurrent unit that would change the answer
    runs after it, never beside it."""

    async def get(self, type_: str, id_: str, *, decides: bool = True) -> Record | None:
        """The current record as this unit sees it. ``decides=False`` for configuration the
        unit reads but does not decide on (a visit type's service): not held as written."""
        ...

    async def find_ids(self, query: Query, limit: int = 2, *, decides: bool = True
                       ) -> list[str]:
        """Ids matching ``query`` as this unit sees them. ``decides=False`` for a lookup of
        configuration the unit does not decide on (a visit type's definition): no adapter
        then holds the search as written, so units making it never wait on each other."""
        ...

    async def count(self, query: Query) -> int:
        """How many match ``query`` as this unit sees them, decided on as ``find_ids`` is;
        from the index alone where the adapter can."""
        ...

    async def find_bodies(self, query: Query, limit: int) -> list[tuple[str, bytes]]:
        """(id, current body) of each match, as this unit sees them: ``find_ids`` and a
        deciding ``get`` of each, in one statement where the adapter can (the booking guard
        reads a patient's whole history this way)."""
        ...

    async def write(
        self, record: Record, entries: list[IndexEntry], expect_version: int | None
    ) -> None:
        """Store ``record`` as current and append it to the change log.

        ``expect_version``: the version the current row must have (0: no row yet); None: any.
        Raises ``errors.VersionConflict`` otherwise.
        """
        ...

    async def write_all(self, writes: Sequence[Write]) -> None:
        """``write`` of each ``(record, entries, expect_version)`` in order, in as few round
        trips as the adapter can (imports, bulk loads): the same checks and the same rows. When
        one raises VersionConflict, the writes before it stand and none after it is made."""
        ...

    async def claim(
        self, key: str, owner_type: str, owner_id: str, expires: str | None = None,
        now: str | None = None,
    ) -> bool:
        """Insert a unique claim; False when another owner holds ``key``.

        A claim with ``expires`` (an instant in the ``now_instant`` format, so string order is
        time order) stops counting once ``now`` passes it: the next claimant takes it over in
        the same atomic write, which is how an expired hold stops blocking at once.
        """
        ...

    async def claims_of(self, owner_type: str, owner_id: str) -> list[str]: ...

    async def release(self, owner_type: str, owner_id: str, keys: list[str] | None = None) -> None:
        """Drop the owner's claims (all of them, or just ``keys``)."""
        ...

    async def count_claims(self, prefix: str) -> int: ...

    async def inbound_get(self, key: str) -> InboundEntry | None:
        """The entry kept under ``key``, read inside the unit: with the unit's serial writes
        this is the idempotency check that makes a duplicate message a no-op."""
        ...

    async def inbound_put(self, entry: InboundEntry) -> None:
        """Keep ``entry`` (replacing one under the same key: a replayed dead letter)."""
        ...

    async def mark_get(self, key: str) -> str | None:
        """A small named value kept with the data (the last message time applied to one
        appointment from one sender; a reader's position in the change feed)."""
        ...

    async def mark_put(self, key: str, value: str) -> None: ...

    async def mark_delete(self, key: str) -> bool:
        """Remove a mark; whether there was one (so a one-time value is taken only once)."""
        ...

    async def mark_list(self, prefix: str, limit: int = 1000) -> list[tuple[str, str]]:
        """(key, value) of the marks whose key starts with ``prefix``, in key order."""
        ...

    async def audit_add(self, entries: Sequence[AuditEntry]) -> None:
        """Record audit entries with the unit's writes (they commit or roll back with them)."""
        ...

    async def outbox_add(self, entries: Sequence[OutboundEntry]) -> None:
        """Queue messages; an id already queued is left as it is."""
        ...

    async def outbox_set(self, entry: OutboundEntry) -> None:
        """Record a delivery attempt's result (status, attempts, next_at, error, ack)."""
        ...


class DocumentStore(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def atomic(self, fn: Callable[[Unit], Awaitable[T]]) -> T:
        """Run ``fn`` in one atomic unit; adapters may retry it on transient conflicts, so ``fn``
        must not have side effects outside the unit."""
        ...

    async def get(self, type_: str, id_: str) -> Record | None: ...

    async def get_version(self, type_: str, id_: str, version: int) -> Record | None: ...

    async def history(self, type_: str | None, id_: str | None, since: str | None, count: int,
                      before_seq: int | None) -> list[Record]:
        """Changes newest first (``seq`` descending), at most ``count``, of one resource, one
        type or everything, updated at or after ``since``, with ``seq < before_seq``."""
        ...

    async def changes_since(self, position: int, limit: int) -> list[Record]:
        """The change feed: changes with ``seq > position`` in ascending ``seq`` (commit order,
        up to the adapter's numbering), at most ``limit``, each with its ``origin``.

        A reader resumes with the ``seq`` of the last change it processed and so sees every
        change exactly once: a change never becomes visible after one with a higher ``seq``
        that a reader could already see.
        """
        ...

    async def last_position(self) -> int:
        """The ``seq`` of the newest visible change (0 when there is none): where a new
        subscriber starts to read "from now"."""
        ...

    async def search(self, query: Query) -> Page: ...

    async def in_window(self, type_: str, date_param: str, lo: int, hi: int, limit: int
                        ) -> list[tuple[str, int, bytes]]:
        """``(id, start, current body)`` of every live ``type_`` resource whose ``date_param``
        entry starts in ``[lo, hi)`` (microseconds; ``start`` is that entry's ``lo``), at most
        ``limit``, in no set order: what a report over a period reads, found through the
        index in one statement without search's ordering, paging and counting.

        Bodies rather than index entries, on measurement: a year of 250,000 appointments has
        about fifteen entries each, and reading and regrouping them costs SQLite more than
        twice what handing over the stored bytes and parsing them with orjson costs."""
        ...

    async def first_versions(self, type_: str, ids: Sequence[str]) -> dict[str, str]:
        """id -> ``updated`` of version 1 (when the server first stored it), from the change
        log, for those of ``ids`` that have one."""
        ...

    async def claim_keys(self, prefix: str) -> list[tuple[str, str, str]]: ...

    async def claims_between(self, lo: str, hi: str) -> list[tuple[str, str | None]]:
        """(key, expires) of every claim with ``lo <= key < hi``, in key order: how $find
        reads exactly the capacity the booking guard enforces."""
        ...

    async def put_proposals(self, proposals: Sequence[tuple[str, bytes]], expires: str,
                            now: str) -> None:
        """Keep ``$find`` proposals, ``(id, body)``, until ``expires`` (``now_instant`` format);
        a kept id is overwritten and its expiry moved. Proposals whose expiry is before ``now``
        are dropped on the way. This is no resource write: outside every atomic unit, no
        version, no change-log row, and losing them (a restore) only means finding again."""
        ...

    async def get_proposal(self, id_: str) -> tuple[bytes, str] | None:
        """``(body, expires)`` of a kept proposal, expired or not (an expired one stays until
        a later ``put_proposals`` drops it, so the caller can say "expired", not "unknown")."""
        ...

    async def inbound_list(self, *, outcomes: Sequence[str] | None = None, limit: int = 100,
                           before: str | None = None) -> list[InboundEntry]:
        """Kept inbound messages, newest first, optionally only some outcomes and only those
        received before an instant (the next page)."""
        ...

    async def inbound_purge_raw(self, before: str) -> int:
        """Drop the raw bytes of messages received before ``before``; how many were dropped.
        The entry, its outcome and its ACK stay (replays still answer the same)."""
        ...

    async def outbox_list(self, *, statuses: Sequence[str], limit: int = 100,
                          endpoint: str | None = None) -> list[OutboundEntry]:
        """Queued messages with these statuses, in queue (change) order."""
        ...

    async def audit_append(self, entries: Sequence[AuditEntry]) -> None:
        """Record audit entries on their own (reads, refusals): one short write per batch."""
        ...

    async def audit_list(self, *, patient: str | None = None, entity: str | None = None,
                         who: str | None = None, subtype: str | None = None,
                         outcome: str | None = None, since: str | None = None,
                         until: str | None = None, before_id: str | None = None,
                         limit: int = 100) -> list[AuditEntry]:
        """Newest first (SQLite: last written first, which differs from ``recorded`` by at
        most a flush); ``before_id`` continues a page."""
        ...

    async def audit_get(self, id_: str) -> AuditEntry | None: ...

    async def audit_purge(self, before: str, limit: int) -> int:
        """Delete at most ``limit`` entries recorded before the instant ``before``, oldest
        first, in one short write; the number deleted (retention runs it until 0)."""
        ...

    async def ping(self) -> None: ...


def changelog_method(previous: Record | None, deleting: bool) -> str:
    if deleting:
        return "DELETE"
    return "POST" if previous is None or (previous.deleted and previous.version == 0) else "PUT"


Json = dict[str, Any]
