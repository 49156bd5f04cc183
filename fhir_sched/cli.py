"""``fhir-sched``: the command line. ``serve`` runs the HTTP server; ``demo`` loads sample data."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
from typing import Any

from .settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.demo:
        # the demo clinic publishes its schedules (SMART Scheduling Links) unless told otherwise
        os.environ.setdefault("FHIR_SCHED_PUBLISH", "all")
    settings = Settings.from_env(host=args.host, port=args.port, store=args.store,
                                 public_base=args.public_base, mllp_port=args.mllp_port,
                                 allowed_hosts=args.allowed_hosts,
                                 mllp_tls_cert=args.mllp_tls_cert,
                                 mllp_tls_key=args.mllp_tls_key, hl7v2_config=args.hl7v2_config,
                                 auth=args.auth, access_log=args.access_log,
                                 log_format=args.log_format, workers=args.workers,
                                 trust_issuer=",".join(args.trust_issuer) if args.trust_issuer
                                 else None,
                                 trust_audience=args.trust_audience,
                                 eligibility_url=args.eligibility_url,
                                 cds_services=",".join(args.cds_service) if args.cds_service
                                 else None,
                                 trust_introspection_client=",".join(
                                     args.trust_introspection_client)
                                 if args.trust_introspection_client else None)
    if settings.trust_introspection_client:
        from .auth.external import credentials

        try:
            credentials(settings.trust_introspection_client,
                        [i.strip() for i in settings.trust_issuer.split(",") if i.strip()],
                        {**os.environ, "FHIR_SCHED_TRUST_INTROSPECTION_SECRET":
                         settings.trust_introspection_secret})
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    from .logformat import configure, flush_on_signals

    try:
        configure(settings.log_level, settings.log_format)
    except ValueError as exc:
        raise SystemExit(f"FHIR_SCHED_LOG_FORMAT: {exc}") from None
    flush_on_signals()
    if args.demo:
        from .demo import load_demo

        created = asyncio.run(load_demo(settings))
        logging.getLogger("fhir_sched").info("demo data: %d resources created", created)
        if settings.auth == "smart":
            _print_demo_token(settings)
            _print_demo_console(settings)
        else:
            print(f"front-desk console: http://{settings.host}:{settings.port}/console/",
                  file=sys.stderr, flush=True)
    print(f"fhir-sched serving FHIR R4 at http://{settings.host}:{settings.port}"
          f"{settings.base_path} (store {settings.store}"
          f"{f', {settings.workers} workers' if settings.workers > 1 else ''})",
          file=sys.stderr, flush=True)
    if settings.mllp_port:
        print(f"fhir-sched receiving HL7 v2 over MLLP{'/TLS' if settings.mllp_tls_cert else ''}"
              f" at {settings.host}:{settings.mllp_port}", file=sys.stderr, flush=True)
    # uvicorn's own access log copies the full path and query (names, birth dates): off; the
    # app's request log (rest/observe.py) records the route template instead.
    common: dict[str, Any] = dict(
        host=settings.host, port=settings.port, log_level=settings.log_level, log_config=None,
        access_log=False, timeout_keep_alive=settings.http_keepalive_seconds,
        limit_concurrency=settings.http_max_connections,
        # websocket Subscriptions: clients only send 'bind-with-token <token>' (uvicorn would
        # buffer 16 MiB messages); pings every 20 s find dead peers (uvicorn's default)
        ws_max_size=64 * 1024)
    if settings.workers > 1:
        # Each worker is a fresh process (uvicorn spawns them): it reads these settings back
        # from the environment and is handed the app and the protocol by import path.
        from .settings import to_env

        with contextlib.ExitStack() as cleanup:
            if not settings.metrics_dir:  # a scrape reaches one worker: it speaks for all
                made = cleanup.enter_context(
                    tempfile.TemporaryDirectory(prefix="fhir-sched-metrics-"))
                settings = dataclasses.replace(settings, metrics_dir=made)
            os.environ.update(to_env(settings))
            uvicorn.run("fhir_sched.app:worker_app", factory=True, workers=settings.workers,
                        http="fhir_sched.rest.edge:EnvEdgeProtocol", **common)
        return 0
    from .app import create_app
    from .rest.edge import edge_protocol, limits_of

    uvicorn.run(create_app(settings), workers=1, http=edge_protocol(limits_of(settings)),
                **common)
    return 0


DEMO_TOKEN_FILE = "fhir-sched-demo.token"


def _print_demo_token(settings: Settings) -> None:
    """The demo's one step: a ready token, printed and kept in ./fhir-sched-demo.token."""
    import os

    from .auth.admin import DEMO_HOURS, DEMO_SCOPE, demo_token

    token = asyncio.run(demo_token(settings))
    fd = os.open(DEMO_TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    base = f"http://{settings.host}:{settings.port}{settings.base_path}"
    print(f"demo access token ({DEMO_SCOPE}, {DEMO_HOURS} hours), also in ./{DEMO_TOKEN_FILE}:"
          f"\n  {token}\ntry:\n  curl -H \"Authorization: Bearer $(cat {DEMO_TOKEN_FILE})\" "
          f"'{base}/Appointment?_count=5'", file=sys.stderr, flush=True)


DEMO_CONSOLE_FILE = "fhir-sched-demo.console"


def _print_demo_console(settings: Settings) -> None:
    """The console, signed into in one step too: its client registered for this address and a
    ``frontdesk`` user (Dr. Lee) with a fresh password, printed and kept in
    ./fhir-sched-demo.console."""
    from .auth.admin import demo_console
    from .rest.console import CONSOLE_CLIENT_ID, CONSOLE_SCOPE

    hosts = {settings.host, "127.0.0.1", "localhost"} - {"0.0.0.0", "::"}
    pages = sorted(f"http://{h}:{settings.port}/console/" for h in hosts)
    password = asyncio.run(demo_console(settings, CONSOLE_CLIENT_ID, CONSOLE_SCOPE, pages,
                                        "Practitioner/demo-dr-lee"))
    fd = os.open(DEMO_CONSOLE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"frontdesk {password}\n")
    print(f"front-desk console: http://{settings.host}:{settings.port}/console/ - sign in as "
          f"frontdesk with password {password} (also in ./{DEMO_CONSOLE_FILE})",
          file=sys.stderr, flush=True)


def _client(args: argparse.Namespace) -> int:
    from .auth import admin

    settings = Settings.from_env(store=args.store)
    try:
        if args.client_command == "add":
            secret = sys.stdin.readline().rstrip("\n") if args.secret_stdin else None
            client = admin.client_from_args(
                args.client_id, args.scope, jwks_file=args.jwks_file, jwks_url=args.jwks_url,
                redirect_uris=args.redirect_uri or [], public=args.public, secret=secret)
            asyncio.run(admin.add_client(settings, client))
            print(f"client {client.client_id} registered ({client.kind}, scope {client.scope})")
            return 0
        if args.client_command == "list":
            for c in asyncio.run(admin.list_clients(settings)):
                keys = c.jwks_url or ("inline JWKS" if c.jwks else
                                      " ".join(c.redirect_uris))
                print(f"{c.client_id}\t{c.kind}\t{c.scope}\t{keys}\t{c.created}")
            return 0
        if asyncio.run(admin.remove_client(settings, args.client_id)):
            print(f"client {args.client_id} removed")
            return 0
        print(f"no client {args.client_id!r} is registered", file=sys.stderr)
        return 1
    except admin.AdminError as exc:
        print(str(exc), file=sys.stderr)
        return 2


def _user(args: argparse.Namespace) -> int:
    from .auth import admin

    settings = Settings.from_env(store=args.store)
    try:
        if args.user_command == "add":
            if not args.password_stdin:
                print("give the password on standard input with --password-stdin",
                      file=sys.stderr)
                return 2
            password = sys.stdin.readline().rstrip("\n")
            asyncio.run(admin.add_user(settings, args.username, password, args.fhir_user))
            print(f"user {args.username} added ({args.fhir_user})")
            return 0
        if asyncio.run(admin.remove_user(settings, args.username)):
            print(f"user {args.username} removed")
            return 0
        print(f"no user {args.username!r}", file=sys.stderr)
        return 1
    except admin.AdminError as exc:
        print(str(exc), file=sys.stderr)
        return 2


def _keys(args: argparse.Namespace) -> int:
    from .auth import admin

    settings = Settings.from_env(store=args.store)
    kids = asyncio.run(admin.rotate_keys(settings))
    print(f"signing keys now: {' '.join(kids)} (new first; running servers switch within "
          "seconds; tokens signed with the previous generation stay valid until they expire)")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from .context import RequestContext
    from .service.audit import purge
    from .storage import open_store
    from .timeutil import date_range, format_instant, from_us

    if (args.before is None) == (args.older_than_days is None):
        print("give one of --before DATE and --older-than-days N", file=sys.stderr)
        return 2
    if args.before is not None:
        try:
            before = format_instant(from_us(date_range(args.before, require_offset=True)[0]))
        except ValueError:
            print(f"--before {args.before!r} is not a FHIR date or dateTime with an offset",
                  file=sys.stderr)
            return 2
    else:
        if args.older_than_days < 1:
            print("--older-than-days must be 1 or more", file=sys.stderr)
            return 2
        before = format_instant(datetime.now(UTC) - timedelta(days=args.older_than_days))
    if before > format_instant(datetime.now(UTC)):
        print(f"--before {args.before} is in the future: that would delete the entries still "
              "being written", file=sys.stderr)
        return 2
    settings = Settings.from_env(store=args.store)

    async def run() -> int:
        store = open_store(settings)
        await store.start()
        try:
            return await purge(store, before, RequestContext.system("audit-purge"))
        finally:
            await store.close()

    deleted = asyncio.run(run())
    print(f"{deleted} audit entries recorded before {before} deleted")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import load_demo

    settings = Settings.from_env(store=args.store)
    created = asyncio.run(load_demo(settings))
    print(f"demo data loaded into {settings.store}: {created} resources created")
    return 0


def _hl7v2_send(args: argparse.Namespace) -> int:
    from .hl7v2.send import send_file

    try:
        return asyncio.run(send_file(args.file, args.to, timeout=args.timeout, tls=args.tls,
                                     ca_file=args.tls_ca))
    except ValueError as exc:  # a bad --to address
        print(str(exc), file=sys.stderr)
        return 2


def _hl7v2_dead_letters(args: argparse.Namespace) -> int:
    from .compose import build
    from .hl7v2 import inbox, outbox

    settings = Settings.from_env(store=args.store, hl7v2_config=args.hl7v2_config)

    async def run() -> int:
        core = build(settings)
        await core.start()
        try:
            if args.replay:
                replayed = await inbox.replay_dead_letters(core.hl7v2, args.limit)
                for r in replayed:
                    print(f"inbound  {r.entry.received}  {r.entry.sender:<24} "
                          f"{r.entry.control_id:<20} {r.entry.event:<8} {r.entry.ack_code} -> "
                          f"{r.code or 'raw purged'}")
                left = len(await inbox.dead_letters(core.store, args.limit))
                queued = await outbox.replay_outbound(core.services, args.limit)
                for o in queued:
                    print(f"outbound {o.created}  Endpoint/{o.endpoint:<15} {o.id:<30} "
                          f"{o.event:<4} queued again (was: {o.error})")
                print(f"{len(replayed)} inbound replayed, {left} still refused; "
                      f"{len(queued)} outbound queued again (a running server delivers them)")
                return 0 if left == 0 else 1
            letters = await inbox.dead_letters(core.store, args.limit)
            for e in letters:
                print(f"inbound  {e.received}  {e.sender:<24} {e.control_id:<20} {e.event:<8} "
                      f"{e.ack_code}  {e.error}")
            dead = await outbox.outbound_dead_letters(core.services, args.limit)
            for o in dead:
                print(f"outbound {o.created}  Endpoint/{o.endpoint:<15} {o.id:<30} {o.event:<4} "
                      f"{o.attempts} attempts  {o.error}")
            print(f"{len(letters)} refused inbound message(s), {len(dead)} undelivered outbound"
                  " message(s)")
            return 0
        finally:
            await core.close()

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhir-sched", description="FHIR R4 scheduling server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8080)")
    serve.add_argument("--store", default=None,
                       help="sqlite:///path.db (default ./fhir-sched.db) or mongodb://host/db")
    serve.add_argument("--base-url", "--public-base", dest="public_base", default=None,
                       help="public FHIR base URL used in every absolute link (default: from "
                            "the request's Host, which must then be in --allowed-hosts)")
    serve.add_argument("--allowed-hosts", default=None,
                       help="Host names requests may carry when no --base-url is set "
                            "(comma-separated; default: localhost, 127.0.0.1, ::1 and --host; "
                            "* for any)")
    serve.add_argument("--demo", action="store_true",
                       help="load the demo clinic before serving (idempotent)")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=None,
                       help="one log line per request: id, method, route template, status, "
                            "duration; no query values (default: on)")
    serve.add_argument("--workers", type=int, default=None,
                       help="server processes on the one store (default 1); the MLLP port is "
                            "shared among them")
    serve.add_argument("--log-format", choices=("auto", "json", "text"), default=None,
                       help="json lines, text, or auto: text on a terminal (default)")
    serve.add_argument("--mllp-port", type=int, default=None,
                       help="also receive HL7 v2 over MLLP on this port (default: off)")
    serve.add_argument("--mllp-tls-cert", default=None,
                       help="PEM certificate (chain) for MLLP over TLS")
    serve.add_argument("--mllp-tls-key", default=None,
                       help="PEM private key for --mllp-tls-cert (if not in the same file)")
    serve.add_argument("--hl7v2-config", default=None,
                       help="TOML file of per-sender HL7 v2 settings (zones, namespaces, ...)")
    serve.add_argument("--auth", choices=("smart", "none"), default=None,
                       help="smart (default): bearer tokens required; none: anonymous, for "
                            "development only")
    serve.add_argument("--trust-issuer", action="append", default=None,
                       help="also accept JWTs from this authorization server (repeatable)")
    serve.add_argument("--trust-audience", default=None,
                       help="audiences a trusted issuer's tokens may name (comma-separated; "
                            "default: this server's FHIR base)")
    serve.add_argument("--trust-introspection-client", action="append", default=None,
                       help="introspect the trusted issuers' tokens (RFC 7662) as this client "
                            "(ID for all, or ISSUER=ID for one; repeatable); its secret goes in "
                            "FHIR_SCHED_TRUST_INTROSPECTION_SECRET_<ID> or "
                            "FHIR_SCHED_TRUST_INTROSPECTION_SECRET")
    serve.add_argument("--eligibility-url", default=None,
                       help="post each CoverageEligibilityRequest to this payer or "
                            "clearinghouse URL (default: the local Coverage rules answer)")
    serve.add_argument("--cds-service", action="append", default=None,
                       help="call this CDS Hooks service's appointment-book hook before each "
                            "$book commits (its full URL; repeatable)")
    serve.set_defaults(fn=_serve)
    demo = sub.add_parser("demo", help="load the demo clinic into a store (idempotent)")
    demo.add_argument("--store", default=None)
    demo.set_defaults(fn=_demo)
    hl7v2 = sub.add_parser("hl7v2", help="HL7 v2 tools").add_subparsers(
        dest="hl7v2_command", required=True)
    send = hl7v2.add_parser("send", help="send a file of HL7 v2 messages over MLLP, print ACKs")
    send.add_argument("file", help="messages: MLLP-framed, blank-line separated or back to back")
    send.add_argument("--to", required=True, help="host:port or mllp://host:port")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an ACK")
    send.add_argument("--tls", action="store_true", help="connect with TLS")
    send.add_argument("--tls-ca", default=None, help="CA file to verify the peer with")
    send.set_defaults(fn=_hl7v2_send)
    dead = hl7v2.add_parser("dead-letters",
                            help="list refused inbound messages (AE/AR); --replay runs them again")
    dead.add_argument("--store", default=None, help="the store, as for serve")
    dead.add_argument("--hl7v2-config", default=None, help="sender settings, as for serve")
    dead.add_argument("--replay", action="store_true",
                      help="run each again through the bridge; applied ones leave the list")
    dead.add_argument("--limit", type=int, default=100, help="at most this many (newest)")
    dead.set_defaults(fn=_hl7v2_dead_letters)
    client = sub.add_parser("client", help="SMART clients of the embedded authorization "
                            "server").add_subparsers(dest="client_command", required=True)
    add = client.add_parser("add", help="register a client")
    add.add_argument("--client-id", required=True)
    add.add_argument("--scope", required=True,
                     help='the scopes it may be granted, e.g. "system/*.rs system/Slot.cruds"')
    keys = add.add_mutually_exclusive_group()
    keys.add_argument("--jwks-file", default=None,
                      help="backend client: its public JWKS (RS384/ES384 keys)")
    keys.add_argument("--jwks-url", default=None, help="backend client: where its JWKS lives")
    add.add_argument("--redirect-uri", action="append", default=None,
                     help="an app's redirect URI (repeatable)")
    add.add_argument("--public", action="store_true", help="a public app (PKCE, no secret)")
    add.add_argument("--secret-stdin", action="store_true",
                     help="a confidential app: read its secret from standard input")
    listing = client.add_parser("list", help="list registered clients")
    remove = client.add_parser("remove", help="remove a client")
    remove.add_argument("--client-id", required=True)
    for p in (add, listing, remove):
        p.add_argument("--store", default=None, help="the store, as for serve")
        p.set_defaults(fn=_client)
    user = sub.add_parser("user", help="local users who sign in at the authorize step"
                          ).add_subparsers(dest="user_command", required=True)
    uadd = user.add_parser("add", help="add a user (password hashed with Argon2id)")
    uadd.add_argument("--username", required=True)
    uadd.add_argument("--password-stdin", action="store_true",
                      help="read the password from standard input (never a flag)")
    uadd.add_argument("--fhir-user", required=True,
                      help="who the user is: Patient/<id>, Practitioner/<id>, RelatedPerson/..")
    uremove = user.add_parser("remove", help="remove a user")
    uremove.add_argument("--username", required=True)
    for p in (uadd, uremove):
        p.add_argument("--store", default=None, help="the store, as for serve")
        p.set_defaults(fn=_user)
    signing = sub.add_parser("keys", help="the authorization server's signing keys"
                             ).add_subparsers(dest="keys_command", required=True)
    rotate = signing.add_parser("rotate", help="make new signing keys, keeping the previous ones "
                             "for verification")
    rotate.add_argument("--store", default=None, help="the store, as for serve")
    rotate.set_defaults(fn=_keys)
    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True)
    apurge = audit.add_parser("purge", help="delete audit entries recorded before a date "
                              "(the purge itself is audited); safe on a running server")
    apurge.add_argument("--before", default=None,
                        help="a FHIR date (UTC midnight) or dateTime with offset")
    apurge.add_argument("--older-than-days", type=int, default=None,
                        help="entries recorded more than N days ago")
    apurge.add_argument("--store", default=None, help="the store, as for serve")
    apurge.set_defaults(fn=_audit)
    from .data_commands import add_parsers

    add_parsers(sub)
    args = parser.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
