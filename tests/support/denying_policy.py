"""A policy that refuses what ``FHIR_SCHED_TEST_DENY`` lists, for proving that every path of
the service asks the authorization layer. Entries are ``interaction:Type`` (``read:Patient``)
or ``operation:Type:name`` (``operation:Appointment:hold``), comma-separated."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from fhir_sched.app import create_app
from fhir_sched.context import RequestContext
from fhir_sched.service.authorization import Interaction, forbidden


class DenyListed:
    def __init__(self, entries: str) -> None:
        self.denied = {e.strip() for e in entries.split(",") if e.strip()}

    def check(self, ctx: RequestContext, interaction: Interaction, type_: str | None,
              id_: str | None = None, *, resource: dict[str, Any] | None = None,
              operation: str | None = None) -> None:
        key = f"{interaction.value}:{type_}" + (f":{operation}" if operation else "")
        if key in self.denied:
            raise forbidden(f"denied by the test policy: {key}")

    def needs_content(self, ctx: RequestContext, type_: str) -> bool:
        return False

    def visible(self, ctx: RequestContext, type_: str, resource: dict[str, Any]) -> bool:
        return True


def app() -> FastAPI:
    return create_app(authorizer=DenyListed(os.environ.get("FHIR_SCHED_TEST_DENY", "")))
