"""``$find`` proposals a client can name: an ``id`` for each, good for ``$hold`` and ``$book``.

A pure IHE client holds or books an option by ``appointment-reference`` (``Appointment/<id>``),
so every proposal needs an id that leads back to exactly what was offered: start, end, every
actor, every Slot, the visit type and the patient. FHIR ids are at most 64 characters of
``[A-Za-z0-9-.]``, and a self-contained encoding of all that rarely fits (two actor references
alone can pass 64), so a self-contained id would need a stored fallback anyway. The choice here
is the fallback for everyone, which keeps one path:

- the id is a digest: ``proposal-`` and the 128-bit BLAKE2b of the canonical proposal (sorted
  keys; without ``id`` and ``requestedPeriod``, which vary with the window asked and not with
  what is offered) in lower-case base32: 35 characters. The same option offered again gets the
  same id, so repeated searches refresh one row instead of adding rows;
- the proposal is kept store-side (``DocumentStore.put_proposals``: a small table on SQLite, a
  collection on MongoDB, outside atomic units and the change log) for ``TTL`` after it was last
  offered; every worker and a restarted server see it;
- no server-assigned id starts with ``proposal-`` (they are 44 hex characters) and the
  Appointment content rule refuses a client-chosen one that does, so a proposal id never names a
  stored Appointment;
- an unknown, tampered (altered ids are simply unknown) or malformed proposal id is a 404
  not-found; an expired one a 409 whose issue code is not-found, the shape ITI-116 asks for an
  appointment that is not available to be held.

What is held or booked from a proposal gets a fresh stored id: the proposal stays what it was
(others may still hold it, and the booking guard decides who gets the time).

Cost: one extra write per ``$find`` page (one statement for the page's rows), never inside an
atomic unit, so it does not queue behind bookings or take MongoDB's unit counter. Measured
in-process on SQLite (50 practitioners of one specialty, 31-day window, a loaded 2-core box):
``_count=10``, $find p50 11.8 ms of which keeping the ids 0.5 ms; ``_count=100``, 13.0 ms of
which 1.9 ms. With the resource commit's fsync the write was 5-7 ms, which is why SQLite keeps
proposals without it (``SqliteStore.put_proposals``). Digest and serialisation: ~9 us each.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ..errors import FhirError
from ..resources.appointment import PROPOSAL_ID_PREFIX
from ..storage.base import DocumentStore
from ..timeutil import format_instant

PREFIX = PROPOSAL_ID_PREFIX
TTL = timedelta(hours=1)
_SHAPE = re.compile(r"^proposal-[a-z2-7]{26}$")
_LEFT_OUT = ("id", "meta", "requestedPeriod")
_CACHE_SIZE = 1024


def is_proposal_id(id_: str) -> bool:
    """Whether ``id_`` is in the proposal namespace (well formed or not)."""
    return id_.startswith(PREFIX)


def proposal_id(appt: dict[str, Any]) -> str:
    canonical = {k: v for k, v in appt.items() if k not in _LEFT_OUT}
    digest = hashlib.blake2b(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS),
                             digest_size=16).digest()
    return PREFIX + base64.b32encode(digest).decode("ascii").rstrip("=").lower()


class Proposals:
    """The proposals kept in one store, with a small per-process cache of what was read (a
    kept proposal's content never changes under its id; only its expiry moves later)."""

    def __init__(self, store: DocumentStore, ttl: timedelta = TTL) -> None:
        self.store = store
        self.ttl = ttl
        self._cache: dict[str, tuple[dict[str, Any], str]] = {}

    async def keep(self, proposals: list[dict[str, Any]]) -> None:
        """Give each proposal its id and keep it for ``ttl``."""
        now = datetime.now(UTC)
        rows = []
        for appt in proposals:
            appt["id"] = proposal_id(appt)
            rows.append((appt["id"], orjson.dumps(appt)))
        await self.store.put_proposals(rows, format_instant(now + self.ttl),
                                       format_instant(now))

    async def get(self, id_: str) -> dict[str, Any]:
        """The proposal under ``id_``, as offered (without its id), or the refusal to give."""
        now = format_instant(datetime.now(UTC))
        if not _SHAPE.match(id_):
            raise _unknown(id_)
        cached = self._cache.get(id_)
        if cached is None or cached[1] <= now:
            row = await self.store.get_proposal(id_)
            if row is None:
                raise _unknown(id_)
            body = orjson.loads(row[0])
            if not isinstance(body, dict) or proposal_id(body) != id_:
                raise _unknown(id_)  # not what this id was made from: never act on it
            cached = (body, row[1])
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[id_] = cached
        body, expires = cached
        if expires <= now:
            raise FhirError(409, "not-found", f"Appointment/{id_} is a $find proposal that "
                            f"expired at {expires}; run $find again", severity="fatal",
                            expression=["appointment-reference"])
        out = orjson.loads(orjson.dumps(body))  # the caller may change its copy
        out.pop("id", None)
        return dict(out)


def _unknown(id_: str) -> FhirError:
    return FhirError(404, "not-found", f"Appointment/{id_} is not a proposal this server "
                     "made (or it was dropped after expiring); run $find again",
                     severity="fatal", expression=["appointment-reference"])
