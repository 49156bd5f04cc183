"""FHIR operations, one module each; every module declares its OperationDefinition."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import Server


def operation_routes(server: Server) -> Iterator[tuple[Any, Any]]:
    """(RouteSpec, handler) for every operation the server offers."""
    from . import book, find, hold

    for module in (find, hold, book):
        yield from module.routes(server)
