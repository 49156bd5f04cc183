"""A payer's eligibility answer, as the booking guard weighs it.

When a deployment has an eligibility checker other than the local Coverage rules (a payer or
clearinghouse gateway, ``service/eligibility.py``), a booking of a visit type that needs
coverage needs the payer's word that its Coverage is in force. That word is a stored
CoverageEligibilityResponse, which only the server writes; a recent one for the same Coverage
is reused (the cache), else the unit stops with ``NeedsEligibility``: asking another server
from inside a unit would hold the store (on SQLite, every writer) for as long as the payer
takes. The pipeline asks outside the unit, within a time budget, keeps the answer on the
request (``RequestContext.consulted``) and runs the unit again, which then finds it there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson

from ..context import RequestContext
from ..query import AnyOf, Cond, Entry, Query
from ..storage.base import Unit
from ..timeutil import to_us

Verdict = Literal["eligible", "not-eligible", "unverified"]
RESPONSE = "CoverageEligibilityResponse"
# Payer answers one request may wait for (a transaction of many bookings): past this, the
# rest are unverified and follow the deployment's policy, so one request's work stays bounded.
MAX_PER_REQUEST = 10
_KEY = "eligibility|"


@dataclass(frozen=True, slots=True)
class Need:
    """What the payer is to be asked: is ``coverage`` in force for this visit."""

    coverage: str  # Coverage/<id>
    body: Mapping[str, Any]  # the Coverage as the unit read it
    patient: str  # Patient/<id>
    visit: tuple[str | None, str]  # the visit type's (system, code)
    visit_display: str
    start: str  # the booking's start instant; the request's servicedDate is its date


@dataclass(frozen=True, slots=True)
class Answer:
    response: str | None  # CoverageEligibilityResponse/<id>, None when nothing was stored
    verdict: Verdict
    reason: str  # words for the front desk


class NeedsEligibility(Exception):
    """Raised by the guard inside a unit: ask the payer about ``need`` outside it, leave the
    answer on ``ctx`` (``remember``), then run the unit again."""

    def __init__(self, need: Need, ctx: RequestContext) -> None:
        super().__init__(f"eligibility of {need.coverage} is to be asked")
        self.need = need
        self.ctx = ctx


def remember(consulted: dict[str, object], coverage: str, answer: Answer) -> None:
    consulted[_KEY + coverage] = answer


def recalled(consulted: Mapping[str, object], coverage: str) -> Answer | None:
    got = consulted.get(_KEY + coverage)
    return got if isinstance(got, Answer) else None


def asked(consulted: Mapping[str, object]) -> int:
    return sum(1 for k in consulted if k.startswith(_KEY))


def verdict(response: Mapping[str, Any], coverage: str) -> tuple[Verdict, str]:
    """What an answer says of ``coverage``: in force, not in force, or nothing usable (an
    error, a queued answer, an answer about other insurance)."""
    outcome = response.get("outcome")
    said = response.get("disposition") if isinstance(response.get("disposition"), str) else ""
    if outcome in ("complete", "partial"):
        for item in response.get("insurance") or []:
            if not isinstance(item, Mapping):
                continue
            ref = (item.get("coverage") or {}).get("reference")
            if ref == coverage and isinstance(item.get("inforce"), bool):
                if item["inforce"]:
                    return "eligible", said or "the payer says the coverage is in force"
                return "not-eligible", said or "the payer says the coverage is not in force"
        return "unverified", "the payer's answer does not say whether this Coverage is in force"
    errors = [text for e in response.get("error") or [] if isinstance(e, Mapping)
              for text in _texts(e.get("code"))]
    why = "; ".join(errors) or said
    if outcome == "error":
        return "unverified", why or "the payer answered an error and gave no reason"
    return "unverified", f"the payer's answer is {outcome!r}" + (f": {why}" if why else "")


def _texts(concept: object) -> list[str]:
    if not isinstance(concept, Mapping):
        return []
    if isinstance(concept.get("text"), str):
        return [concept["text"]]
    return [str(c.get("display") or c.get("code")) for c in concept.get("coding") or []
            if isinstance(c, Mapping) and (c.get("display") or c.get("code"))]


async def cached(unit: Unit, coverage: str, ttl: timedelta, now: datetime) -> Answer | None:
    """The newest usable answer about ``coverage`` made within ``ttl``, if any. An answer
    that verified nothing (an error, a timeout) is never reused: the next booking asks again.
    Read as configuration (``decides=False``): a newer answer landing meanwhile changes
    nothing another unit decided."""
    if ttl <= timedelta(0):
        return None
    ids = await unit.find_ids(Query(RESPONSE, (
        Entry("coverage", (Cond("val", "=", coverage),), unique=True),
        AnyOf(tuple(Entry("outcome", (Cond("val", "=", o),)) for o in ("complete", "partial"))),
        Entry("created", (Cond("hi", ">=", to_us(now - ttl)),)))), limit=20, decides=False)
    best: tuple[str, Answer] | None = None
    for rid in ids:
        rec = await unit.get(RESPONSE, rid, decides=False)
        if rec is None or rec.deleted or rec.body is None:
            continue
        body = orjson.loads(rec.body)
        said, why = verdict(body, coverage)
        created = str(body.get("created") or "")
        if said != "unverified" and (best is None or created > best[0]):
            best = created, Answer(f"{RESPONSE}/{rid}", said, why)
    return best[1] if best else None
