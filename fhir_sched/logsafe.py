"""Errors as log lines without PHI: the exception's type and where it was raised, never its
message, arguments or locals.

A traceback's last line repeats the exception's message, and messages carry values: the
stored date that did not parse, the identifier that clashed, a patient's name in a
validation error. The frames alone (file, line, function, innermost last) find a bug as well,
and the request id ties the line to the request that met it.
"""

from __future__ import annotations

import os
import traceback

FRAMES = 8


def describe(exc: BaseException) -> str:
    """``TypeError at a.py:12 f <- b.py:40 g``: the innermost ``FRAMES`` frames, newest first."""
    stack = traceback.extract_tb(exc.__traceback__)[-FRAMES:]
    where = " <- ".join(f"{_short(f.filename)}:{f.lineno} {f.name}" for f in reversed(stack))
    cause = exc.__cause__ or exc.__context__
    chained = f" (from {type(cause).__name__})" if cause is not None else ""
    return f"{type(exc).__name__}{chained}" + (f" at {where}" if where else "")


def _short(path: str) -> str:
    """The path from the package or site-packages on: enough to find the file, no home dir."""
    for marker in ("fhir_sched" + os.sep, "site-packages" + os.sep):
        if marker in path:
            return path[path.rindex(marker) + (0 if marker.startswith("fhir") else len(
                marker)):]
    return os.path.basename(path)
