"""CDS Hooks ``appointment-book``: before ``$book`` commits, each configured CDS service (a
Da Vinci CRD payer, a clinic's own rules engine) is told what is about to be booked, and its
cards come back to the caller.

The call follows CDS Hooks 2.0: a POST of ``hook``, ``hookInstance``, ``fhirServer``, the
``context`` (``userId``, ``patientId``, ``appointments`` as a Bundle of the proposed
Appointments) and a ``prefetch`` of the Patient and the patient's active Coverages, so a
service need not call back. All services are asked at once, each within the time budget
(``FHIR_SCHED_CDS_TIMEOUT_MS``), before the booking's unit opens: a unit must not wait on
another server. A card with indicator ``critical`` stops the booking unless the caller uses
the front-desk override with a reason; ``info`` and ``warning`` cards are returned as issues of
the OperationOutcome in ``$book``'s Bundle. A service that fails or is late does not stop a
booking: the caller is told, in a warning issue, which service gave no answer.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from ..context import RequestContext
from ..outbound import TooLarge, fetch
from ..scheduling.booking_rules import on_file
from ..storage.base import DocumentStore

log = logging.getLogger("fhir_sched.cds")
Json = dict[str, Any]
MAX_ANSWER_BYTES = 256 * 1024
MAX_CARDS = 20  # per service: a card is a line for the front desk, not a report
_SEVERITY = {"info": "information", "warning": "warning", "critical": "error"}


@dataclass(frozen=True, slots=True)
class Card:
    indicator: str  # info | warning | critical
    summary: str
    detail: str
    source: str

    def issue(self) -> Json:
        text = self.summary + (f": {self.detail}" if self.detail else "")
        return {"severity": _SEVERITY[self.indicator], "code": (
            "business-rule" if self.indicator == "critical" else "informational"),
            "diagnostics": f"{self.source}: {text}", "expression": ["Appointment"]}


class CdsHooks:
    def __init__(self, store: DocumentStore, services: tuple[str, ...], budget: float) -> None:
        self.store = store
        self.services = services
        self.budget = budget

    async def appointment_book(self, ctx: RequestContext, appointment: Mapping[str, Any]
                               ) -> list[Card]:
        """Every service's cards about booking ``appointment``, in service order."""
        patients = [str((p.get("actor") or {}).get("reference")) for p in
                    appointment.get("participant") or [] if isinstance(p, dict)
                    and str((p.get("actor") or {}).get("reference", "")).startswith("Patient/")]
        patient = patients[0] if patients else None
        body = orjson.dumps({
            "hook": "appointment-book", "hookInstance": str(uuid.uuid4()),
            "fhirServer": ctx.base_url,
            "context": {"userId": ctx.subject,
                        **({"patientId": patient.split("/", 1)[1]} if patient else {}),
                        "appointments": {"resourceType": "Bundle", "type": "collection",
                                         "entry": [{"resource": appointment}]}},
            "prefetch": await self._prefetch(patient)})
        answers = await asyncio.gather(*(self._ask(n, url, body)
                                         for n, url in enumerate(self.services, 1)))
        return [card for cards in answers for card in cards]

    async def _prefetch(self, patient: str | None) -> Json:
        if patient is None:
            return {}
        rec = await self.store.get("Patient", patient.split("/", 1)[1])
        page = await self.store.search(on_file("Coverage", "beneficiary", patient))
        return {"patient": orjson.loads(rec.body) if rec and rec.body else None,
                "coverage": {"resourceType": "Bundle", "type": "searchset",
                             "entry": [{"resource": orjson.loads(b)} for _, b in page.rows]}}

    async def _ask(self, n: int, url: str, body: bytes) -> list[Card]:
        name = f"CDS service {n}"
        try:
            async with asyncio.timeout(self.budget):
                got = await fetch("POST", url, timeout=self.budget, max_bytes=MAX_ANSWER_BYTES,
                                  content=body, headers={"content-type": "application/json",
                                                         "accept": "application/json"})
            if got.status >= 300:
                return [_silent(name, f"answered HTTP {got.status}")]
            answer = orjson.loads(got.body)
        except (TimeoutError, httpx.TimeoutException):
            return [_silent(name, f"did not answer within {round(self.budget * 1000)} ms")]
        except (httpx.HTTPError, TooLarge, orjson.JSONDecodeError) as exc:
            return [_silent(name, f"gave no usable answer ({type(exc).__name__})")]
        cards = answer.get("cards") if isinstance(answer, dict) else None
        if not isinstance(cards, list):
            return [_silent(name, "answered without a cards array")]
        out = []
        for card in cards[:MAX_CARDS]:
            if not isinstance(card, dict) or not isinstance(card.get("summary"), str):
                continue
            indicator = card.get("indicator")
            label = (card.get("source") or {}).get("label") if isinstance(
                card.get("source"), dict) else None
            out.append(Card(indicator if indicator in _SEVERITY else "info",
                            card["summary"][:140], str(card.get("detail") or "")[:1000],
                            str(label or name)[:100]))
        return out


def _silent(name: str, why: str) -> Card:
    log.warning("%s %s", name, why)
    return Card("warning", f"{name} {why}; the booking went ahead without its advice", "",
                "fhir-sched")
