"""What an operation module declares: its definition, how its inputs become a typed request,
and how it runs. Doors (REST today, MLLP next) serve every operation from this one shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..context import RequestContext
from ..errors import FhirError
from ..service.services import Services
from .definition import OperationDef

Req = TypeVar("Req")
Inputs = dict[str, list[Any]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an operation hands back to its door: the resources it returns (stored bytes or
    fresh dicts) and the facts a door may turn into headers or ACK fields."""

    resources: tuple[bytes | dict[str, Any], ...]
    version: int | None = None  # the written resource's version (REST: ETag)
    expires: str | None = None  # a hold's expiry instant (REST: Expires)
    # A page of a larger result ($find): ``total`` is then the whole result's size when known
    # (None: not counted), not the page's; otherwise the resources are the whole result.
    paged: bool = False
    total: int | None = None
    # (relation, URL relative to the FHIR base): self, next, previous (REST: Bundle.link).
    links: tuple[tuple[str, str], ...] = ()
    # Warnings about how the request was served (a capped _count, an uncounted total).
    issues: tuple[dict[str, Any], ...] = ()
    # The one resource is the answer itself, not a Bundle of it (FHIR: an operation whose only
    # output is ``return``, a resource); the scheduling operations answer Bundles (IHE).
    single: bool = False
    # Resources offered beside the result, not part of it (REST: search.mode include): the
    # proposals for a series' occurrences that could not be booked.
    included: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Operation(Generic[Req]):
    definition: OperationDef
    resource_type: str
    # (level, HTTP methods): "type" is /Appointment/$op, "instance" /Appointment/{id}/$op.
    levels: tuple[tuple[str, tuple[str, ...]], ...]
    # Inputs already checked against the definition (names, cardinality, value types), plus
    # the instance id for an instance-level call; raises FhirError 400/422 naming the parameter.
    parse: Callable[[Inputs, str | None], Req]
    run: Callable[[Services, RequestContext, Req], Awaitable[Outcome]]
    # A request from a paging link (``_cursor``, then its only input), raising 400 naming
    # ``_cursor`` when it is not one; None for an operation whose results do not page.
    resume: Callable[[str], Req] | None = None


def one(values: Inputs, name: str) -> Any:
    got = values.get(name)
    return got[0] if got else None


# Elements an operation reads before the write pipeline validates the whole resource.
_LISTS_OF_OBJECTS = ("participant", "slot", "contained", "extension", "identifier")


def checked_resource(values: Inputs, name: str, type_: str) -> dict[str, Any] | None:
    """A resource-valued input, with the shape of what operations read before the pipeline
    validates it in full (which it always does), so a malformed one is a 422 naming the
    parameter and the element instead of failing on its shape."""
    res = one(values, name)
    if res is None:
        return None
    if not isinstance(res, dict) or res.get("resourceType") != type_:
        raise FhirError(400, "invalid", f"parameter {name!r}: must be a {type_} resource",
                        expression=[name])
    for key in _LISTS_OF_OBJECTS:
        items = res.get(key, [])
        bad = not isinstance(items, list) or not all(isinstance(i, dict) for i in items)
        if bad or (key == "participant" and any(
                not isinstance(i.get("actor", {}), dict) for i in items)):
            raise FhirError(422, "invalid", f"parameter {name!r}: {type_}.{key} must be an "
                            "array of objects (FHIR JSON)", expression=[name, f"{type_}.{key}"])
    return res
