"""Stateless ``$find`` paging cursors: the whole normalized request, compact, in a URL.

A ``next``/``previous``/``self`` link is ``Appointment/$find?_cursor=<token>``, where the token
is the ``FindRequest`` itself (every field that differs from its default, datetimes in ISO
form) as JSON, deflated when that is shorter, in unpadded base64url. The request carries the
page's ``offset`` and the ``not_before`` instant the first page was clamped to, so every page of
one search computes the same option list (the engine is deterministic for the same data) and a
link works after a restart and on any worker: there is no server-side state.

Nothing is signed: a forged cursor is just another find request, and it is checked like one
(here for shape and types, then by ``FindService.find`` for the window, the counts and the
offset limit). A token that does not decode to a request is a 400 naming ``_cursor``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import zlib
from datetime import datetime
from typing import Any

import orjson

from ..errors import bad_request
from ..timeutil import parse_instant
from .find import FindRequest

_MAX_TOKEN = 16_000  # characters; the longest URL most clients and proxies pass is ~8-16 kB
_MAX_JSON = 64_000  # bytes once inflated: a request, not a payload
_FIELDS = {f.name: f for f in dataclasses.fields(FindRequest)}


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def encode(req: FindRequest) -> str:
    data: dict[str, Any] = {}
    for name, f in _FIELDS.items():
        value = getattr(req, name)
        if value == _default(f):
            continue
        data[name] = value.isoformat() if isinstance(value, datetime) else value
    raw = orjson.dumps(data)
    packed = zlib.compress(raw, 9)
    kind, body = (b"z", packed) if len(packed) < len(raw) else (b"j", raw)
    return (kind + base64.urlsafe_b64encode(body).rstrip(b"=")).decode("ascii")


def _malformed(why: str) -> Exception:
    return bad_request(f"_cursor is malformed ({why}); follow the Bundle's links unchanged, or "
                       "start the search again", ["_cursor"])


def decode(token: str) -> FindRequest:
    if not token or len(token) > _MAX_TOKEN or token[0] not in "zj":
        raise _malformed("not a $find cursor")
    try:
        body = base64.urlsafe_b64decode(token[1:] + "=" * (-len(token[1:]) % 4))
        if token[0] == "z":
            inflater = zlib.decompressobj()
            body = inflater.decompress(body, _MAX_JSON)
            if inflater.unconsumed_tail:
                raise _malformed("too long")
        data = orjson.loads(body)
    except (binascii.Error, ValueError, zlib.error):
        raise _malformed("not base64url JSON") from None
    if not isinstance(data, dict):
        raise _malformed("not an object")
    values: dict[str, Any] = {}
    for name, value in data.items():
        f = _FIELDS.get(name)
        if f is None:
            raise _malformed(f"unknown field {name!r}")
        values[name] = _checked(name, str(f.type), value)
    for name in ("start", "end"):
        if name not in values:
            raise _malformed(f"no {name}")
    return FindRequest(**values)


def _checked(name: str, annotation: str, value: Any) -> Any:
    """A cursor field's value, typed as the request field declares it."""
    optional = annotation.endswith("| None")
    if value is None:
        if optional:
            return None
        raise _malformed(f"{name} may not be null")
    kind = annotation.removesuffix("| None").strip()
    if kind == "datetime":
        if not isinstance(value, str):
            raise _malformed(f"{name} is not a dateTime")
        try:
            return parse_instant(value)
        except ValueError:
            raise _malformed(f"{name} is not a dateTime") from None
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise _malformed(f"{name} is not an integer")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _malformed(f"{name} is not true or false")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise _malformed(f"{name} is not a string")
        return value
    if kind == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise _malformed(f"{name} is not a list of strings")
        return value
    if kind.startswith("dict"):
        if not isinstance(value, dict):
            raise _malformed(f"{name} is not an object")
        return value
    if kind.startswith("list"):
        if not isinstance(value, list):
            raise _malformed(f"{name} is not a list")
        return value
    return value
