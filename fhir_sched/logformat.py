"""Log output: one JSON object per line for collectors, plain text on a terminal, and never
a traceback's message.

Records are handed to a queue and written by a thread of their own, so a slow or blocked
stderr (a full pipe, a stalled log shipper) never blocks the event loop. An exception on a
record, ours or a library's ("Exception in ASGI application"), is rendered as
``logsafe.describe``: its type and frames, without the message, which carries the values
that failed (a name, a birth date, an identifier).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import logging.handlers
import queue
import signal
import sys
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from .logsafe import describe

# What every LogRecord has; anything else on a record came in through ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _error(record: logging.LogRecord) -> str | None:
    if record.exc_info and record.exc_info[1] is not None:
        return describe(record.exc_info[1])
    return None


def _when(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extras, "error"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": _when(record), "level": record.levelname,
                                "logger": record.name, "pid": record.process,
                                "msg": record.getMessage()}
        line.update(_extras(record))
        error = _error(record)
        if error:
            line["error"] = error
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger message key=value ...``, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        error = _error(record)
        return " ".join(p for p in (_when(record), record.levelname, record.name,
                                    record.getMessage(), extras,
                                    f"error={error}" if error else "") if p)


def formatter(kind: str, stream: IO[str]) -> logging.Formatter:
    """``json``, ``text``, or ``auto`` (text when ``stream`` is a terminal)."""
    if kind == "auto":
        kind = "text" if stream.isatty() else "json"
    if kind not in ("json", "text"):
        raise ValueError(f"log format must be auto, json or text, not {kind!r}")
    return JsonFormatter() if kind == "json" else TextFormatter()


def configure(level: str, kind: str = "auto", stream: IO[str] | None = None) -> None:
    """Route every logger (uvicorn's too) through one queue to ``stream`` (stderr)."""
    out = stream or sys.stderr
    writer = logging.StreamHandler(out)
    writer.setFormatter(formatter(kind, out))
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(q, writer, respect_handler_level=False)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(_Enqueue(q))
    root.setLevel(level.upper())
    # httpx notes every outbound request (a JWKS, a payer gateway) at INFO with its URL: noise
    # beside our own lines, which say what the request was for; its warnings still show.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    listener.start()
    atexit.register(listener.stop)
    _LISTENERS.append(listener)


_LISTENERS: list[logging.handlers.QueueListener] = []


def flush_on_signals() -> None:
    """Write out what is queued when SIGTERM or SIGINT ends the process. uvicorn ends a
    clean shutdown by restoring the handlers it found and raising the signal again, which
    with the default handler kills the process before ``atexit`` runs: its last lines
    ("Application shutdown complete") would be lost. This handler is the one it finds: it
    drains the queue, then dies of the signal as the default would."""
    def drain_then_die(sig: int, frame: object) -> None:
        for listener in _LISTENERS:
            with contextlib.suppress(Exception):
                listener.stop()
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, drain_then_die)


class _Enqueue(logging.handlers.QueueHandler):
    """Enqueue the record as it is: formatting (and so ``describe``) happens on the writer
    thread. The stock handler formats here, on the caller's thread, and drops exc_info."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The message is fixed now (its arguments may change later); exc_info stays for the
        # formatter, which renders it without the exception's message.
        record.msg = record.getMessage()
        record.args = None
        return record
