"""The authorization hook: one call per interaction, before any data is touched.

Today it allows everything; SMART scope enforcement will replace ``AllowAll`` with a policy that
reads ``RequestContext.scopes`` and ``patient``, without any handler changing.
"""

from __future__ import annotations

from typing import Protocol

from ..context import RequestContext


class Authorizer(Protocol):
    def check(self, ctx: RequestContext, interaction: str, type_: str | None,
              id_: str | None = None) -> None:
        """Raise FhirError(403) when ``ctx`` may not perform ``interaction`` on the target."""
        ...


class AllowAll:
    def check(self, ctx: RequestContext, interaction: str, type_: str | None,
              id_: str | None = None) -> None:
        return None
