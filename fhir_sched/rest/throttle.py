"""Token buckets per key (a client address), in process memory, with a bounded number of keys.

Used by the public view (``rest/public_view.py``): requests without a token cost nothing to
send, so each address gets ``per_minute`` of them, refilled continuously, with a burst of a
minute's worth (a widget loading a page asks several things at once). A bucket is a pair of
floats; past ``max_keys`` addresses the one seen longest ago is forgotten (it comes back with a
full bucket), so an attacker cycling addresses costs memory up to the cap and no further.

Per process: with ``--workers N`` each worker keeps its own buckets, so an address may get up
to N times the rate; the limit is there to keep one client from starving the others, not to
count exactly.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_KEYS = 10_000


class TokenBuckets:
    def __init__(self, per_minute: int, *, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1 or max_keys < 1:
            raise ValueError("per_minute and max_keys must be at least 1")
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._rate = per_minute / 60.0  # tokens per second
        self._burst = float(per_minute)
        self._clock = clock
        # key -> (tokens left, when counted); least recently seen first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0.0 when there was one (the request may go on),
        otherwise the seconds until there is (nothing is taken)."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - at) * self._rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self._rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets
