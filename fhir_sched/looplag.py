"""How late the event loop runs: the measure of "no blocking calls on the event loop".

A task asks to wake every ``INTERVAL`` and records how much later than asked it woke, in
``fhir_sched_event_loop_lag_seconds``. Anything that holds the loop (a CPU-heavy handler, a
blocking call) shows up as lag for every request waiting behind it, so the histogram's upper
buckets are the stalls clients felt. Ten wake-ups a second cost nothing measurable.
"""

from __future__ import annotations

import asyncio

from .metrics import LOOP_LAG

INTERVAL = 0.1


async def watch_loop() -> None:
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + INTERVAL
        await asyncio.sleep(INTERVAL)
        LOOP_LAG.observe((), max(0.0, loop.time() - asked))
