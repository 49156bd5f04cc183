"""The CapabilityStatement, generated from what the server really routes and declares.

Interactions come from the route table, search parameters from the declarations that drive
indexing, operations from the OperationDefinitions the operation modules load. Nothing is listed
by hand, so the statement cannot claim what the server does not do, or hide what it does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..conformance_files import load
from ..operations.subscription_ws_token import websocket_url
from ..resources import HOSTED_TYPES
from ..scheduling.topics import TOPICS
from ..search.params import params_for
from ..service.authorization import PUBLIC_TYPES
from ..service.find import LIMITS as FIND_LIMITS
from ..service.measures import LIMITS as MEASURE_LIMITS
from ..timeutil import now_instant


@dataclass(frozen=True, slots=True)
class RouteSpec:
    path: str  # relative to the FHIR base, e.g. "/{type}/{id}"
    methods: tuple[str, ...]
    interaction: str  # FHIR interaction code, "operation", or "capabilities"
    level: str  # "instance", "type" or "system"
    types: tuple[str, ...] = ()  # for fixed-type routes (operations); empty = every hosted type
    operation: str | None = None  # operation name without "$"
    definition: str | None = None  # canonical URL of the OperationDefinition


# Profiles the server's resources conform to, beyond the base: proposals and booked
# Appointments follow IHE ITI Scheduling's Appointment profile (participant actor types,
# start, end, one requestedPeriod; see scheduling/participants.py).
SUPPORTED_PROFILES = {
    "Appointment": ["https://profiles.ihe.net/ITI/Scheduling/StructureDefinition/ihe-sched-appt"],
    "Subscription": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                     "backport-subscription"],
}
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/"
TOPIC_CANONICAL = BACKPORT + ("StructureDefinition/"
                              "capabilitystatement-subscriptiontopic-canonical")
# Where websocket Subscriptions connect: R4's core extension on rest, which the IG's websocket
# workflow has a client look up.
WEBSOCKET_URL = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket"
# The Subscriptions Backport's server CapabilityStatement for R4, which this one follows.
BACKPORT_SERVER = BACKPORT + "CapabilityStatement/backport-subscription-server-r4"


LIMITS_URL = "https://fhir-sched.org/fhir/StructureDefinition/request-limits"


def public_text(per_minute: int) -> str:
    """The public view in words, for ``rest.documentation`` and ``rest.security``."""
    return ("Public view: a request without an Authorization header may read and search "
            f"{', '.join(sorted(PUBLIC_TYPES))} (never a Schedule of a patient) and ask "
            "Appointment/$find (GET or POST) for free time without patient-reference, "
            "insurance-reference or referral-identifier (403 naming the parameter); an include, "
            "chain or _has reaching another type is refused or left out. At most "
            f"{per_minute} such requests a minute per client address (public-requests-per-"
            "minute), then 429 with Retry-After. A request with a token, even an invalid one, "
            "is judged by its token.")


def _operations(ops: dict[str, str]) -> list[dict[str, Any]]:
    """A type's operations, each with the limits it applies in its documentation."""
    limits = {"find": FIND_LIMITS, "evaluate-measure": MEASURE_LIMITS}
    return [{"name": n, "definition": d, **(
        {"documentation": limits[n]} if n in limits else {})} for n, d in sorted(ops.items())]


def capability_statement(routes: list[RouteSpec], base_url: str,
                         read_only: dict[str, dict[str, Any]] | None = None,
                         oauth_uris: dict[str, str] | None = None,
                         limits: dict[str, int] | None = None,
                         public_view: int | None = None) -> dict[str, Any]:
    """``read_only``: entries for routed types that are not hosted (the conformance
    definitions), by type; their interactions still come from the routes. ``oauth_uris``: the
    SMART endpoints when auth is on, published in ``rest.security`` (the oauth-uris extension is
    deprecated in SMART 2 but is all that Python fhirclient reads). ``public_view``: the
    requests per minute the public view allows an address without a token, when it is on
    (auth on); told in ``rest.documentation`` and ``rest.security``, so a widget's author
    learns from /metadata what works before sign-in."""
    cs = dict(load("CapabilityStatement-base.json"))
    cs["date"] = now_instant()
    cs["software"] = {**cs.get("software", {}), "version": __version__}
    cs["implementation"] = {**cs.get("implementation", {}), "url": base_url}
    cs["instantiates"] = [*cs.get("instantiates", []), BACKPORT_SERVER]
    type_interactions: dict[str, set[str]] = defaultdict(set)
    type_ops: dict[str, dict[str, str]] = defaultdict(dict)
    system_interactions: set[str] = set()
    system_ops: dict[str, str] = {}
    for r in routes:
        targets = r.types or HOSTED_TYPES
        if r.interaction == "operation":
            assert r.operation and r.definition
            if r.level == "system":
                system_ops[r.operation] = r.definition
            for t in targets if r.level != "system" else ():
                type_ops[t][r.operation] = r.definition
        elif r.level == "system":
            if r.interaction != "capabilities":
                system_interactions.add(r.interaction)
            if r.interaction == "transaction":
                # POST to the base serves both Bundle types, chosen by Bundle.type
                system_interactions.add("batch")
        else:
            for t in targets:
                type_interactions[t].add(r.interaction)
    resources = []
    for t in HOSTED_TYPES:
        entry: dict[str, Any] = {
            "type": t,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{t}",
            "interaction": [{"code": c} for c in sorted(type_interactions[t])],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "enforced", "local"],
            "searchInclude": ["*", *sorted(f"{t}:{c}" for c, sp in params_for(t).items()
                                           if sp.type == "reference")],
            "searchParam": [
                {"name": c, "definition": sp.url, "type": sp.type,
                 **({"documentation": sp.description} if sp.description else {})}
                for c, sp in sorted(params_for(t).items()) if sp.url
            ],
        }
        if t in SUPPORTED_PROFILES:
            entry["supportedProfile"] = SUPPORTED_PROFILES[t]
        if t == "Subscription":  # the topics one can subscribe to (Subscriptions Backport)
            entry["extension"] = [{"url": TOPIC_CANONICAL, "valueCanonical": topic.url}
                                  for topic in TOPICS]
        if type_ops[t]:
            entry["operation"] = _operations(type_ops[t])
        resources.append(entry)
    for t, fixed in sorted((read_only or {}).items()):
        resources.append({**fixed, "interaction": [{"code": c}
                                                   for c in sorted(type_interactions[t])],
                          **({"operation": _operations(type_ops[t])} if type_ops[t] else {})})
    documentation = "FHIR R4 JSON and XML. Dates with a time need an offset."
    if limits:
        documentation += (" Limits per request, refused with a 4xx before any work: " +
                          ", ".join(f"{k} {v}" for k, v in limits.items()) + ".")
    public = public_text(public_view) if public_view is not None and oauth_uris else ""
    if public:
        documentation += " " + public
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": documentation,
        "resource": resources,
        "interaction": [{"code": c} for c in sorted(system_interactions)],
    }
    if limits:
        rest["extension"] = [{"url": LIMITS_URL, "extension": [
            {"url": k, "valueInteger": v} for k, v in limits.items()]}]
    if "get-ws-binding-token" in type_ops["Subscription"]:
        rest.setdefault("extension", []).append(
            {"url": WEBSOCKET_URL, "valueUri": websocket_url(base_url)})
    if system_ops:
        rest["operation"] = [{"name": n, "definition": d} for n, d in sorted(system_ops.items())]
    if oauth_uris:
        rest["security"] = {
            "cors": True,
            "service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR"}], "text": "SMART on FHIR (App Launch 2.2)"}],
            "description": "Every request except the CapabilityStatement and the SMART "
                           "configuration needs a bearer token from the token endpoint" + (
                               f", except those of the public view. {public}" if public
                               else "."),
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": k, "valueUri": v} for k, v in oauth_uris.items()]}],
        }
    cs["rest"] = [rest]
    return cs
