"""Where the ``conformance/`` definitions live, installed or in a checkout."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson


@cache
def conformance_dir() -> Path:
    packaged = Path(__file__).with_name("_conformance")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "conformance"


def load(name: str) -> Any:
    return orjson.loads((conformance_dir() / name).read_bytes())


def load_all(pattern: str) -> list[Any]:
    return [orjson.loads(p.read_bytes()) for p in sorted(conformance_dir().glob(pattern))]
