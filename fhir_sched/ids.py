"""Server-assigned ids: 128 random bits from the operating system's CSPRNG, as 32 hex digits.

Random rather than counted, so an id says nothing about how many resources or requests came
before it and cannot be guessed from a neighbour's (issue 13). ``os.urandom(16)`` costs about
half a microsecond here, well under what naming a resource costs anyway.
"""

from __future__ import annotations

import os


def unique_id() -> str:
    """32 lowercase hex characters (128 random bits): a valid FHIR id and a sane request id."""
    return os.urandom(16).hex()
