"""Eligibility: is this Coverage in force? Asked of a checker, answered and kept as FHIR.

The checker is a port with two adapters. ``LocalChecker`` (the default) answers from the
Coverage as stored: active, the patient's, its period holding the date of service. It is what
``$submit`` answers when no payer is configured; on the booking path the same checks are the
coverage rules, made inside the booking's own unit, so nothing is asked or stored there.
``HttpChecker`` posts the CoverageEligibilityRequest to a payer or clearinghouse gateway
(``FHIR_SCHED_ELIGIBILITY_URL``) the way FHIR lets a client call ``$submit``: the resource is
the body, the CoverageEligibilityResponse (bare, or in Parameters or a Bundle) the answer.

Every question and answer is stored, the answer with its ``request``, ``patient``, ``insurer``
and ``insurance.coverage`` pointing at this server's resources (other references stay as the
payer wrote them). A checker that fails, answers garbage or is slower than the time budget gets
an answer recorded for it, ``outcome`` error, saying why: the booking then follows the
deployment's policy (``FHIR_SCHED_ELIGIBILITY_ON_FAILURE``), and the front desk sees the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from ..context import RequestContext
from ..errors import FhirError
from ..metrics import ELIGIBILITY_CHECKS
from ..outbound import TooLarge, fetch
from ..scheduling.booking_rules import coverage_problem
from ..scheduling.eligibility import RESPONSE, Answer, Need, verdict
from ..storage.base import Unit
from ..timeutil import now_instant, parse_instant
from .authorization import Interaction
from .resources import ResourceService, new_id

log = logging.getLogger("fhir_sched.eligibility")

Json = dict[str, Any]
REQUEST = "CoverageEligibilityRequest"
MAX_ANSWER_BYTES = 1024 * 1024


class CheckerError(Exception):
    """The checker gave no usable answer; the message says why, for the front desk."""


class Checker(Protocol):
    name: str

    async def check(self, request: Json, coverages: Mapping[str, Json]) -> Json:
        """The CoverageEligibilityResponse to ``request`` (``coverages``: the Coverages it
        names, as stored, by reference). Raises ``CheckerError``."""
        ...


class LocalChecker:
    """The Coverage as stored is the answer: active, the patient's, its period holding the
    date of service (the request's ``servicedDate``, or the start of ``servicedPeriod``, else
    today)."""

    name = "local"

    async def check(self, request: Json, coverages: Mapping[str, Json]) -> Json:
        patient = (request.get("patient") or {}).get("reference")
        served = _served(request)
        items, reasons = [], []
        for ref, body in coverages.items():
            problem = coverage_problem(body, patient, (), served)
            item: Json = {"coverage": {"reference": ref}, "inforce": problem is None}
            if isinstance(body.get("period"), dict):
                item["benefitPeriod"] = body["period"]
            items.append(item)
            if problem is not None:
                reasons.append(f"{ref} {problem[1]}")
        return {"resourceType": RESPONSE, "status": "active",
                "purpose": list(request.get("purpose") or ["validation"]),
                "patient": request.get("patient"), "created": now_instant(),
                "request": {"reference": f"{REQUEST}/{request.get('id')}"},
                "outcome": "complete",
                "disposition": "; ".join(reasons) if reasons else "the coverage is in force",
                "insurer": request.get("insurer"), "insurance": items}


class HttpChecker:
    """A payer or clearinghouse gateway: the request POSTed as the body (FHIR's direct form
    of ``$submit``), with a bearer token when configured."""

    name = "http"

    def __init__(self, url: str, token: str = "", timeout: float = 3.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    async def check(self, request: Json, coverages: Mapping[str, Json]) -> Json:
        headers = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        try:
            got = await fetch("POST", self.url, timeout=self.timeout,
                              max_bytes=MAX_ANSWER_BYTES, content=orjson.dumps(request),
                              headers=headers)
        except TooLarge:
            raise CheckerError(f"the eligibility checker answered more than "
                               f"{MAX_ANSWER_BYTES} bytes") from None
        except httpx.TimeoutException:
            raise CheckerError("the eligibility checker did not answer in time") from None
        except httpx.HTTPError as exc:
            raise CheckerError(f"the eligibility checker could not be reached "
                               f"({type(exc).__name__})") from None
        if got.status >= 300:
            raise CheckerError(f"the eligibility checker answered HTTP {got.status}"
                               + _diagnostics(got.body))
        try:
            body = orjson.loads(got.body)
        except orjson.JSONDecodeError:
            raise CheckerError("the eligibility checker's answer is not JSON") from None
        found = _response_in(body)
        if found is None:
            raise CheckerError("the eligibility checker's answer holds no "
                               "CoverageEligibilityResponse")
        return found


def _diagnostics(body: bytes) -> str:
    """An OperationOutcome's first words, when the checker gave one with its error."""
    try:
        oo = orjson.loads(body)
        text = oo["issue"][0].get("diagnostics") or oo["issue"][0]["details"]["text"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return ""
    return f": {str(text)[:200]}" if text else ""


def _response_in(body: Any) -> Json | None:
    """The CoverageEligibilityResponse an answer carries: bare, the ``return`` of a
    Parameters, or the first entry of a Bundle."""
    if not isinstance(body, dict):
        return None
    if body.get("resourceType") == RESPONSE:
        return body
    if body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            if isinstance(p, dict) and isinstance(p.get("resource"), dict) and (
                    p["resource"].get("resourceType") == RESPONSE):
                found: Json = p["resource"]
                return found
    if body.get("resourceType") == "Bundle":
        for e in body.get("entry") or []:
            res = e.get("resource") if isinstance(e, dict) else None
            if isinstance(res, dict) and res.get("resourceType") == RESPONSE:
                return res
    return None


def _served(request: Mapping[str, Any]) -> Any:
    raw = request.get("servicedDate") or (request.get("servicedPeriod") or {}).get("start")
    try:
        return parse_instant(raw if "T" in str(raw) else f"{raw}T12:00:00Z") if raw else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Checked:
    request: Json
    response: Json
    response_id: str


class EligibilityService:
    def __init__(self, resources: ResourceService, checker: Checker, budget: float) -> None:
        self.resources = resources
        self.checker = checker
        self.budget = budget
        # One question per Coverage at a time: concurrent bookings for one patient share it.
        self._asking: dict[str, asyncio.Future[Answer]] = {}

    async def submit(self, ctx: RequestContext, body: Any) -> Json:
        """``$submit``: check, ask, store both; the stored answer (an error answer when the
        checker failed) is the result."""
        authorizer = self.resources.authorizer
        authorizer.check(ctx, Interaction.OPERATION, REQUEST, operation="submit")
        request = self.resources.prepare(REQUEST, body, None)
        request = {k: v for k, v in request.items() if k not in ("id", "meta")}
        # Before anything is asked: the caller may make this request (its patient is in
        # reach) and read the Coverages it names.
        authorizer.check(ctx, Interaction.CREATE, REQUEST, resource=request)
        coverages = await self._coverages(request)
        for ref, coverage in coverages.items():
            authorizer.check(ctx, Interaction.READ, "Coverage", ref.split("/", 1)[1],
                             resource=coverage)
        request["id"] = new_id()
        response = await self._ask(request, coverages)
        checked = await self._store(ctx, request, response, authorize=True)
        return checked.response

    async def for_booking(self, ctx: RequestContext, need: Need) -> Answer:
        """The payer's answer a booking waits for (asked once per Coverage at a time)."""
        pending = self._asking.get(need.coverage)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._asking[need.coverage] = future
        try:
            answer = await self._for_booking(ctx, need)
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._asking[need.coverage]

    async def _for_booking(self, ctx: RequestContext, need: Need) -> Answer:
        payors = [p.get("reference") for p in need.body.get("payor") or []
                  if isinstance(p, dict) and str(p.get("reference", "")).startswith(
                      "Organization/")]
        system, code = need.visit
        request: Json = {
            "resourceType": REQUEST, "id": new_id(), "status": "active",
            "purpose": ["validation"], "patient": {"reference": need.patient},
            "servicedDate": need.start[:10], "created": now_instant(),
            "insurer": {"reference": payors[0]} if payors else {"display": "unknown payer"},
            "insurance": [{"focal": True, "coverage": {"reference": need.coverage}}],
            "item": [{"productOrService": {
                "coding": [{**({"system": system} if system else {}), "code": code}],
                "text": need.visit_display}}]}
        response = await self._ask(request, {need.coverage: dict(need.body)})
        checked = await self._store(ctx, request, response, authorize=False)
        said, why = verdict(checked.response, need.coverage)
        return Answer(f"{RESPONSE}/{checked.response_id}", said, why)

    async def _coverages(self, request: Json) -> dict[str, Json]:
        out: dict[str, Json] = {}
        for n, item in enumerate(request.get("insurance") or []):
            ref = (item.get("coverage") or {}).get("reference")
            if not isinstance(ref, str) or not ref.startswith("Coverage/"):
                raise FhirError(422, "invalid", "each insurance needs a coverage reference to a "
                                "Coverage on this server",
                                expression=[f"CoverageEligibilityRequest.insurance[{n}].coverage"])
            rec = await self.resources.store.get("Coverage", ref.split("/", 1)[1])
            if rec is None or rec.deleted or rec.body is None:
                raise FhirError(422, "not-found", f"{ref} does not resolve on this server",
                                expression=[f"CoverageEligibilityRequest.insurance[{n}].coverage"])
            out[ref] = orjson.loads(rec.body)
        if not out:
            raise FhirError(422, "required", "the request names no Coverage (insurance)",
                            expression=["CoverageEligibilityRequest.insurance"])
        return out

    async def _ask(self, request: Json, coverages: Mapping[str, Json]) -> Json:
        """The checker's answer, as this server keeps it; an error answer of our own making
        when none usable came within the budget."""
        try:
            async with asyncio.timeout(self.budget):
                answer = await self.checker.check(request, coverages)
            response = self._adopt(request, coverages, answer)
        except TimeoutError:
            response = _failed(request, f"the eligibility checker did not answer within "
                               f"{round(self.budget * 1000)} ms")
        except CheckerError as exc:
            response = _failed(request, str(exc))
        # Counted by what it says of the first Coverage asked about (a booking asks one).
        said = verdict(response, next(iter(coverages)))[0]
        ELIGIBILITY_CHECKS.labels(self.checker.name, said).inc()
        if response["outcome"] == "error":
            log.warning("eligibility checker (%s) gave no usable answer", self.checker.name)
        return response

    def _adopt(self, request: Json, coverages: Mapping[str, Json], answer: Json) -> Json:
        """The payer's answer, pointed at this server's resources and checked as any
        CoverageEligibilityResponse written here would be."""
        body = {k: v for k, v in answer.items() if k not in ("id", "meta", "contained")}
        body.update({"request": {"reference": f"{REQUEST}/{request['id']}"},
                     "patient": request["patient"], "insurer": request["insurer"]})
        body.setdefault("status", "active")
        body.setdefault("purpose", request["purpose"])
        body["created"] = now_instant()
        refs = list(coverages)
        items = body.get("insurance")
        if len(refs) == 1 and isinstance(items, list):
            # One Coverage asked about: the payer may echo it as its own id or a full URL.
            for item in items:
                if isinstance(item, dict):
                    item["coverage"] = {"reference": refs[0]}
        try:
            return self.resources.prepare(RESPONSE, body, None)
        except FhirError as exc:
            raise CheckerError("the eligibility checker's answer is not a valid "
                               f"CoverageEligibilityResponse: {exc.diagnostics[:300]}") from None

    async def _store(self, ctx: RequestContext, request: Json, response: Json, *,
                     authorize: bool) -> Checked:
        response_id = new_id()

        async def run(unit: Unit) -> Checked:
            await self.resources.put_in_unit(unit, ctx, REQUEST, request["id"], request,
                                              authorize=authorize)
            saved = await self.resources.put_in_unit(unit, ctx, RESPONSE, response_id,
                                                     response, authorize=False,
                                                     check_refs=False)
            assert saved.record.body is not None
            return Checked(request, orjson.loads(saved.record.body), response_id)

        return await self.resources.atomic(run)


def _failed(request: Json, reason: str) -> Json:
    return {"resourceType": RESPONSE, "status": "active", "purpose": request["purpose"],
            "patient": request["patient"], "created": now_instant(),
            "request": {"reference": f"{REQUEST}/{request['id']}"}, "outcome": "error",
            "disposition": reason, "insurer": request["insurer"],
            "error": [{"code": {"text": reason}}]}
