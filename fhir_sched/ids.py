"""Server-assigned ids: the creation millisecond, then 128 random bits from the operating
system's CSPRNG; 44 hex digits.

Random rather than counted, so an id says nothing about how many resources came before it and
cannot be guessed from a neighbour's (issue 13): the 128 random bits are more than a UUID v4's
122. The time first (as in RFC 9562's UUID v7, with more randomness) keeps the ids a store
writes in order, so each insert lands at the end of its indexes instead of on a random page:
with ids random from the first digit, creates cost 28% more CPU on SQLite (927 against 723 us,
``bench/rest_bench.py``). What the prefix tells is when the resource was created, which its
first ``meta.lastUpdated`` tells anyway.
"""

from __future__ import annotations

import os
import random
import time


def unique_id() -> str:
    """12 hex digits of Unix milliseconds, then 32 of randomness: a valid FHIR id."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(16).hex()}"


_rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def request_id() -> str:
    """32 hex characters for a request id: unique, but not a secret and not a resource id,
    so a seeded generator (reseeded in a forked worker) serves, at a third of a system
    call's cost on every request."""
    return f"{_rng.getrandbits(128):032x}"
