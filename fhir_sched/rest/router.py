"""A segment-trie dispatcher for the FHIR base: one dict lookup per path segment.

FastAPI's router tries each route's regular expression in turn and resolves dependencies for
every call; with ~25 FHIR routes that cost more than the read itself. The FHIR URL space is
regular (literal segments such as ``_history`` or ``$find`` beside ``{type}``/``{id}`` holes), so a
trie where a literal segment always wins over a hole gives the same answers as careful route
ordering, in time independent of the number of routes. Unknown paths get 404 and known paths
with the wrong method 405 with ``Allow``, both as OperationOutcomes through the app's handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(slots=True)
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    hole: tuple[str, _Node] | None = None
    handlers: dict[str, Handler] = field(default_factory=dict)
    # per method: (FHIR interaction or "$operation", resource type, route template), for
    # metrics and the request log; a type of None is read from the ``{type}`` hole
    labels: dict[str, tuple[str, str | None, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """What introspection (tests, the CapabilityStatement check) sees of one route."""

    path: str
    methods: frozenset[str]


class FhirRouter:
    def __init__(self, base_path: str, types: frozenset[str] = frozenset()) -> None:
        self.base_path = base_path.rstrip("/")
        self._root = _Node()
        self.routes: list[RouteEntry] = []
        # The hosted types: a ``{type}`` hole is labelled with its value only when it is one
        # of these, so a scan of made-up type names cannot grow a metric's label set.
        self.types = types

    def add(self, path: str, methods: tuple[str, ...], handler: Handler, *,
            listed: bool = True, interaction: str = "", type_label: str = "") -> None:
        """Route ``path``; ``listed=False`` for what is not a FHIR interaction (SMART
        discovery under the base), left out of ``routes``. ``interaction`` and
        ``type_label`` (for a path with a ``{type}`` hole, its value) label the route's
        requests in metrics and the request log."""
        node = self._root
        for seg in (s for s in path.split("/") if s):
            if seg.startswith("{") and seg.endswith("}"):
                name = seg[1:-1]
                if node.hole is None:
                    node.hole = (name, _Node())
                elif node.hole[0] != name:
                    raise ValueError(f"{path}: hole {{{name}}} clashes with {{{node.hole[0]}}}")
                node = node.hole[1]
            else:
                node = node.literal.setdefault(seg, _Node())
        for m in methods:
            if m in node.handlers:
                raise ValueError(f"{m} {path} is routed twice")
            node.handlers[m] = handler
            node.labels[m] = (interaction or "other",
                              None if "{type}" in path else type_label,
                              self.base_path + path.rstrip("/") or "/")
        if listed:
            self.routes.append(RouteEntry(self.base_path + (path if path != "/" else ""),
                                          frozenset(methods)))

    def _match(self, segs: list[str]) -> tuple[_Node | None, dict[str, str]]:
        """Depth-first, literal before hole, so ``/Appointment/$find`` never reads as an id."""
        params: dict[str, str] = {}

        def walk(node: _Node, i: int) -> _Node | None:
            if i == len(segs):
                return node if node.handlers else None
            child = node.literal.get(segs[i])
            if child is not None:
                found = walk(child, i + 1)
                if found is not None:
                    return found
            if node.hole is not None:
                name, hole = node.hole
                found = walk(hole, i + 1)
                if found is not None:
                    params[name] = segs[i]
                    return found
            return None

        return walk(self._root, 0), params

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        rel = path[len(self.base_path):] if path.startswith(self.base_path) else path
        if rel and not rel.startswith("/"):  # "/fhirx" is not under the base "/fhir"
            raise HTTPException(404)
        node, params = self._match([s for s in rel.split("/") if s])
        if node is None:
            raise HTTPException(404)
        method = scope["method"]
        handler = node.handlers.get(method)
        if handler is None:
            if method == "HEAD" and "GET" in node.handlers:
                method = "GET"
                handler = node.handlers["GET"]
            else:
                allow = ", ".join(sorted(node.handlers))
                raise HTTPException(405, headers={"Allow": allow})
        interaction, type_, template = node.labels[method]
        if type_ is None:
            type_ = params["type"] if params["type"] in self.types else "other"
        scope.setdefault("state", {})["route"] = (interaction, type_, template)
        scope["path_params"] = params
        response = await handler(Request(scope, receive, send))
        await response(scope, receive, send)
