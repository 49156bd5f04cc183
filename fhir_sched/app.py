"""Builds the ASGI app from the composed core: routes, middleware, lifespan."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .compose import Core, build, stop_jobs
from .hl7v2.door import handle_body
from .resources.narrative import MAX_DIV_CHARS
from .resources.registry import HOSTED_TYPES
from .resources.validate import MAX_DEPTH
from .rest.audit import audit_routes
from .rest.audit import capability_entry as audit_capability_entry
from .rest.bulk_export import export_routes, job_routes
from .rest.capability import RouteSpec, capability_statement
from .rest.conformance import CONFORMANCE_TYPES, capability_entry, conformance_routes
from .rest.console import console_routes
from .rest.errors import HANDLERS
from .rest.feeds import feed_routes
from .rest.health import health_routes
from .rest.hosts import HostCheck, allow_list
from .rest.http import FhirResponse, check_accept, context_for
from .rest.messages import hl7v2_endpoint
from .rest.metrics_route import metrics_route
from .rest.middleware import FrontDoor
from .rest.observe import Recorder
from .rest.openapi import docs_page, openapi
from .rest.operations import operation_routes
from .rest.public_view import PublicView
from .rest.publish import publish_file_routes, publish_routes
from .rest.respond import respond_routes
from .rest.router import FhirRouter
from .rest.routes import FhirRoutes
from .rest.smart import BearerGate, configuration_endpoint, endpoints, hl7v2_gate
from .rest.subscription_socket import socket_route
from .search.compartment import PATIENT_COMPARTMENT
from .service.authorization import Authorizer
from .service.search import MAX_INCLUDED
from .settings import Settings

Handler = Callable[[Request], Awaitable[Response]]


def statement_of(core: Core, specs: list[RouteSpec], base_url: str) -> dict[str, Any]:
    """The CapabilityStatement for ``specs`` at ``base_url``: /metadata, and the source of
    /openapi.json."""
    settings = core.services.settings
    limits = {"max-body-bytes": settings.max_body_bytes, "max-nesting-depth": MAX_DEPTH,
              "max-narrative-chars": MAX_DIV_CHARS, "max-page-size": settings.max_count,
              "max-search-parameters": settings.search_max_params,
              "max-values-per-parameter": settings.search_max_or_values,
              "max-includes": settings.search_max_includes,
              "max-sort-keys": settings.search_max_sort_keys,
              "max-included-resources": MAX_INCLUDED,
              "max-search-milliseconds": settings.search_max_ms,
              "max-bundle-entries": settings.max_bundle_entries,
              "max-appointment-hours": settings.max_appointment_hours,
              "max-recorded-appointment-hours": settings.max_recorded_appointment_hours,
              "max-series-occurrences": settings.max_series_occurrences}
    public = settings.public_view_per_minute if core.auth and settings.public_view else None
    if public is not None:
        limits["public-requests-per-minute"] = public
    return capability_statement(
        specs, base_url, {**{t: capability_entry(t) for t in CONFORMANCE_TYPES},
                          "AuditEvent": audit_capability_entry()},
        core.auth.oauth_uris() if core.auth else None, limits, public)


def build_routes(core: Core) -> list[tuple[RouteSpec, Handler]]:
    """Operation routes first (so ``/Appointment/$find`` is not read as an id), then the rest."""
    services = core.services
    settings = services.settings
    r = FhirRoutes(services)
    table: list[tuple[RouteSpec, Handler]] = list(operation_routes(services))
    table += export_routes(services)
    table += publish_routes(services)
    async def metadata(request: Request) -> Response:
        check_accept(request)
        ctx = context_for(request, settings.public_base, settings.base_path)
        return FhirResponse(statement_of(core, [spec for spec, _ in table], ctx.base_url))

    # (path, method, FHIR interaction, level, handler, fixed types), most specific first
    rows: list[tuple[str, str, str, str, Handler, tuple[str, ...]]] = [
        ("/metadata", "GET", "capabilities", "system", metadata, ()),
        ("/_history", "GET", "history-system", "system", r.system_history, ()),
        ("/", "POST", "transaction", "system", r.batch_or_transaction, ()),
        ("/{type}/_history", "GET", "history-type", "type", r.type_history, ()),
        ("/{type}/_search", "POST", "search-type", "type", r.search_post, ()),
        ("/{type}/{id}/_history/{vid}", "GET", "vread", "instance", r.vread, ()),
        ("/{type}/{id}/_history", "GET", "history-instance", "instance", r.instance_history, ()),
        *((f"/Patient/{{id}}/{ctype}", "GET", "search-type", "type", r.compartment_search,
           (ctype,)) for ctype in sorted(PATIENT_COMPARTMENT)),
        ("/{type}/{id}", "GET", "read", "instance", r.read, ()),
        ("/{type}/{id}", "PUT", "update", "instance", r.update, ()),
        ("/{type}/{id}", "PATCH", "patch", "instance", r.patch, ()),
        ("/{type}/{id}", "DELETE", "delete", "instance", r.delete, ()),
        ("/{type}", "GET", "search-type", "type", r.search_get, ()),
        ("/{type}", "POST", "create", "type", r.create, ()),
        ("/{type}", "PUT", "update", "type", r.conditional_update, ()),
        ("/{type}", "DELETE", "delete", "type", r.conditional_delete, ()),
    ]
    # the conformance definitions and the audit trail: literal type segments, so they win
    # over /{type} routes
    table += list(conformance_routes(settings.public_base, settings.base_path))
    table += list(audit_routes(core.store, settings.public_base, settings.base_path))
    table += [(RouteSpec(path, (method,), interaction, level, types), handler)
              for path, method, interaction, level, handler, types in rows]
    return table


def create_app(settings: Settings | None = None, authorizer: Authorizer | None = None) -> FastAPI:
    """The ASGI app; ``authorizer`` replaces the default policy (the SMART issue plugs its scope
    policy in here; tests plug in a denying one)."""
    settings = settings or Settings.from_env()
    core = build(settings, authorizer)

    serving = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if core.auth is None:
            logging.getLogger("fhir_sched").warning(
                "AUTH IS OFF (FHIR_SCHED_AUTH=none): anyone who can reach this port can read "
                "and change every record. For development only.")
        await core.start()
        # Everything loaded so far (models, definitions, routes) lives as long as the process;
        # moving it out of the collector's reach keeps full collections short (they showed as
        # ~40 ms stalls at the 99th percentile of reads).
        gc.freeze()
        # The loop gives up the interpreter on every socket call and must win it back from
        # any thread computing meanwhile; at Python's 5 ms switch interval that wait, paid per
        # call, was most of the loop lag under a hostile load (bench/stall_bench.py).
        if settings.thread_switch_us > 0:
            sys.setswitchinterval(settings.thread_switch_us / 1_000_000)
        tasks = core.start_jobs()
        serving["ready"] = True
        try:
            yield
        finally:
            serving["ready"] = False
            # Each job finishes its cancellation (a write in hand) before the store closes.
            await stop_jobs(tasks)
            await core.close()

    # FastAPI's own OpenTelemetry hooks look up the global providers on every request (a few
    # microseconds each, ~2% of a read) even when none is configured: off unless asked for.
    otel = settings.opentelemetry == "on"
    app = FastAPI(title="fhir-sched", description="HL7 FHIR R4 scheduling server",
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  telemetry={"tracing": otel, "metrics": otel, "logs": otel})
    handlers: dict[Any, Any] = dict(HANDLERS)
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)
    router = FhirRouter(settings.base_path, frozenset(HOSTED_TYPES) | {"AuditEvent"})
    routes = build_routes(core)
    for spec, route_handler in routes:
        router.add(spec.path, spec.methods, route_handler,
                   interaction=f"${spec.operation}" if spec.operation else spec.interaction,
                   type_label=spec.types[0] if len(spec.types) == 1 else "")
    for job_path, job_methods, job_handler in job_routes(core.services):
        router.add(job_path, job_methods, job_handler, listed=False,
                   interaction="$export-job")
    for file_path, file_methods, file_handler in publish_file_routes(core.services):
        router.add(file_path, file_methods, file_handler, listed=False,
                   interaction="$bulk-publish-file")
    fhir: Any = router
    if core.auth is not None:
        # In the trie with the FHIR routes (the gate lets it through without a token), so
        # the FHIR base stays the app's first route: Starlette tries routes in order, one
        # regular expression each, and a read should not pay for the OAuth endpoints'.
        router.add("/.well-known/smart-configuration", ("GET",),
                   configuration_endpoint(core.auth), listed=False,
                   interaction="smart-configuration")
        fhir = BearerGate(router, core.auth, settings.base_path, settings.public_base,
                          PublicView(settings.public_view_per_minute)
                          if settings.public_view else None)
    # One Starlette route hands the whole FHIR base to the trie dispatcher; it runs inside the
    # app's exception middleware, so FhirError and friends still render as OperationOutcomes.
    app.router.routes.append(Route(settings.base_path + "{rest:path}", fhir))
    if core.auth is not None:
        for path, (methods, endpoint) in endpoints(core.auth, core.services.audit).items():
            app.router.routes.append(Route(path, endpoint, methods=methods.split()))

    async def hl7v2_body(body: bytes, peer: str) -> bytes | None:
        return await handle_body(core.hl7v2, body, peer, settings.mllp_max_frame_bytes)

    hl7v2: Any = hl7v2_endpoint(hl7v2_body, settings.max_body_bytes)
    if core.auth is not None:
        hl7v2 = hl7v2_gate(hl7v2, core.auth)
    app.router.routes.append(Route("/hl7v2", hl7v2, methods=["POST"]))
    if core.engagement is not None:
        app.router.routes.extend(respond_routes(core.engagement))
        # websocket Subscriptions: outside the bearer gate, the binding token is the key
        app.router.routes.append(socket_route(core.engagement.hub, core.store,
                                              settings.base_path))
    app.router.routes.extend(feed_routes(core.services))
    app.router.routes.extend(console_routes(settings, core.auth is not None))
    app.router.routes.extend(health_routes(core.store.ping, core.doors, lambda: serving["ready"]))

    def api_doc(request: Request) -> dict[str, Any]:
        base = context_for(request, settings.public_base, settings.base_path).base_url
        return openapi(statement_of(core, [spec for spec, _ in routes], base), base,
                       bearer=core.auth is not None)

    async def openapi_json(request: Request) -> Response:
        return Response(orjson.dumps(api_doc(request)), media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(docs_page(api_doc(request)))

    # public, like /metadata: what the API is, never what it holds
    app.router.routes.append(Route("/openapi.json", openapi_json, methods=["GET"]))
    app.router.routes.append(Route("/docs", docs, methods=["GET"]))
    app.router.routes.append(metrics_route(
        None if core.auth is None else settings.metrics_token,
        core.services.sweeper.pending_count,
        Path(settings.metrics_dir) if settings.metrics_dir else None))
    # On every response: no MIME sniffing, no framing, no referrer carrying URLs (search
    # parameters, codes) to other sites; and a loud marker when auth is off.
    headers = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
               (b"referrer-policy", b"no-referrer")]
    if core.auth is None:
        headers.append((b"x-fhir-sched-auth", b"none"))
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        # Bearer tokens, never cookies: no credentials mode, so "*" is safe where asked for.
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_credentials=False,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["authorization", "content-type", "accept", "prefer", "if-match",
                           "if-none-match", "if-none-exist", "if-modified-since",
                           "x-request-id"],
            expose_headers=["location", "etag", "content-location", "last-modified",
                            "x-request-id", "www-authenticate", "retry-after"], max_age=600)
    known = frozenset(r.path for r in app.router.routes if isinstance(r, Route)
                      and "{" not in r.path)
    # Host checks only without --base-url: with it, every link is built from that URL.
    hosts = None if settings.public_base else HostCheck(
        allow_list(settings.allowed_hosts, settings.host))
    app.add_middleware(FrontDoor, extra_headers=tuple(headers),
                       recorder=Recorder(known, settings.access_log), hosts=hosts,
                       request_seconds=float(settings.http_request_seconds))
    app.state.core = core
    app.state.fhir_router = router
    return app


def worker_app() -> FastAPI:
    """The app of one ``--workers`` process: logging set up as ``serve`` does it (each worker
    is a fresh interpreter), settings from the environment ``serve`` filled in."""
    from .logformat import configure

    # No flush_on_signals here: uvicorn's own handlers are in place by now, and replacing
    # them would end the worker without its graceful shutdown.
    settings = Settings.from_env()
    configure(settings.log_level, settings.log_format)
    return create_app(settings)
