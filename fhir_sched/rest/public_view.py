"""The public view: what a request without a token may do when auth is on.

A booking widget on a clinic's web site shows open times before anyone signs in, so with
``FHIR_SCHED_PUBLIC_VIEW`` on (the default) the bearer gate lets a request that carries NO
``Authorization`` header through to:

- ``GET`` or ``POST Appointment/$find`` (free time; no patient input), and
- reads and searches (``GET /T``, ``GET /T/id``, ``POST /T/_search``) of the directory types
  ``service.authorization.PUBLIC_TYPES``.

Everything else is the 401 it always was, and a request that carries a token, valid or not,
is judged by its token: a bad token is never quietly read as no token. What gets through runs
with ``RequestContext.anonymous`` (``public``), which the authorization layer confines to the
same rule, so an include, a chain or a ``_has`` reaching another type is refused or left out
there. Requests are counted per client address (the socket peer: no ``X-Forwarded-For`` is
trusted, since this server has no trusted-proxy setting) and answered 429 past the rate.
"""

from __future__ import annotations

import math

from ..errors import FhirError
from ..service.authorization import PUBLIC_TYPES
from .throttle import MAX_KEYS, TokenBuckets

FIND_PATH = ("Appointment", "$find")


def admits(method: str, rel: str) -> bool:
    """Whether the public view covers ``method`` on ``rel`` (the path under the FHIR base)."""
    parts = tuple(rel.strip("/").split("/"))
    if parts == FIND_PATH:
        return method in ("GET", "POST")
    if not parts or parts[0] not in PUBLIC_TYPES:
        return False
    if len(parts) == 1:
        return method == "GET"
    if len(parts) == 2:
        if parts[1] == "_search":
            return method == "POST"
        return method == "GET" and bool(parts[1]) and not parts[1].startswith(("$", "_"))
    return False


class PublicView:
    """The public view's rate limit, one per process (see ``throttle``)."""

    def __init__(self, per_minute: int, *, max_addresses: int = MAX_KEYS) -> None:
        self.per_minute = per_minute
        self.buckets = TokenBuckets(per_minute, max_keys=max_addresses)

    def throttle(self, address: str) -> None:
        """A 429 OperationOutcome (``throttled``) with Retry-After when ``address`` has used
        up its requests."""
        wait = self.buckets.take(address)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise FhirError(429, "throttled", f"more than {self.per_minute} requests a minute "
                            "without a token from this address; wait and try again, or sign "
                            "in (requests with a token are not counted)",
                            headers={"retry-after": str(seconds)})
